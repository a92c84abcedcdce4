"""Latent codes: priors, posteriors, the specification's layout, and bad input."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genlatent.errors import LatentSpecError
from genlatent.hookspecs import hookimpl
from genlatent.latent import (
    BUILTIN_CODE_KINDS,
    CategoricalCode,
    ContinuousCode,
    LatentCode,
    LatentSpec,
    NoiseCode,
    code_from_config,
    code_kinds,
    set_code_kinds,
)
from genlatent.plugins import PluginHost, load_plugins
from genlatent.run import RunResult, run_experiment
from genlatent.tracking import read_metrics
from genlatent.traversal import traversal_inputs

from .test_plugins import write_distribution

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def mnist_spec() -> LatentSpec:
    return LatentSpec(
        [
            CategoricalCode("c1", 10),
            ContinuousCode("c2"),
            ContinuousCode("c3"),
            NoiseCode("z", 62),
        ]
    )


# -- exact scores -------------------------------------------------------------


def test_categorical_equal_logits_nll_is_log_k():
    code = CategoricalCode("c", 10)
    value = code.one_hot(torch.tensor([3]))
    nll = code.negative_log_likelihood(torch.zeros(1, 10), value)
    assert nll.item() == pytest.approx(2.302585, abs=1e-6)


def test_gaussian_standard_scores_one():
    code = ContinuousCode("c")
    nll = code.negative_log_likelihood(
        torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0]])
    )
    assert nll.item() == pytest.approx(1.418939, abs=1e-6)


def test_gaussian_nll_sums_over_dimensions():
    code = ContinuousCode("c", dim=3)
    params = torch.zeros(1, 6)
    nll = code.negative_log_likelihood(params, torch.ones(1, 3))
    assert nll.item() == pytest.approx(3 * 1.418939, abs=1e-5)


def test_hand_check_categorical_and_gaussian():
    categorical = CategoricalCode("c", 2)
    nll_categorical = categorical.negative_log_likelihood(
        torch.tensor([[1.0, 2.0]]), categorical.one_hot(torch.tensor([1]))
    )
    gaussian = ContinuousCode("g")
    nll_gaussian = gaussian.negative_log_likelihood(
        torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0]])
    )
    assert nll_categorical.item() == pytest.approx(0.313262, abs=1e-6)
    assert nll_gaussian.item() == pytest.approx(2.918939, abs=1e-6)
    mean = (nll_categorical + nll_gaussian).item() / 2
    assert mean == pytest.approx(1.616100, abs=1e-6)


def test_entropies_in_nats():
    spec = LatentSpec(
        [
            CategoricalCode("c", 10),
            ContinuousCode("u", dim=2),
            ContinuousCode("g", prior="gaussian"),
            NoiseCode("z", 5),
        ]
    )
    entropies = spec.entropies()
    assert entropies["c"] == pytest.approx(math.log(10))
    assert entropies["u"] == pytest.approx(2 * math.log(2))
    assert entropies["g"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e))
    assert "z" not in entropies


def test_mutual_information_is_entropy_minus_nll():
    spec = LatentSpec([CategoricalCode("c", 10)])
    latent = spec.sample(4, generator=torch.Generator().manual_seed(0))
    bounds = spec.mutual_information(torch.zeros(4, 10), latent)
    assert bounds["c"].item() == pytest.approx(0.0, abs=1e-6)
    confident = latent * 50.0  # logits that put all mass on the sampled category
    assert spec.mutual_information(confident, latent)["c"].item() == pytest.approx(
        math.log(10), abs=1e-6
    )


def test_fixed_std_uses_mean_only():
    code = ContinuousCode("c", fixed_std=1.0)
    assert code.posterior_dim == 1
    nll = code.negative_log_likelihood(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
    assert nll.item() == pytest.approx(1.418939, abs=1e-6)


# -- collapsing std: std**2 underflows to 0 in float32, and 0/0 is NaN ----------


def test_collapsed_std_at_mean_is_exact():
    code = ContinuousCode("c")
    params = torch.tensor([[0.0, -60.0]], requires_grad=True)
    nll = code.negative_log_likelihood(params, torch.tensor([[0.0]]))
    nll.sum().backward()
    assert nll.dtype == torch.float32
    assert nll.item() == pytest.approx(-59.081062, abs=1e-5)
    assert not torch.isnan(nll).any()
    assert params.grad[0, 1].item() == 1.0


def test_collapsed_std_off_mean_is_inf():
    code = ContinuousCode("c")
    nll = code.negative_log_likelihood(
        torch.tensor([[0.0, -60.0]]), torch.tensor([[1.0]])
    )
    assert nll.item() == math.inf


def test_small_std_has_no_epsilon():
    code = ContinuousCode("c")
    log_std = math.log(1e-3)
    nll = code.negative_log_likelihood(
        torch.tensor([[0.0, log_std]]), torch.tensor([[0.0]])
    )
    assert nll.item() == pytest.approx(-5.988817, abs=1e-6)
    # An epsilon inside the log, 0.5 ln(2 pi std**2 + 1e-6), would shift the
    # value by 0.074 nats.
    patched = 0.5 * math.log(2 * math.pi * 1e-6 + 1e-6)
    assert patched == pytest.approx(-5.914971, abs=1e-6)
    assert abs(nll.item() - patched) > 0.07


# -- priors sampled from the right law, one-hot categories, one input layout ----


@pytest.fixture(scope="module")
def million_samples() -> dict[str, torch.Tensor]:
    spec = LatentSpec(
        [
            CategoricalCode("c", 10),
            ContinuousCode("u"),
            NoiseCode("z", 1),
            NoiseCode("z_uniform", 1, distribution="uniform"),
        ]
    )
    latent = spec.sample(1_000_000, generator=torch.Generator().manual_seed(1234))
    return spec.split_input(latent)


def test_uniform_prior_range_and_moments(million_samples):
    values = million_samples["u"].double()
    assert values.min().item() >= -1.0
    assert values.max().item() <= 1.0
    assert abs(values.mean().item()) < 0.003
    assert values.var().item() == pytest.approx(1 / 3, abs=0.002)


def test_categorical_prior_one_hot_and_uniform(million_samples):
    one_hot = million_samples["c"]
    assert torch.all((one_hot == 0) | (one_hot == 1))
    assert torch.all(one_hot.sum(dim=1) == 1)
    frequencies = one_hot.double().mean(dim=0)
    assert torch.all((frequencies - 0.1).abs() < 0.0015)


def test_gaussian_noise_moments(million_samples):
    values = million_samples["z"].double()
    assert abs(values.mean().item()) < 0.005
    assert values.var().item() == pytest.approx(1.0, abs=0.005)


def test_uniform_noise_range_and_moments(million_samples):
    values = million_samples["z_uniform"].double()
    assert values.min().item() >= -1.0
    assert values.max().item() <= 1.0
    # Standard errors over 1e6 draws: 0.00058 for the mean, 0.0003 for the
    # variance.
    assert abs(values.mean().item()) < 0.003
    assert values.var().item() == pytest.approx(1 / 3, abs=0.002)


@pytest.mark.parametrize(
    ("codes", "width"),
    [
        (
            [
                CategoricalCode("c1", 10),
                ContinuousCode("c2"),
                ContinuousCode("c3"),
                NoiseCode("z", 62),
            ],
            74,
        ),
        (
            [CategoricalCode(f"c{i}", 10) for i in range(4)]
            + [ContinuousCode(f"u{i}") for i in range(4)]
            + [NoiseCode("z", 124)],
            168,
        ),
        (
            [CategoricalCode(f"c{i}", 10) for i in range(10)] + [NoiseCode("z", 128)],
            228,
        ),
        ([ContinuousCode(f"u{i}") for i in range(5)] + [NoiseCode("z", 128)], 133),
        (
            [ContinuousCode("u")]
            + [CategoricalCode(f"c{i}", 20) for i in range(3)]
            + [NoiseCode("z", 128)],
            189,
        ),
    ],
    ids=["mnist", "svhn", "celeba", "faces", "chairs"],
)
def test_paper_input_widths(codes, width):
    spec = LatentSpec(codes)
    assert spec.input_dim == width
    assert spec.sample(3).shape == (3, width)


def test_category_sits_at_documented_offset():
    spec = LatentSpec([NoiseCode("z", 5), ContinuousCode("u"), CategoricalCode("c", 4)])
    code = spec["c"]
    assert isinstance(code, CategoricalCode)
    values = {
        "z": torch.zeros(4, 5),
        "u": torch.zeros(4, 1),
        "c": code.one_hot(torch.arange(4)),
    }
    latent = spec.concat_input(values)
    offset = spec.input_slices["c"].start
    assert offset == 6
    for k in range(4):
        assert latent[k, offset + k].item() == 1.0
        assert latent[k].sum().item() == 1.0


def test_sample_assembly_matches_manual_assembly():
    # Sampling and every other path (traversal, sample grids) assemble through
    # concat_input, so the same draws give bitwise equal inputs.
    spec = mnist_spec()
    sampled = spec.sample(16, generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    manual = spec.concat_input(
        {code.name: code.sample(16, generator=generator) for code in spec.codes}
    )
    assert torch.equal(sampled, manual)


def test_same_generator_state_same_batch():
    spec = mnist_spec()
    first = spec.sample(8, generator=torch.Generator().manual_seed(3))
    second = spec.sample(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


# -- a squashing activation must not reach the continuous slices of Q ---------


def test_continuous_mean_is_not_squashed():
    spec = LatentSpec([CategoricalCode("c", 10), ContinuousCode("u")])
    posterior = torch.cat(
        [torch.zeros(1, 10), torch.tensor([[-0.9]]), torch.tensor([[0.0]])], dim=1
    )
    parts = spec.split_posterior(posterior)
    code = spec["u"]
    assert isinstance(code, ContinuousCode)
    mean, log_std = code.posterior_mean_log_std(parts["u"])
    assert torch.equal(mean, torch.tensor([[-0.9]], dtype=torch.float32))
    assert log_std.item() == 0.0
    latent = spec.concat_input(
        {"c": torch.eye(10)[:1], "u": torch.tensor([[-0.9]], dtype=torch.float32)}
    )
    nll = spec.negative_log_likelihoods(posterior, latent)
    assert nll["u"].item() == pytest.approx(0.918939, abs=1e-6)
    assert abs(nll["u"].item() - 1.625859) > 0.5  # sigmoid-squashed mean
    assert abs(nll["u"].item() - 0.935812) > 0.01  # tanh-squashed mean


def test_softmax_touches_only_categorical_slice():
    spec = LatentSpec([CategoricalCode("c", 10), ContinuousCode("u")])
    posterior = torch.cat([torch.randn(2, 10), torch.full((2, 2), -0.9)], dim=1)
    parts = spec.split_posterior(posterior)
    code = spec["c"]
    assert isinstance(code, CategoricalCode)
    probabilities = code.posterior_probabilities(parts["c"])
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))
    assert torch.equal(parts["u"], torch.full((2, 2), -0.9))


# -- split/concat round trips (property tests) --------------------------------

code_strategy = st.one_of(
    st.builds(lambda k: ("categorical", {"num_categories": k}), st.integers(1, 12)),
    st.builds(
        lambda d, prior, fixed: (
            "continuous",
            {"dim": d, "prior": prior, "fixed_std": fixed},
        ),
        st.integers(1, 4),
        st.sampled_from(["uniform", "gaussian"]),
        st.sampled_from([None, 1.0, 0.5]),
    ),
    st.builds(
        lambda d, dist: ("noise", {"dim": d, "distribution": dist}),
        st.integers(1, 8),
        st.sampled_from(["gaussian", "uniform"]),
    ),
)


def build_spec(drawn: list[tuple[str, dict]]) -> LatentSpec:
    return LatentSpec(
        [
            code_from_config({"kind": kind, "name": f"code{i}", **fields})
            for i, (kind, fields) in enumerate(drawn)
        ]
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(code_strategy, min_size=1, max_size=6),
    st.integers(1, 9),
    st.integers(0, 2**31),
)
def test_input_split_concat_round_trip(drawn, batch_size, seed):
    spec = build_spec(drawn)
    latent = spec.sample(batch_size, generator=torch.Generator().manual_seed(seed))
    assert latent.shape == (batch_size, spec.input_dim)
    assert torch.equal(spec.concat_input(spec.split_input(latent)), latent)


@settings(max_examples=60, deadline=None)
@given(st.lists(code_strategy, min_size=1, max_size=6), st.integers(1, 9))
def test_posterior_split_round_trip(drawn, batch_size):
    spec = build_spec(drawn)
    posterior = torch.randn(batch_size, spec.posterior_dim)
    parts = spec.split_posterior(posterior)
    rebuilt = torch.cat(list(parts.values()), dim=1) if parts else posterior
    assert torch.equal(rebuilt, posterior)
    assert set(parts) == {code.name for code in spec.scored_codes}


@settings(max_examples=60, deadline=None)
@given(st.lists(code_strategy, min_size=1, max_size=6), st.integers(0, 2**31))
def test_sample_ranges_by_prior(drawn, seed):
    spec = build_spec(drawn)
    values = spec.split_input(
        spec.sample(64, generator=torch.Generator().manual_seed(seed))
    )
    for code in spec.codes:
        sample = values[code.name]
        if isinstance(code, CategoricalCode):
            assert torch.all(sample.sum(dim=1) == 1)
        elif getattr(code, "prior", None) == "uniform" or (
            getattr(code, "distribution", None) == "uniform"
        ):
            assert sample.abs().max().item() <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(code_strategy, min_size=1, max_size=6))
def test_config_round_trip(drawn):
    spec = build_spec(drawn)
    assert LatentSpec.from_config(spec.to_config()) == spec


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "fragments"),
    [
        (lambda: CategoricalCode("c1", 0), ["'c1'", "num_categories", "0"]),
        (lambda: ContinuousCode("c2", dim=-1), ["'c2'", "dim", "-1"]),
        (lambda: NoiseCode("z", -3), ["'z'", "dim", "-3"]),
        (
            lambda: ContinuousCode("c3", fixed_std=math.inf),
            ["'c3'", "fixed_std", "inf"],
        ),
        (
            lambda: ContinuousCode("c4", fixed_std=math.nan),
            ["'c4'", "fixed_std", "nan"],
        ),
        (lambda: ContinuousCode("c5", fixed_std=0.0), ["'c5'", "fixed_std"]),
        (
            lambda: ContinuousCode("c7", fixed_std=True),
            ["'c7'", "fixed_std", "True", "finite positive number"],
        ),
        (lambda: ContinuousCode("c6", prior="laplace"), ["'c6'", "prior", "laplace"]),
        (lambda: CategoricalCode("", 3), ["name"]),
    ],
)
def test_invalid_code_names_code_and_value(build, fragments):
    with pytest.raises(LatentSpecError) as error:
        build()
    for fragment in fragments:
        assert fragment in str(error.value)


def test_recognition_output_wrong_width():
    spec = mnist_spec()
    with pytest.raises(LatentSpecError) as error:
        spec.split_posterior(torch.zeros(2, 13))
    message = str(error.value)
    assert "(batch, 14)" in message
    assert "c1=10" in message
    assert "(2, 13)" in message


def test_duplicate_code_names_rejected():
    with pytest.raises(LatentSpecError, match="repeated: c"):
        LatentSpec([CategoricalCode("c", 2), ContinuousCode("c")])


def test_unknown_code_kind_rejected():
    with pytest.raises(LatentSpecError, match="unknown latent code kind 'gamma'"):
        code_from_config({"kind": "gamma", "name": "g"})


def test_unknown_code_field_rejected():
    with pytest.raises(LatentSpecError, match="unknown field"):
        code_from_config(
            {"kind": "categorical", "name": "c", "num_categories": 3, "k": 1}
        )


def test_noise_has_no_posterior():
    with pytest.raises(LatentSpecError, match="no posterior"):
        NoiseCode("z", 2).negative_log_likelihood(torch.zeros(1, 0), torch.zeros(1, 2))


def test_nonpositive_batch_rejected():
    with pytest.raises(LatentSpecError, match="batch_size must be positive, got 0"):
        mnist_spec().sample(0)


# -- code kinds from plugins ---------------------------------------------------

CODE_KIND_PLUGIN = '''
    """Two latent code kinds, a tiny in-memory data set and experiments."""

    import math

    import attrs
    import torch
    import torch.nn.functional as F
    from genlatent_infogan.mutual_information import MutualInformationConfig

    from genlatent import ExperimentConfig, hookimpl
    from genlatent.config import DataConfig, TrainerConfig
    from genlatent.data import DatasetSource, ImageData
    from genlatent.latent import ContinuousCode, LatentCode, NoiseCode


    @attrs.frozen
    class BernoulliCode(LatentCode):
        """dim independent fair bits; Q outputs one logit per bit."""

        kind = "bernoulli"
        name: str
        dim: int = 1

        @property
        def input_dim(self):
            return self.dim

        @property
        def posterior_dim(self):
            return self.dim

        @property
        def entropy(self):
            return self.dim * math.log(2.0)

        def sample(
            self, batch_size, *, generator=None, device=None, dtype=torch.float32
        ):
            bits = torch.randint(
                0, 2, (batch_size, self.dim), generator=generator, device=device
            )
            return bits.to(dtype)

        def negative_log_likelihood(self, posterior_params, value):
            return F.binary_cross_entropy_with_logits(
                posterior_params, value, reduction="none"
            ).sum(dim=-1)


    @attrs.frozen
    class ScaledGaussianCode(ContinuousCode):
        """A N(0, scale^2) prior with the Gaussian posterior of ContinuousCode."""

        kind = "scaled_gaussian"
        prior: str = "gaussian"
        scale: float = 2.0

        @property
        def entropy(self):
            return self.dim * (
                0.5 * math.log(2 * math.pi * math.e) + math.log(self.scale)
            )

        def sample(
            self, batch_size, *, generator=None, device=None, dtype=torch.float32
        ):
            shape = (batch_size, self.dim)
            unit = torch.randn(shape, generator=generator, device=device, dtype=dtype)
            return self.scale * unit


    class NoiseImages(DatasetSource):
        name = "toy-noise-images"
        image_shape = (1, 28, 28)
        num_classes = None

        def load(self, config):
            generator = torch.Generator().manual_seed(0)
            images = torch.randint(
                0, 256, (32, 1, 28, 28), generator=generator, dtype=torch.uint8
            )
            return ImageData(self.name, self.image_shape, "memory", images=images)


    def experiment(name, code):
        return ExperimentConfig(
            name=name,
            description="a plugin code kind on the MNIST networks",
            architecture="infogan-mnist",
            latent=[code.to_config(), NoiseCode("z", 8).to_config()],
            data=DataConfig(dataset="toy-noise-images"),
            trainer=TrainerConfig(max_steps=2, batch_size=8),
            regularizers={"mi": MutualInformationConfig()},
        )


    @hookimpl
    def register_latent_codes(register):
        register(BernoulliCode)
        register(ScaledGaussianCode)


    @hookimpl
    def register_datasets(register):
        register(NoiseImages())


    @hookimpl
    def register_experiments(register):
        register(experiment("toy-bernoulli", BernoulliCode("b", dim=3)))
        register(experiment("toy-scaled-gaussian", ScaledGaussianCode("g")))
'''


@pytest.fixture
def code_kind_plugins(tmp_path, monkeypatch) -> Iterator[PluginHost]:
    """Plugins loaded with a third-party distribution that registers the code
    kinds ``bernoulli`` and ``scaled_gaussian``.

    Afterwards its module leaves ``sys.modules`` and the code kinds are the
    ones before the test.
    """
    site = tmp_path / "site"
    site.mkdir()
    write_distribution(
        site,
        "toy-code-kinds",
        {"toy_code_kinds": "toy_code_kinds"},
        {"toy_code_kinds": CODE_KIND_PLUGIN},
    )
    monkeypatch.syspath_prepend(str(site))
    before = dict(code_kinds())
    try:
        yield load_plugins()
    finally:
        set_code_kinds(before)
        sys.modules.pop("toy_code_kinds", None)


def test_plugin_kinds_registered(code_kind_plugins):
    kinds = code_kind_plugins.code_kinds()
    assert sorted(kinds) == [
        "bernoulli",
        "categorical",
        "continuous",
        "noise",
        "scaled_gaussian",
    ]
    assert dict(code_kinds()) == kinds
    assert kinds["categorical"] is CategoricalCode
    assert not code_kind_plugins.problems


def test_plugin_kind_builds_spec(code_kind_plugins):
    config = code_kind_plugins.get("experiments", "toy-bernoulli")
    spec = LatentSpec.from_config(config.latent)
    bits = spec["b"]
    assert type(bits).__name__ == "BernoulliCode"
    assert spec.input_dim == 3 + 8
    assert spec.posterior_dim == 3
    assert spec.entropies() == {"b": pytest.approx(3 * math.log(2))}
    # Logits of 0 give each bit probability 1/2, so L_I is 0 exactly.
    latent = spec.sample(4, generator=torch.Generator().manual_seed(0))
    bounds = spec.mutual_information(torch.zeros(4, 3), latent)
    assert bounds["b"].item() == pytest.approx(0.0, abs=1e-6)


def test_plugin_kind_explicit_mapping(code_kind_plugins):
    config = code_kind_plugins.get("experiments", "toy-bernoulli")
    kinds = code_kind_plugins.code_kinds()
    set_code_kinds({code.kind: code for code in BUILTIN_CODE_KINDS})
    spec = LatentSpec.from_config(config.latent, kinds)
    assert spec.posterior_dim == 3
    with pytest.raises(LatentSpecError, match="unknown latent code kind 'bernoulli'"):
        LatentSpec.from_config(config.latent)


def run_toy_experiment(name: str, plugins: PluginHost, out: Path) -> RunResult:
    """Train a plugin code kind's two-step experiment, logging every step."""
    return run_experiment(
        name,
        ["trainer.log_every=1", "trainer.progress=false", "wandb.mode=disabled"],
        out=out,
        plugins=plugins,
    )


