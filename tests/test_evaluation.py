"""FID input handling and known values, clustering scores, and `genlatent eval`
on short runs: real Fashion-MNIST, SVHN ``.mat`` files and an unlabelled
CelebA-layout folder."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from genlatent.config import DataConfig
from genlatent.errors import DataError, ImageFormatError
from genlatent.evaluation import (
    EVAL_FILE,
    clustering_scores,
    conversion_description,
    evaluate_run,
    frechet_distance,
    matched_accuracy,
    to_uint8,
)
from genlatent.feature_extractors import (
    INCEPTION_WEIGHTS_ENV,
    FeatureExtractor,
    ImageClassifier,
)
from genlatent.image_data import SVHNSource
from genlatent.inspection import load_run
from genlatent.plugins import PluginHost, load_plugins
from genlatent.run import run_experiment

from .conftest import requires_fashion_mnist
from .test_image_data import write_celeba, write_svhn

# Overrides that keep a training run to a few seconds on a CPU.
QUICK_RUN = [
    "trainer.max_steps=2",
    "trainer.batch_size=8",
    "trainer.num_samples=8",
    "trainer.progress=false",
    "trainer.device=cpu",
    "data.download=false",
    "wandb.mode=disabled",
]


def svhn_folders() -> list[Path]:
    """Folders the SVHN source searches after data.root, in its lookup order.

    Read at import time, because the shared test fixtures remove
    $GENLATENT_DATA before each test.
    """
    folders = []
    if os.environ.get("GENLATENT_DATA"):
        folders.append(Path(os.environ["GENLATENT_DATA"]).expanduser() / "svhn")
    folders.append(Path("/usr/share/datasets/svhn"))
    return folders


REAL_SVHN = next(
    (
        folder
        for folder in svhn_folders()
        if (folder / "train_32x32.mat").is_file()
        and (folder / "test_32x32.mat").is_file()
    ),
    None,
)
requires_svhn = pytest.mark.skipif(
    REAL_SVHN is None,
    reason="needs SVHN's train_32x32.mat and test_32x32.mat in $GENLATENT_DATA/svhn "
    "or /usr/share/datasets/svhn",
)


@pytest.fixture(scope="module")
def plugins() -> PluginHost:
    return load_plugins()


@pytest.fixture
def no_inception_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point torch hub at an empty folder, so no Inception weights are found."""
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def classifier_extractor() -> FeatureExtractor:
    """Features of an untrained, seeded classifier: enough to compare FIDs."""
    torch.manual_seed(0)
    classifier = ImageClassifier(in_channels=1, num_classes=10)
    return FeatureExtractor(
        _Features(classifier),
        name="untrained",
        description="untrained classifier",
        in_channels=1,
        num_features=128,
    )


