"""The InfoGAN paper's networks and experiments: layer shapes, SAME padding,
parameter counts worked out by hand, latent widths, hyperparameters and the
``genlatent show`` summary of each experiment."""

from __future__ import annotations

import logging

import pytest
import torch
from genlatent_infogan.networks import (
    CelebANetworks,
    ChairsNetworks,
    FacesNetworks,
    MNISTNetworks,
    SVHNNetworks,
)
from torch import nn
from torch.nn import functional as F

from genlatent.cli import main
from genlatent.latent import CategoricalCode, ContinuousCode, LatentSpec, NoiseCode
from genlatent.nn import Conv2dSame, conv_block, upconv_block
from genlatent.plugins import PluginHost, load_plugins
from genlatent.summary import layer_table

# Experiment name, G input width, Q output width. Continuous codes have a
# fixed posterior std, so Q outputs only their mean.
EXPERIMENTS = [
    ("infogan-mnist", 74, 10 + 2),
    ("infogan-svhn", 168, 4 * 10 + 4),
    ("infogan-celeba", 228, 10 * 10),
    ("infogan-faces-azimuth", 133, 5),
    ("infogan-faces-elevation", 133, 5),
    ("infogan-faces-lighting", 133, 5),
    ("infogan-chairs-rotation", 189, 1 + 3 * 20),
    ("infogan-chairs-width", 189, 1 + 3 * 20),
]
EXPERIMENT_NAMES = [name for name, _, _ in EXPERIMENTS]
PAPER_EXPERIMENT_NAMES = EXPERIMENT_NAMES[1:]


@pytest.fixture(scope="module")
def plugins() -> PluginHost:
    return load_plugins()


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def spec_of(plugins: PluginHost, name: str) -> LatentSpec:
    return LatentSpec.from_config(plugins.get("experiments", name).latent)


# -- SAME padding ---------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 16])
def test_same_padding_keeps_size(size: int) -> None:
    conv = Conv2dSame(2, 3, 4, stride=1)
    output = conv(torch.randn(1, 2, size, size))
    assert output.shape == (1, 3, size, size)


@pytest.mark.parametrize("size", [8, 16])
def test_symmetric_padding_cannot_keep_size(size: int) -> None:
    # A 4x4 kernel at stride 1 needs 3 rows of padding in all, which no
    # symmetric padding gives.
    smaller = nn.Conv2d(2, 3, 4, stride=1, padding=1)(torch.randn(1, 2, size, size))
    larger = nn.Conv2d(2, 3, 4, stride=1, padding=2)(torch.randn(1, 2, size, size))
    assert smaller.shape[-2:] == (size - 1, size - 1)
    assert larger.shape[-2:] == (size + 1, size + 1)


def test_same_padding_extra_row_bottom_right() -> None:
    assert Conv2dSame.same_padding(8, 4, 1) == (1, 2)
    assert Conv2dSame.same_padding(16, 4, 1) == (1, 2)
    assert Conv2dSame.same_padding(16, 4, 2) == (1, 1)

    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 4, stride=1)
    images = torch.randn(2, 2, 8, 8)
    expected = F.conv2d(F.pad(images, (1, 2, 1, 2)), conv.weight, conv.bias)
    torch.testing.assert_close(conv(images), expected, rtol=0, atol=0)


@pytest.mark.parametrize("size", [8, 16])
def test_stride_one_blocks_keep_size(size: int) -> None:
    images = torch.randn(2, 4, size, size)
    conv = conv_block(4, 5, stride=1, batch_norm=True, activation="lrelu")
    upconv = upconv_block(4, 5, stride=1, batch_norm=True, activation="relu")
    assert conv(images).shape == (2, 5, size, size)
    assert upconv(images).shape == (2, 5, size, size)


# -- shapes of every network -----------------------------------------------------


@pytest.mark.parametrize(("name", "latent_dim", "posterior_dim"), EXPERIMENTS)
def test_networks_shapes(
    plugins: PluginHost, name: str, latent_dim: int, posterior_dim: int
) -> None:
    config = plugins.get("experiments", name)
    architecture = plugins.get("architectures", config.architecture)
    dataset = plugins.get("datasets", config.data.dataset)
    spec = LatentSpec.from_config(config.latent)
    assert spec.input_dim == latent_dim
    assert spec.posterior_dim == posterior_dim
    assert architecture.image_shape == dataset.image_shape

    torch.manual_seed(0)
    generator = architecture.build_generator(spec.input_dim)
    discriminator = architecture.build_discriminator()
    head = architecture.build_recognition_head(spec.posterior_dim)
    images = generator(spec.sample(4))
    assert images.shape == (4, *dataset.image_shape)

    logits, features = discriminator(images)
    assert logits.shape == (4,)
    assert features.shape == (4, architecture.feature_dim)
    assert head(features).shape == (4, posterior_dim)

    real_logits, _ = discriminator(torch.rand(4, *dataset.image_shape))
    assert real_logits.shape == (4,)


