"""Config overrides, validation and JSON round trips."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genlatent.config import (
    DataConfig,
    TrainerConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    parse_override,
)
from genlatent.errors import ConfigError, GenlatentError
from genlatent.plugins import load_plugins
from genlatent.run import regularizer_configs, resolve_config

PLUGINS = load_plugins()


def mnist(*overrides: str):
    return resolve_config("infogan-mnist", list(overrides), plugins=PLUGINS)


def test_overrides_set_typed_values():
    config = mnist(
        "trainer.max_steps=500",
        "trainer.batch_size=64",
        "data.root=/data",
        "optim.generator.lr=3e-4",
        "trainer.progress=false",
        "trainer.device=cpu",
    )
    assert config.trainer.max_steps == 500
    assert config.trainer.batch_size == 64
    assert config.data.root == "/data"
    assert config.optim.generator.lr == 3e-4
    assert config.trainer.progress is False
    assert config.trainer.device == "cpu"


def test_regularizer_shorthand_and_full_path():
    short = mnist("mi.lambda_cont=0.5", "mi.update_generator=no")
    full = mnist(
        "regularizers.mi.lambda_cont=0.5", "regularizers.mi.update_generator=0"
    )
    assert short.regularizers["mi"].lambda_cont == 0.5
    assert short.regularizers["mi"].update_generator is False
    assert config_to_dict(short) == config_to_dict(full)


def test_latent_code_override_by_name():
    config = mnist("latent.c2.prior=gaussian", "latent.c3.fixed_std=none")
    codes = {code["name"]: code for code in config.latent}
    assert codes["c2"]["prior"] == "gaussian"
    assert codes["c3"]["fixed_std"] is None


def test_none_for_optional_field():
    assert mnist("data.root=none").data.root is None


def test_experiment_copies_are_independent():
    mnist("trainer.max_steps=7")
    assert mnist().trainer.max_steps == 5000


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (
            "trainer.max_step=5",
            ["unknown config key 'trainer.max_step'", "'max_steps'"],
        ),
        ("trainr.max_steps=5", ["no field 'trainr'", "'trainer'"]),
        (
            "trainer.batch_size=-1",
            ["trainer.batch_size=-1", "batch_size must be a positive integer, got -1"],
        ),
        (
            "data.num_workers=-1",
            ["num_workers must be a non-negative integer, got -1"],
        ),
        ("trainer.batch_size=many", ["expected an integer"]),
        (
            "optim.discriminator.lr=-1e-4",
            ["optim.discriminator.lr=-1e-4", "lr must be a positive number"],
        ),
        ("optim.discriminator.lr=nan", ["expected a finite number"]),
        ("optim.generator.beta1=1.5", ["beta1 must be in [0, 1)"]),
        ("mi.lambda_disc=-0.1", ["mi.lambda_disc=-0.1", "non-negative"]),
        ("mi.update_generator=perhaps", ["expected a boolean"]),
        ("trainer.device=tpu", ["auto, cpu, cuda, cuda:N or mps", "'tpu'"]),
        ("trainer.on_divergence=ignore", ["stop, skip"]),
        ("trainer=5", ["names a config section", "trainer.max_steps"]),
        ("latent.c9.prior=gaussian", ["no field 'c9'", "c1, c2, c3, z"]),
        ("latent.c1.num_categories=0", ["'c1'", "num_categories", "0"]),
        ("latent.c2.kind=noise", ["cannot be overridden"]),
        ("latent.c2.fixed_std=true", ["latent.c2.fixed_std=true", "expected a number"]),
        ("max_steps", ["write KEY=VALUE"]),
        ("trainer..max_steps=3", ["dotted field names"]),
    ],
)
def test_bad_override_message(override, fragments):
    with pytest.raises(ConfigError) as error:
        mnist(override)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("value", [0, -3, 2.0, True])
def test_integer_field_rejects(value):
    with pytest.raises(ValueError) as error:
        TrainerConfig(batch_size=value)
    assert str(error.value) == f"batch_size must be a positive integer, got {value!r}"


@pytest.mark.parametrize("value", [-1, 1.0, False])
def test_non_negative_integer_rejects(value):
    with pytest.raises(ValueError) as error:
        DataConfig(num_workers=value)
    expected = f"num_workers must be a non-negative integer, got {value!r}"
    assert str(error.value) == expected


def test_bad_override_keeps_config():
    config = mnist()
    before = config_to_dict(config)
    with pytest.raises(ConfigError):
        apply_overrides(config, ["trainer.batch_size=-1"])
    assert config_to_dict(config) == before


def test_unknown_regularizer_in_config_json():
    data = config_to_dict(mnist())
    data["regularizers"]["missing"] = {}
    with pytest.raises(ConfigError, match="regularizer 'missing'"):
        config_from_dict(data, regularizer_configs(PLUGINS))


def test_config_json_round_trip():
    config = mnist("mi.lambda_cont=0.25", "latent.c2.prior=gaussian")
    text = json.dumps(config_to_dict(config))
    rebuilt = config_from_dict(json.loads(text), regularizer_configs(PLUGINS))
    assert rebuilt == config


def test_config_json_wrong_type_named():
    data = config_to_dict(mnist())
    data["trainer"]["max_steps"] = "lots"
    with pytest.raises(ConfigError, match="max_steps"):
        config_from_dict(data, regularizer_configs(PLUGINS))


def test_config_json_boolean_fixed_std_rejected():
    # bool is an int subclass in Python, so true could pass for std 1.
    data = config_to_dict(mnist())
    data["latent"][1]["fixed_std"] = True
    config = config_from_dict(data, regularizer_configs(PLUGINS))
    with pytest.raises(GenlatentError) as error:
        resolve_config(config, plugins=PLUGINS)
    message = str(error.value)
    assert "'c2'" in message
    assert "fixed_std must be a finite positive number" in message
    assert "got True" in message


def test_parse_override_splits_first_equals():
    assert parse_override("data.root=/a=b") == ("data.root", "/a=b")


# -- fuzzing: any override either applies or raises a GenlatentError -----------

KEYS = [
    "trainer.max_steps",
    "trainer.batch_size",
    "trainer.seed",
    "trainer.device",
    "trainer.progress",
    "trainer.on_divergence",
    "optim.generator.lr",
    "optim.discriminator.beta2",
    "data.root",
    "data.num_workers",
    "mi.lambda_disc",
    "mi.update_generator",
    "latent.c1.num_categories",
    "latent.c2.prior",
    "latent.c2.fixed_std",
    "latent.z.dim",
    "wandb.mode",
]
VALUES = st.one_of(
    st.text(string.printable, max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "false", "none", "gaussian", "cpu", "-0", "1e-3"]),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEYS), VALUES)
def test_fuzz_known_keys(key, value):
    config = mnist()
    try:
        apply_overrides(config, [f"{key}={value}"])
    except GenlatentError as error:
        assert str(error)
        return
    # An accepted override leaves a config that still resolves and serialises.
    rebuilt = config_from_dict(
        json.loads(json.dumps(config_to_dict(config))), regularizer_configs(PLUGINS)
    )
    assert rebuilt == config


@settings(max_examples=300, deadline=None)
@given(st.text(string.printable, max_size=40))
def test_fuzz_arbitrary_text(text):
    try:
        mnist(text)
    except GenlatentError as error:
        assert str(error)