class _Features(nn.Module):
    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class _RecordingRGBNetwork(nn.Module):
    """A 3-channel network that keeps every batch it receives."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.received: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.received.append(images.clone())
        return self.conv(images.float() / 255.0).mean(dim=(2, 3))


def generator_like_batch(count: int) -> torch.Tensor:
    """Tanh outputs in [-1, 1], with both ends present."""
    generator = torch.Generator().manual_seed(5)
    images = torch.tanh(3 * torch.randn(count, 1, 28, 28, generator=generator))
    images[0, 0, 0, 0] = -1.0
    images[0, 0, 0, 1] = 1.0
    return images


# -- input conversion ---------------------------------------------------------------


def test_conversion_maps_range_ends():
    converted = to_uint8(torch.tensor([-1.0, 0.0, 1.0]), (-1.0, 1.0))
    assert converted.dtype == torch.uint8
    assert converted.tolist() == [0, 128, 255]
    unit = to_uint8(torch.tensor([0.0, 1.0]), (0.0, 1.0))
    assert unit.tolist() == [0, 255]


@pytest.mark.parametrize(
    ("input_range", "expected"),
    [
        ((0.0, 1.0), "round(x * 255) to uint8 [0, 255]"),
        ((-1.0, 1.0), "round((x + 1) / 2 * 255) to uint8 [0, 255]"),
        ((0.0, 255.0), "round(x) to uint8 [0, 255]"),
        ((-0.5, 0.5), "round((x + 0.5) * 255) to uint8 [0, 255]"),
        ((2.0, 6.0), "round((x - 2) / 4 * 255) to uint8 [0, 255]"),
    ],
)
def test_conversion_description_simplified(input_range, expected):
    assert conversion_description(input_range) == expected


@pytest.mark.parametrize(
    "input_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0), (-0.5, 0.5), (2.0, 6.0)]
)
def test_conversion_description_matches_to_uint8(input_range):
    # The formula is valid Python, and Python's round() rounds half to even
    # like torch.round, so it must give to_uint8's values.
    low, high = input_range
    formula = conversion_description(input_range).removesuffix(" to uint8 [0, 255]")
    values = torch.linspace(low, high, 37, dtype=torch.float64)
    expected = to_uint8(values, input_range).tolist()
    described = [eval(formula, {"round": round, "x": float(x)}) for x in values]
    assert described == expected


def test_clustering_scores_no_sparse_warning():
    # A subprocess, because torch emits this warning once per process, so an
    # earlier test could already have used it up.
    code = (
        "import torch\n"
        "from genlatent.evaluation import clustering_scores\n"
        "clustering_scores(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Sparse invariant checks" not in result.stderr


def test_fid_matches_hand_converted():
    fake = generator_like_batch(300)
    real = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    hand = torch.round((fake + 1) / 2 * 255).to(torch.uint8)
    ours = to_uint8(fake, (-1.0, 1.0))
    assert torch.equal(ours, hand)
    first = frechet_distance(real, ours, classifier_extractor())
    second = frechet_distance(real, hand, classifier_extractor())
    assert math.isfinite(first)
    assert abs(first - second) <= 1e-6


def identity_extractor(num_features: int) -> FeatureExtractor:
    """Features equal to the pixel values, so their moments are known."""
    return FeatureExtractor(
        nn.Flatten(),
        name="pixels",
        description="pixel values",
        in_channels=1,
        num_features=num_features,
    )


def test_fid_identical_sets_zero():
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (500, 1, 2, 2), generator=generator).to(torch.uint8)
    fid = frechet_distance(real, real.clone(), identity_extractor(4))
    assert abs(fid) < 1e-3


def test_fid_mean_shift_analytic():
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 200, (500, 1, 2, 2), generator=generator).to(torch.uint8)
    # Adding 50 to every pixel moves each of the 4 feature means by 50 and
    # leaves the covariance as it is, so FID = ||mu1 - mu2||^2 = 4 * 50^2.
    shifted = real + 50
    fid = frechet_distance(real, shifted, identity_extractor(4))
    assert fid == pytest.approx(10_000.0, abs=1e-3)


def test_conversion_rejects_out_of_range():
    images = torch.rand(4, 1, 28, 28)
    images[1, 0, 3, 3] = -0.25
    with pytest.raises(ImageFormatError, match=r"must lie in \[0, 1\]") as error:
        to_uint8(images, (0.0, 1.0))
    assert "-0.25" in str(error.value)


def test_fid_rejects_float_images():
    real = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with pytest.raises(ImageFormatError, match="uint8 in \\[0, 255\\]"):
        frechet_distance(real, torch.rand(4, 1, 28, 28), classifier_extractor())


def test_gray_batch_reaches_rgb_extractor():
    network = _RecordingRGBNetwork()
    extractor = FeatureExtractor(
        network, name="rgb", description="rgb", in_channels=3, num_features=8
    )
    gray = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    other = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    frechet_distance(gray, other, extractor, batch_size=20)
    received = network.received[0]
    assert received.shape == (20, 3, 28, 28)
    assert received.dtype == torch.uint8
    assert torch.equal(received[:, 0], received[:, 1])
    assert torch.equal(received[:, 0], received[:, 2])
    assert torch.equal(received[:, :1], gray)


def test_extractor_rejects_channel_mismatch():
    extractor = FeatureExtractor(
        _RecordingRGBNetwork(),
        name="rgb",
        description="",
        in_channels=3,
        num_features=8,
    )
    with pytest.raises(ImageFormatError, match="takes 3-channel images, got 2"):
        extractor(torch.zeros(2, 2, 28, 28, dtype=torch.uint8))


# -- clustering ---------------------------------------------------------------------


def test_matched_accuracy_permuted_labels():
    labels = torch.arange(10).repeat(7)
    permutation = torch.tensor([3, 7, 1, 0, 9, 2, 8, 5, 4, 6])
    assert matched_accuracy(permutation[labels], labels) == 1.0


def test_matched_accuracy_known_confusion():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    predictions = torch.tensor([1, 1, 1, 0, 0, 0, 0, 2, 2, 1])
    # Best matching: category 1 -> class 0 (3), 0 -> 1 (3), 2 -> 2 (1).
    assert matched_accuracy(predictions, labels) == 0.7


def test_matched_accuracy_extra_categories():
    labels = torch.tensor([0, 0, 1, 1])
    predictions = torch.tensor([0, 1, 2, 2])
    # Only one of categories 0 and 1 can match class 0.
    assert matched_accuracy(predictions, labels) == 0.75


def test_clustering_scores_known_values():
    perfect = clustering_scores(torch.tensor([2, 2, 0, 0]), torch.tensor([0, 0, 1, 1]))
    assert perfect == {"accuracy": 1.0, "nmi": pytest.approx(1.0), "ari": 1.0}
    # The prediction splits class 1 in two: I = ln 2, H = ln 2 and 1.5 ln 2, so
    # NMI = ln 2 / (1.25 ln 2) = 0.8; ARI = 4/7 as in scikit-learn's docs.
    split = clustering_scores(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 1, 1]))
    assert split["accuracy"] == 0.75
    assert split["nmi"] == pytest.approx(0.8, abs=1e-6)
    assert split["ari"] == pytest.approx(4 / 7, abs=1e-6)
    crossed = clustering_scores(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
    assert crossed["ari"] == pytest.approx(-0.5, abs=1e-6)
    assert crossed["nmi"] == pytest.approx(0.0, abs=1e-6)


# -- genlatent eval on a real run ---------------------------------------------------


@pytest.mark.realdata
@requires_fashion_mnist
def test_cli_eval_writes_eval_json(tmp_path):
    run_dir = run_experiment(
        "infogan-fashion-mnist",
        [
            "trainer.max_steps=2",
            "trainer.batch_size=16",
            "trainer.sample_every=100",
            "trainer.progress=false",
            "trainer.device=cpu",
            "wandb.mode=disabled",
        ],
        out=tmp_path / "run",
    ).run_dir

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genlatent",
            "eval",
            str(run_dir),
            "--num-samples",
            "300",
            "--features",
            "classifier",
            "--classifier-epochs",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "FID " in result.stdout
    assert result.stdout.count("eval.json") == 1
    assert "eval.json" not in result.stderr

    report = json.loads((run_dir / "eval.json").read_text())
    assert report["step"] == 2
    assert report["num_samples"] == 300
    assert set(report["mutual_information"]) == {"c1", "c2", "c3"}
    assert report["mutual_information"]["c1"]["entropy"] == pytest.approx(math.log(10))
    scores = report["clustering"]["c1"]
    assert 0.0 < scores["accuracy"] <= 1.0
    assert scores["num_images"] == 10_000

    fid = report["fid"]
    assert fid["feature_extractor"] == "genlatent-cnn-v1-fashion-mnist"
    assert fid["feature_extractor_description"].startswith(
        "genlatent-cnn-v1 classifier trained on fashion-mnist train labels"
    )
    assert fid["input_conversion"] == "round(x * 255) to uint8 [0, 255]"
    # The log and the printed table use the name that eval.json stores.
    assert "computing FID with genlatent-cnn-v1-fashion-mnist features" in (
        result.stderr
    )
    assert "features: genlatent-cnn-v1-fashion-mnist, " in result.stdout
    assert "Sparse invariant checks" not in result.stderr
    assert fid["num_generated_images"] == 300
    assert fid["num_real_images"] == 10_000
    # One epoch gets this small classifier well past chance on Fashion-MNIST.
    assert fid["feature_extractor_test_accuracy"] > 0.6
    assert math.isfinite(fid["value"])
    cached = Path(os.environ["XDG_CACHE_HOME"]) / "genlatent" / "feature-extractors"
    assert (cached / "fashion-mnist.pt").is_file()


# -- genlatent eval on an unlabelled image folder with a single split -------------


@pytest.fixture(scope="module")
def celeba_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 2-step infogan-celeba run on 24 generated JPEGs in CelebA's layout,
    without the partition file, so the only split is train."""
    base = tmp_path_factory.mktemp("celeba-eval")
    write_celeba(base / "data", 24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLATENT_NO_DOWNLOAD", "1")
        patch.setenv("XDG_CACHE_HOME", str(base / "cache"))
        result = run_experiment(
            "infogan-celeba",
            [f"data.root={base / 'data'}", *QUICK_RUN],
            out=base / "run",
        )
    yield result.run_dir


def test_eval_single_split_folder(
    celeba_run: Path, plugins: PluginHost, no_inception_weights: None
) -> None:
    run = load_run(celeba_run, plugins=plugins)
    result = evaluate_run(run, num_samples=16, plugins=plugins)

    assert result["split"] == "train"
    assert result["requested_split"] == "test"
    assert "single split 'train'" in result["split_note"]
    assert set(result["mutual_information"]) == {f"c{i}" for i in range(1, 11)}
    assert result["mutual_information"]["c1"]["entropy"] == pytest.approx(math.log(10))
    assert result["clustering"] == {}
    assert result["skipped"]["clustering"] == "data set 'celeba' has no labels"
    assert result["fid"] is None
    assert "no Inception weights are on disk" in result["skipped"]["fid"]
    assert "torch-fidelity" in result["skipped"]["fid"]
    assert INCEPTION_WEIGHTS_ENV in result["skipped"]["fid"]
    saved = json.loads((celeba_run / EVAL_FILE).read_text())
    assert saved == result


def test_eval_unlabelled_classifier_rejected(
    celeba_run: Path, plugins: PluginHost
) -> None:
    run = load_run(celeba_run, plugins=plugins)
    with pytest.raises(DataError, match="'celeba' has no labels") as error:
        evaluate_run(
            run, num_samples=16, features="classifier", plugins=plugins, write=False
        )
    assert "--features auto or inception" in str(error.value)


def test_cli_eval_single_split_folder(celeba_run: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genlatent",
            "eval",
            str(celeba_run),
            "--num-samples",
            "16",
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "WANDB_MODE": "disabled",
            "TORCH_HOME": str(tmp_path / "torch-home"),
        },
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "note: data set 'celeba' has the single split 'train'" in result.stdout
    assert "clustering skipped: data set 'celeba' has no labels" in result.stdout
    assert "FID skipped: data set 'celeba' has no labels" in result.stdout
    report = json.loads((celeba_run / EVAL_FILE).read_text())
    assert report["split"] == "train"
    assert set(report["skipped"]) == {"clustering", "fid"}


# -- SVHN: labels 1..10 with 10 meaning digit zero ----------------------------------


def test_eval_svhn_matches_ten_classes(
    tmp_path: Path, plugins: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SVHN's .mat files store digit zero as label 10. A loader that kept it
    # would give 11 classes and a wrong matching.
    folder = tmp_path / "svhn"
    write_svhn(folder, [1 + index % 10 for index in range(32)], split="train")
    write_svhn(folder, [1 + index % 10 for index in range(40)], split="test")
    # The feature classifier trained on these random images is cached apart
    # from the session's cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run_dir = run_experiment(
        "infogan-svhn",
        [f"data.root={folder}", *QUICK_RUN],
        out=tmp_path / "run",
        plugins=plugins,
    ).run_dir

    result = evaluate_run(
        load_run(run_dir, plugins=plugins),
        num_samples=32,
        features="classifier",
        classifier_epochs=1,
        plugins=plugins,
    )
    assert result["split"] == "test"
    assert "split_note" not in result
    assert set(result["clustering"]) == {"c1", "c2", "c3", "c4"}
    for name, scores in result["clustering"].items():
        assert scores["num_classes"] == 10, name
        assert scores["num_categories"] == 10, name
        assert scores["num_images"] == 40, name
        assert 0.0 <= scores["accuracy"] <= 1.0, name
    assert result["skipped"] == {}
    assert result["fid"]["num_real_images"] == 40
    assert result["fid"]["feature_extractor_accuracy_split"] == "test"


@pytest.mark.slow
@requires_svhn
def test_real_svhn_split_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Through the lookup order, not data.root: $GENLATENT_DATA, then the
    # system data set folder.
    assert REAL_SVHN is not None
    if REAL_SVHN.parent != Path("/usr/share/datasets"):
        monkeypatch.setenv("GENLATENT_DATA", str(REAL_SVHN.parent))
    monkeypatch.delenv("GENLATENT_SYSTEM_DATASETS", raising=False)
    source = SVHNSource()
    for split, count in (("train", 73_257), ("test", 26_032)):
        data = source.load(DataConfig(dataset="svhn", split=split, download=False))
        assert data.images is not None
        assert data.labels is not None
        assert tuple(data.images.shape) == (count, 3, 32, 32), split
        assert data.labels.shape == (count,), split
        assert data.labels.dtype == torch.int64, split
        assert set(data.labels.unique().tolist()) == set(range(10)), split