@pytest.mark.parametrize(
    ("architecture", "activation", "output_range"),
    [
        (MNISTNetworks(), nn.Sigmoid, (0.0, 1.0)),
        (SVHNNetworks(), nn.Tanh, (-1.0, 1.0)),
        (CelebANetworks(), nn.Tanh, (-1.0, 1.0)),
        (FacesNetworks(), nn.Sigmoid, (0.0, 1.0)),
        (ChairsNetworks(), nn.Sigmoid, (0.0, 1.0)),
    ],
)
def test_generator_output_range(architecture, activation, output_range) -> None:
    assert architecture.output_range == output_range
    generator = architecture.build_generator(10)
    last = list(generator.modules())[-1]
    assert isinstance(last, activation)

    torch.manual_seed(0)
    images = generator(torch.randn(8, 10) * 10)
    low, high = output_range
    assert images.min() >= low
    assert images.max() <= high


def test_svhn_layer_shapes() -> None:
    architecture = SVHNNetworks()
    generator_rows = layer_table(architecture.build_generator(168), torch.zeros(2, 168))
    upconv_shapes = [
        shape[1:] for _, kind, shape, _ in generator_rows if kind == "ConvTranspose2d"
    ]
    assert upconv_shapes == [(256, 4, 4), (128, 8, 8), (64, 16, 16), (3, 32, 32)]

    trunk_rows = layer_table(architecture.build_trunk(), torch.zeros(2, 3, 32, 32))
    conv_shapes = [
        shape[1:] for _, kind, shape, _ in trunk_rows if kind == "Conv2dSame"
    ]
    assert conv_shapes == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert trunk_rows[-1][2] == (2, 256 * 4 * 4)


def test_chairs_layer_shapes() -> None:
    architecture = ChairsNetworks()
    generator_rows = layer_table(architecture.build_generator(189), torch.zeros(2, 189))
    upconv_shapes = [
        shape[1:]
        for _, kind, shape, _ in generator_rows
        if kind in ("ConvTranspose2d", "Conv2dSame")
    ]
    assert upconv_shapes == [
        (256, 8, 8),
        (256, 8, 8),
        (128, 16, 16),
        (64, 32, 32),
        (1, 64, 64),
    ]

    trunk_rows = layer_table(architecture.build_trunk(), torch.zeros(2, 1, 64, 64))
    conv_shapes = [
        shape[1:] for _, kind, shape, _ in trunk_rows if kind == "Conv2dSame"
    ]
    assert conv_shapes == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (256, 8, 8),
        (256, 8, 8),
    ]
    assert trunk_rows[-1][2] == (2, 1024)


def test_faces_layer_shapes() -> None:
    architecture = FacesNetworks()
    generator_rows = layer_table(architecture.build_generator(133), torch.zeros(2, 133))
    upconv_shapes = [
        shape[1:] for _, kind, shape, _ in generator_rows if kind == "ConvTranspose2d"
    ]
    assert upconv_shapes == [(64, 16, 16), (1, 32, 32)]

    trunk_rows = layer_table(architecture.build_trunk(), torch.zeros(2, 1, 32, 32))
    conv_shapes = [
        shape[1:] for _, kind, shape, _ in trunk_rows if kind == "Conv2dSame"
    ]
    assert conv_shapes == [(64, 16, 16), (128, 8, 8)]
    assert trunk_rows[-1][2] == (2, 1024)


# -- batch norm placement and recognition heads ----------------------------------


def has_batch_norm(module: nn.Module) -> bool:
    return any(
        isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d) for layer in module.modules()
    )


def test_svhn_batch_norm_placement() -> None:
    architecture = SVHNNetworks()
    generator = architecture.build_generator(168)
    # FC, unflatten, then four up-convolutions; only the first of those has
    # batch norm in the table.
    assert [has_batch_norm(layer) for layer in generator] == [
        True,
        False,
        True,
        False,
        False,
        False,
    ]
    trunk = architecture.build_trunk()
    assert [has_batch_norm(layer) for layer in trunk] == [False, True, True, False]


