"""FID input handling, clustering scores and `genlatent eval` on a short real
Fashion-MNIST run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from genlatent.errors import ImageFormatError
from genlatent.evaluation import (
    clustering_scores,
    frechet_distance,
    matched_accuracy,
    to_uint8,
)
from genlatent.feature_extractors import FeatureExtractor, ImageClassifier
from genlatent.run import run_experiment

from .conftest import requires_fashion_mnist


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

    report = json.loads((run_dir / "eval.json").read_text())
    assert report["step"] == 2
    assert report["num_samples"] == 300
    assert set(report["mutual_information"]) == {"c1", "c2", "c3"}
    assert report["mutual_information"]["c1"]["entropy"] == pytest.approx(math.log(10))
    scores = report["clustering"]["c1"]
    assert 0.0 < scores["accuracy"] <= 1.0
    assert scores["num_images"] == 10_000

    fid = report["fid"]
    assert "fashion-mnist" in fid["feature_extractor"]
    assert fid["input_conversion"].startswith("round((x - 0) / (1 - 0) * 255)")
    assert fid["num_generated_images"] == 300
    assert fid["num_real_images"] == 10_000
    # One epoch gets this small classifier well past chance on Fashion-MNIST.
    assert fid["feature_extractor_test_accuracy"] > 0.6
    assert math.isfinite(fid["value"])
    cached = Path(os.environ["XDG_CACHE_HOME"]) / "genlatent" / "feature-extractors"
    assert (cached / "fashion-mnist.pt").is_file()
