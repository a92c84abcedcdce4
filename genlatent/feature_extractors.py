"""Feature extractors for FID that work offline.

torchmetrics' default FID feature extractor, Inception v3, downloads its
weights on first use. genlatent never triggers that download. It uses
Inception only when torch-fidelity is installed and the weights file is already
on disk (``$GENLATENT_INCEPTION_WEIGHTS``, or torch hub's checkpoint folder).
Otherwise it uses a small CNN classifier trained on the data set's own labels,
cached per data set in ``<user cache folder>/feature-extractors/<dataset>.pt``.
For data without labels Inception is the only offline extractor, so without
its weights ``genlatent eval`` skips FID. FIDs over different extractors are not
comparable.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from genlatent.checkpoint import load_checkpoint, save_state
from genlatent.config import DataConfig
from genlatent.data import DatasetSource, ImageData, cache_folder
from genlatent.errors import CheckpointError, DataError, ImageFormatError

logger = logging.getLogger(__name__)

INCEPTION_WEIGHTS_ENV = "GENLATENT_INCEPTION_WEIGHTS"
# The file torch-fidelity downloads into torch hub's checkpoint folder.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
CLASSIFIER_ARCHITECTURE = "genlatent-cnn-v1"
CLASSIFIER_FEATURES = 128
CLASSIFIER_BATCH_SIZE = 128
CLASSIFIER_SEED = 0


class FeatureExtractor(nn.Module):
    """Maps uint8 images to ``(batch, num_features)`` float64 features.

    The input is ``(batch, channels, height, width)`` uint8 in [0, 255]. A
    gray batch given to a network that takes three channels is repeated into
    three bitwise-equal channels; any other channel mismatch raises.

    Args:
        network: maps uint8 ``(batch, in_channels, height, width)`` images to
            features.
        name: a short name, such as ``inception-v3-pool3``, used in eval.json,
            the report and the log.
        description: what the features are and how they were made, for
            eval.json.
        in_channels: the channel count ``network`` takes.
        num_features: the feature width.
        test_accuracy: the classifier's accuracy on a held-out split, for
            classifier features.
        accuracy_split: the split ``test_accuracy`` was measured on.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        description: str,
        in_channels: int,
        num_features: int,
        test_accuracy: float | None = None,
        accuracy_split: str | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.name = name
        self.description = description
        self.in_channels = in_channels
        # torchmetrics reads num_features instead of probing with a random image.
        self.num_features = num_features
        self.test_accuracy = test_accuracy
        self.accuracy_split = accuracy_split

    def adapt_channels(self, images: torch.Tensor) -> torch.Tensor:
        """Check a uint8 batch and give it the channel count of the network."""
        if images.dtype != torch.uint8:
            raise ImageFormatError(
                f"feature extractor {self.name} takes uint8 images in [0, 255], got "
                f"{images.dtype}; convert them with genlatent.evaluation.to_uint8"
            )
        if images.ndim != 4:
            raise ImageFormatError(
                f"feature extractor {self.name} takes (batch, channels, height, "
                f"width) images, got shape {tuple(images.shape)}"
            )
        channels = images.shape[1]
        if channels == self.in_channels:
            return images
        if channels == 1 and self.in_channels == 3:
            return images.repeat(1, 3, 1, 1)
        raise ImageFormatError(
            f"feature extractor {self.name} takes {self.in_channels}-channel "
            f"images, got {channels} channels"
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.network(self.adapt_channels(images))
        return features.reshape(features.shape[0], -1).double()


class ImageClassifier(nn.Module):
    """A small CNN classifier whose penultimate layer gives FID features.

    Two 4x4 stride-2 convolutions (32 and 64 channels), average pooling to
    4x4, then FC 128 (the features) and FC ``num_classes``. Takes uint8 images.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, CLASSIFIER_FEATURES),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(CLASSIFIER_FEATURES, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(batch, 128)`` features of uint8 images."""
        return self.trunk(images.float() / 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


class _ClassifierFeatures(nn.Module):
    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


def _images_and_labels(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    if data.labels is None:
        raise DataError(
            f"data set {data.name!r} has no labels, so no classifier can be "
            "trained for FID features; install torch-fidelity and the Inception "
            f"weights (${INCEPTION_WEIGHTS_ENV}) to use Inception features"
        )
    if data.images is not None:
        return data.images, data.labels
    assert data.dataset is not None
    images = torch.stack([data.dataset[i][0] for i in range(len(data))])
    return images, data.labels


@torch.no_grad()
def classifier_accuracy(classifier: ImageClassifier, data: ImageData) -> float:
    """Top-1 accuracy of ``classifier`` on a labelled data set."""
    images, labels = _images_and_labels(data)
    classifier.eval()
    correct = 0
    for start in range(0, len(labels), 1000):
        logits = classifier(images[start : start + 1000])
        correct += int((logits.argmax(dim=1) == labels[start : start + 1000]).sum())
    return correct / len(labels)


def train_classifier(
    train: ImageData, epochs: int, seed: int = CLASSIFIER_SEED
) -> tuple[ImageClassifier, int]:
    """Train an :class:`ImageClassifier` on a labelled split with Adam.

    Returns:
        The classifier in eval mode and the number of optimizer steps taken.
    """
    images, labels = _images_and_labels(train)
    if train.num_classes is None:
        raise DataError(f"data set {train.name!r} does not declare num_classes")
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)
    classifier = ImageClassifier(images.shape[1], train.num_classes)
    torch.set_rng_state(torch_state)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    steps = 0
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), CLASSIFIER_BATCH_SIZE):
            batch = order[start : start + CLASSIFIER_BATCH_SIZE]
            loss = F.cross_entropy(classifier(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    classifier.eval()
    return classifier, steps


def classifier_cache_path(dataset: str) -> Path:
    """Return the path where the feature classifier of ``dataset`` is cached."""
    return cache_folder() / "feature-extractors" / f"{dataset}.pt"


def load_or_train_classifier(
    dataset: DatasetSource,
    data_config: DataConfig,
    *,
    epochs: int,
    accuracy_split: str = "test",
    report: Callable[[str], None] | None = None,
) -> FeatureExtractor:
    """Load the cached feature classifier of a data set, or train and cache it.

    A cached classifier is reused only when it was trained with the same
    architecture and number of epochs. When it is trained, its accuracy is
    measured on ``accuracy_split``, which is the training split itself for a
    data set that has no other.
    """
    name = f"{CLASSIFIER_ARCHITECTURE}-{dataset.name}"
    path = classifier_cache_path(dataset.name)
    state = _read_cached_classifier(path, epochs)
    if state is None:
        if report is not None:
            report(
                f"training the {name} feature classifier for {epochs} "
                f"epoch(s); it is cached in {path}"
            )
        train = dataset.load(attrs.evolve(data_config, split="train"))
        if accuracy_split == "train":
            test = train
        else:
            test = dataset.load(attrs.evolve(data_config, split=accuracy_split))
        classifier, steps = train_classifier(train, epochs)
        state = {
            "step": steps,
            "architecture": CLASSIFIER_ARCHITECTURE,
            "epochs": epochs,
            "in_channels": int(train.image_shape[0]),
            "num_classes": int(classifier.classifier.out_features),
            "test_accuracy": classifier_accuracy(classifier, test),
            "accuracy_split": accuracy_split,
            "weights": classifier.state_dict(),
        }
        try:
            save_state(state, path)
        except OSError as error:
            logger.warning("cannot cache the feature classifier in %s: %s", path, error)
        else:
            logger.info("saved feature classifier to %s", path)
    classifier = ImageClassifier(state["in_channels"], state["num_classes"])
    classifier.load_state_dict(state["weights"])
    classifier.eval()
    return FeatureExtractor(
        _ClassifierFeatures(classifier),
        name=name,
        description=(
            f"{CLASSIFIER_ARCHITECTURE} classifier trained on {dataset.name} train "
            f"labels for {state['epochs']} epoch(s), {CLASSIFIER_FEATURES} "
            "penultimate features"
        ),
        in_channels=state["in_channels"],
        num_features=CLASSIFIER_FEATURES,
        test_accuracy=float(state["test_accuracy"]),
        # Classifiers cached without this field were measured on "test".
        accuracy_split=str(state.get("accuracy_split", "test")),
    )


def _read_cached_classifier(path: Path, epochs: int) -> dict[str, Any] | None:
    if not path.exists():
        return None
    # An unsafe cached file raises UnsafeCheckpointError, never loads.
    try:
        state = load_checkpoint(path)
    except CheckpointError as error:
        if type(error) is not CheckpointError:
            raise
        logger.warning("%s; training the feature classifier again", error)
        return None
    if state.get("architecture") != CLASSIFIER_ARCHITECTURE:
        return None
    if state.get("epochs") != epochs:
        return None
    return state


def inception_weights_hint() -> str:
    """Return where genlatent looks for the Inception weights, for messages."""
    default = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    return f"${INCEPTION_WEIGHTS_ENV} or {default}"


def require_inception_weights() -> Path:
    """Return the Inception weights file on disk.

    Raises:
        DataError: torch-fidelity or the weights file is missing.
    """
    weights = local_inception_weights()
    if weights is None:
        raise DataError(
            "Inception features need torch-fidelity and its weights file on disk, "
            f"in {inception_weights_hint()}; genlatent does not download them. "
            "Use --features classifier instead"
        )
    return weights


def local_inception_weights() -> Path | None:
    """Return the Inception weights file on disk, or None when torch-fidelity or the
    file is missing. Nothing is downloaded."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return None
    candidates = []
    if os.environ.get(INCEPTION_WEIGHTS_ENV):
        candidates.append(Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser())
    candidates.append(
        Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    )
    return next((path for path in candidates if path.is_file()), None)


def inception_extractor(weights: Path) -> FeatureExtractor:
    """Inception v3 pool features (2048) from torchmetrics, with local weights.

    NOTE: this path needs torch-fidelity and the weights file, which the test
    machine lacks, so it is untested here.
    """
    from torchmetrics.image.fid import NoTrainInceptionV3

    network = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048"],
        feature_extractor_weights_path=str(weights),
    )
    return FeatureExtractor(
        network,
        name="inception-v3-pool3",
        description=f"Inception v3 (torchmetrics, weights {weights}), 2048 pool "
        "features, gray images repeated to 3 channels",
        in_channels=3,
        num_features=2048,
    )


def feature_extractor_for(
    dataset: DatasetSource,
    data_config: DataConfig,
    *,
    features: str = "auto",
    epochs: int = 2,
    accuracy_split: str = "test",
    report: Callable[[str], None] | None = None,
) -> FeatureExtractor:
    """Pick the FID feature extractor.

    Args:
        features: ``inception`` (needs local weights), ``classifier``, or
            ``auto``: Inception when its weights are on disk, else the
            classifier.
        epochs: training epochs of the classifier.
        accuracy_split: the split the classifier's accuracy is measured on.
    """
    if features not in ("auto", "inception", "classifier"):
        raise DataError(
            f"unknown feature extractor {features!r}; use auto, inception or classifier"
        )
    if features == "inception":
        return inception_extractor(require_inception_weights())
    weights = None if features == "classifier" else local_inception_weights()
    if weights is not None:
        return inception_extractor(weights)
    return load_or_train_classifier(
        dataset,
        data_config,
        epochs=epochs,
        accuracy_split=accuracy_split,
        report=report,
    )