def test_chairs_batch_norm_placement() -> None:
    architecture = ChairsNetworks()
    generator = architecture.build_generator(189)
    assert [has_batch_norm(layer) for layer in generator] == [
        True,
        True,
        False,
        True,
        True,
        True,
        True,
        False,
    ]
    trunk = architecture.build_trunk()
    assert [has_batch_norm(layer) for layer in trunk] == [
        False,
        True,
        True,
        True,
        True,
        False,
        True,
    ]


@pytest.mark.parametrize("architecture", [FacesNetworks(), ChairsNetworks()])
def test_shared_network_head_is_one_layer(architecture) -> None:
    head = architecture.build_recognition_head(62)
    assert type(head) is nn.Linear
    assert head.in_features == 1024
    assert head.out_features == 62
    adversarial = architecture.build_adversarial_head()
    assert type(adversarial) is nn.Linear
    assert adversarial.in_features == 1024


@pytest.mark.parametrize(
    "architecture", [MNISTNetworks(), SVHNNetworks(), CelebANetworks()]
)
def test_recognition_head_hidden_layer(architecture) -> None:
    head = architecture.build_recognition_head(48)
    linears = [layer for layer in head.modules() if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [
        (architecture.feature_dim, 128),
        (128, 48),
    ]
    assert any(isinstance(layer, nn.BatchNorm1d) for layer in head.modules())
    assert any(isinstance(layer, nn.LeakyReLU) for layer in head.modules())


def test_svhn_adversarial_head_on_conv_features() -> None:
    head = SVHNNetworks().build_adversarial_head()
    assert type(head) is nn.Linear
    assert head.in_features == 256 * 4 * 4
    assert head.out_features == 1


# -- parameter counts worked out by hand -------------------------------------------
# A layer followed by batch norm has no bias. Batch norm has a scale and a
# shift per channel.


def test_svhn_parameter_counts() -> None:
    architecture = SVHNNetworks()
    generator = architecture.build_generator(168)
    discriminator = architecture.build_discriminator()
    head = architecture.build_recognition_head(48)

    assert parameter_count(generator[0][0]) == 168 * 2 * 2 * 448
    assert parameter_count(generator[0][1]) == 2 * 2 * 2 * 448
    # 4x4 upconv 256 -> 128 without batch norm keeps its bias.
    assert parameter_count(generator[3]) == 256 * 128 * 4 * 4 + 128
    assert parameter_count(generator[5]) == 64 * 3 * 4 * 4 + 3
    assert parameter_count(generator) == 2_798_787

    assert parameter_count(discriminator.trunk[0]) == 3 * 64 * 4 * 4 + 64
    assert parameter_count(discriminator.trunk[2]) == 128 * 256 * 4 * 4 + 2 * 256
    assert parameter_count(discriminator.adversarial_head) == 256 * 4 * 4 + 1
    assert parameter_count(discriminator) == 663_361

    assert parameter_count(head) == 4096 * 128 + 2 * 128 + 128 * 48 + 48


def test_celeba_parameter_counts() -> None:
    architecture = CelebANetworks()
    generator = architecture.build_generator(228)
    head = architecture.build_recognition_head(100)
    assert parameter_count(generator[0][0]) == 228 * 2 * 2 * 448
    assert parameter_count(head[1]) == 128 * 100 + 100
    assert parameter_count(architecture.build_discriminator()) == 663_361


def test_faces_parameter_counts() -> None:
    architecture = FacesNetworks()
    generator = architecture.build_generator(133)
    trunk = architecture.build_trunk()
    assert parameter_count(generator[1]) == 1024 * 8 * 8 * 128 + 2 * 8 * 8 * 128
    assert parameter_count(generator[3]) == 128 * 64 * 4 * 4 + 2 * 64
    assert parameter_count(trunk[3]) == 128 * 8 * 8 * 1024 + 2 * 1024
    assert parameter_count(architecture.build_recognition_head(10)) == 1024 * 10 + 10


def test_chairs_parameter_counts() -> None:
    architecture = ChairsNetworks()
    generator = architecture.build_generator(189)
    trunk = architecture.build_trunk()
    # The stride-1 layers: 4x4 kernels, 256 channels in and out.
    assert parameter_count(generator[3]) == 256 * 256 * 4 * 4 + 2 * 256
    assert parameter_count(trunk[3]) == 256 * 256 * 4 * 4 + 2 * 256
    assert parameter_count(trunk[6]) == 256 * 8 * 8 * 1024 + 2 * 1024
    assert parameter_count(generator[7]) == 64 * 1 * 4 * 4 + 1
    assert parameter_count(architecture.build_recognition_head(62)) == 1024 * 62 + 62


def test_mnist_parameter_counts() -> None:
    architecture = MNISTNetworks()
    trunk = architecture.build_trunk()
    assert parameter_count(trunk[0]) == 1 * 64 * 4 * 4 + 64
    assert parameter_count(trunk[3]) == 128 * 7 * 7 * 1024 + 2 * 1024


# -- experiments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "infogan-svhn",
            [CategoricalCode(f"c{i}", 10) for i in range(1, 5)]
            + [ContinuousCode(f"c{i}", fixed_std=1.0) for i in range(5, 9)]
            + [NoiseCode("z", 124, distribution="uniform")],
        ),
        (
            "infogan-celeba",
            [CategoricalCode(f"c{i}", 10) for i in range(1, 11)]
            + [NoiseCode("z", 128, distribution="uniform")],
        ),
        (
            "infogan-faces-azimuth",
            [ContinuousCode(f"c{i}", fixed_std=1.0) for i in range(1, 6)]
            + [NoiseCode("z", 128, distribution="uniform")],
        ),
        (
            "infogan-chairs-rotation",
            [ContinuousCode("rotation", fixed_std=1.0)]
            + [CategoricalCode(f"c{i}", 20) for i in range(1, 4)]
            + [NoiseCode("z", 128, distribution="uniform")],
        ),
        (
            "infogan-chairs-width",
            [ContinuousCode("width", fixed_std=1.0)]
            + [CategoricalCode(f"c{i}", 20) for i in range(1, 4)]
            + [NoiseCode("z", 128, distribution="uniform")],
        ),
    ],
)
def test_experiment_latent_codes(plugins: PluginHost, name: str, expected) -> None:
    assert spec_of(plugins, name).codes == tuple(expected)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("infogan-mnist", 74),
        ("infogan-svhn", 168),
        ("infogan-celeba", 228),
        ("infogan-faces-azimuth", 133),
        ("infogan-faces-elevation", 133),
        ("infogan-faces-lighting", 133),
        ("infogan-chairs-rotation", 189),
        ("infogan-chairs-width", 189),
    ],
)
def test_experiment_latent_width(plugins: PluginHost, name: str, expected) -> None:
    assert spec_of(plugins, name).input_dim == expected