def test_plugin_kind_trains_two_steps(code_kind_plugins, tmp_path):
    # The Bernoulli kind defines no traversal, so training writes sample
    # grids and no traversal grid for it.
    result = run_toy_experiment("toy-bernoulli", code_kind_plugins, tmp_path / "run")
    assert result.steps == 2
    records = read_metrics(result.run_dir)
    for record in records:
        for key in ("d_loss", "g_loss", "mi/b"):
            assert math.isfinite(record[key]), (record["step"], key)
    assert [path.name for path in (result.run_dir / "samples").iterdir()] == [
        "step_00000002.png"
    ]
    assert not (result.run_dir / "traversals").exists()


def test_plugin_kind_without_traversal(code_kind_plugins):
    config = code_kind_plugins.get("experiments", "toy-bernoulli")
    spec = LatentSpec.from_config(config.latent)
    assert spec.traversable_codes == ()
    with pytest.raises(LatentSpecError, match="'b' \\(bernoulli\\) has no traversal"):
        traversal_inputs(spec, "b")


def test_plugin_kind_run_logs_entropy(code_kind_plugins, tmp_path):
    result = run_toy_experiment(
        "toy-scaled-gaussian", code_kind_plugins, tmp_path / "run"
    )
    assert result.steps == 2
    records = read_metrics(result.run_dir)
    assert [record["step"] for record in records] == [1, 2]
    # H(N(0, 2^2)) = 0.5 ln(2 pi e) + ln 2 nats.
    expected = 0.5 * math.log(2 * math.pi * math.e) + math.log(2.0)
    assert records[-1]["entropy/g"] == pytest.approx(expected, abs=1e-6)
    assert math.isfinite(records[-1]["mi/g"])
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["latent"][0] == {
        "kind": "scaled_gaussian",
        "name": "g",
        "dim": 1,
        "prior": "gaussian",
        "fixed_std": None,
        "scale": 2.0,
    }


def test_non_attrs_code_kind_rejected():
    class PlainCode(LatentCode):
        kind = "plain"

        def __init__(self, name: str) -> None:
            self.name = name

        input_dim = posterior_dim = 1
        entropy = None

        def sample(self, batch_size, **kwargs):
            return torch.zeros(batch_size, 1)

    class Plugin:
        @hookimpl
        def register_latent_codes(self, register):
            register(PlainCode)

    before = dict(code_kinds())
    try:
        host = load_plugins(extra=[Plugin()])
    finally:
        set_code_kinds(before)
    assert "plain" not in host.code_kinds()
    assert len(host.problems) == 1
    assert "defined with attrs" in host.problems[0]