# Learning rate of D and Q, of G, lambda for continuous and for categorical
# codes, and training steps: 5000 for the MNIST recipes, 20,000 for the others.
HYPERPARAMETERS = [
    ("infogan-mnist", 2e-4, 1e-3, 1.0, 1.0, 5000),
    ("infogan-fashion-mnist", 2e-4, 1e-3, 1.0, 1.0, 5000),
    ("infogan-svhn", 2e-4, 1e-3, 1.0, 1.0, 20_000),
    ("infogan-celeba", 2e-4, 1e-3, 1.0, 1.0, 20_000),
    ("infogan-faces-azimuth", 2e-4, 5e-4, 0.2, 0.2, 20_000),
    ("infogan-faces-elevation", 4e-4, 3e-4, 0.1, 0.1, 20_000),
    ("infogan-faces-lighting", 8e-4, 3e-4, 0.1, 0.1, 20_000),
    ("infogan-chairs-rotation", 2e-4, 1e-3, 10.0, 1.0, 20_000),
    ("infogan-chairs-width", 2e-4, 1e-3, 0.05, 2.0, 20_000),
]
INFOGAN_EXPERIMENT_NAMES = sorted(name for name, *_ in HYPERPARAMETERS)


@pytest.mark.parametrize(
    (
        "name",
        "discriminator_lr",
        "generator_lr",
        "lambda_cont",
        "lambda_disc",
        "max_steps",
    ),
    HYPERPARAMETERS,
)
def test_experiment_hyperparameters(
    plugins: PluginHost,
    name: str,
    discriminator_lr: float,
    generator_lr: float,
    lambda_cont: float,
    lambda_disc: float,
    max_steps: int,
) -> None:
    config = plugins.get("experiments", name)
    assert config.optim.discriminator.lr == discriminator_lr
    assert config.optim.generator.lr == generator_lr
    assert config.optim.discriminator.beta1 == 0.5
    assert config.optim.generator.beta1 == 0.5
    assert config.regularizers["mi"].lambda_cont == lambda_cont
    assert config.regularizers["mi"].lambda_disc == lambda_disc
    assert config.trainer.batch_size == 128
    assert config.trainer.max_steps == max_steps


@pytest.mark.parametrize("name", ["infogan-mnist", "infogan-fashion-mnist"])
def test_mnist_recipe_inputs(plugins: PluginHost, name: str) -> None:
    config = plugins.get("experiments", name)
    assert config.architecture == "infogan-mnist"
    assert spec_of(plugins, name).input_dim == 74


@pytest.mark.parametrize(
    ("name", "architecture", "dataset"),
    [
        ("infogan-svhn", "infogan-svhn", "svhn"),
        ("infogan-celeba", "infogan-celeba", "celeba"),
        ("infogan-faces-azimuth", "infogan-faces", "faces"),
        ("infogan-faces-elevation", "infogan-faces", "faces"),
        ("infogan-faces-lighting", "infogan-faces", "faces"),
        ("infogan-chairs-rotation", "infogan-chairs", "chairs"),
        ("infogan-chairs-width", "infogan-chairs", "chairs"),
    ],
)
def test_experiment_parts(
    plugins: PluginHost, name: str, architecture: str, dataset: str
) -> None:
    config = plugins.get("experiments", name)
    assert config.architecture == architecture
    assert config.data.dataset == dataset
    assert config.data.crop is None
    assert config.data.skip_corrupt is False


def test_leaky_relu_slopes(plugins: PluginHost) -> None:
    # The InfoGAN paper (Chen et al., 2016, appendix) uses leaky ReLU with
    # slope 0.1 in every hidden layer of D and Q. PyTorch's default slope is
    # 0.01, so a layer built without the argument fails here.
    for name in plugins.names("architectures"):
        architecture = plugins.get("architectures", name)
        modules = [
            architecture.build_discriminator(),
            architecture.build_recognition_head(12),
        ]
        slopes = [
            layer.negative_slope
            for module in modules
            for layer in module.modules()
            if isinstance(layer, nn.LeakyReLU)
        ]
        assert slopes, f"{name} has no leaky ReLU in D or Q"
        assert set(slopes) == {0.1}, f"{name} leaky ReLU slopes {set(slopes)}"


# -- genlatent list and show -----------------------------------------------------------


@pytest.fixture
def restore_cli_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command line replaces the genlatent logger's handlers and stops
    # propagation, which would hide later tests' records from caplog.
    cli_logger = logging.getLogger("genlatent")
    monkeypatch.setattr(cli_logger, "handlers", [])
    monkeypatch.setattr(cli_logger, "propagate", cli_logger.propagate)
    monkeypatch.setattr(cli_logger, "level", cli_logger.level)


def test_list_shows_infogan_experiments(capsys, restore_cli_logging) -> None:
    assert main(["list"]) == 0
    output = capsys.readouterr().out
    experiments_section = output.split("experiments:")[1].split("models:")[0]
    listed = [line.split()[0] for line in experiments_section.strip().splitlines()]
    infogan = [name for name in listed if name in INFOGAN_EXPERIMENT_NAMES]
    assert infogan == INFOGAN_EXPERIMENT_NAMES
    assert len(infogan) == 9


@pytest.mark.parametrize(("name", "latent_dim", "posterior_dim"), EXPERIMENTS[1:])
def test_show_prints_networks(
    capsys, restore_cli_logging, name: str, latent_dim: int, posterior_dim: int
) -> None:
    plugins = load_plugins()
    config = plugins.get("experiments", name)
    architecture = plugins.get("architectures", config.architecture)
    image = "x".join(map(str, architecture.image_shape))

    assert main(["show", name]) == 0
    output = capsys.readouterr().out
    assert f'"name": "{name}"' in output
    assert f"latent input: {latent_dim} values" in output
    assert f"recognition outputs: {posterior_dim}" in output
    assert f"generator (input {latent_dim})" in output
    assert f"discriminator (input {image})" in output
    assert "recognition head Q" in output

    generator_section = output.split("generator (input")[1].split("discriminator")[0]
    generator_rows = [line.split() for line in generator_section.splitlines()]
    last_layer = [row for row in generator_rows if len(row) == 4][-1]
    assert last_layer[2] == image
    generator = architecture.build_generator(latent_dim)
    assert f"total parameters: {parameter_count(generator):,}" in generator_section

    head_section = output.split("recognition head Q")[1]
    head_rows = [line.split() for line in head_section.splitlines()]
    head_layers = [row for row in head_rows if len(row) == 4]
    assert head_layers[-1][1:3] == ["Linear", str(posterior_dim)]
    if config.architecture in ("infogan-faces", "infogan-chairs"):
        # The head is one Linear layer, the module itself, which has no name.
        count = f"{1024 * posterior_dim + posterior_dim:,}"
        assert head_layers == [["-", "Linear", str(posterior_dim), count]]
