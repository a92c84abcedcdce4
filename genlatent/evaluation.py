"""Evaluating a trained run: mutual information, clustering of real images and
FID.

:func:`evaluate_run` is the Python API behind ``genlatent eval``. It writes
``eval.json`` to the run folder with

- the lower bound L_I of every scored code on fresh generated samples, with the
  code's prior entropy H(c), its maximum;
- for labelled data sets, how well each categorical code, read by Q's argmax
  from real images, clusters them by label: accuracy under the best one-to-one
  matching of categories to classes, normalized mutual information and the
  adjusted Rand index;
- the Fréchet distance between real and generated images in the features of
  a named extractor.

FIDs computed over different features or conversions are not comparable, so
the result names the feature extractor, the input conversion and the sample
counts. A section that cannot be computed offline (clustering without labels,
FID on unlabelled data without Inception weights on disk) is left out, and
``skipped`` in the result gives the reason. A data set with a single split,
such as an image folder without a partition file, is evaluated on that split.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.clustering import (
    adjusted_rand_score,
    normalized_mutual_info_score,
)
from torchmetrics.image.fid import FrechetInceptionDistance

from genlatent.config import DataConfig
from genlatent.data import DatasetSource, ImageData
from genlatent.errors import DataError, ImageFormatError
from genlatent.feature_extractors import (
    INCEPTION_WEIGHTS_ENV,
    FeatureExtractor,
    feature_extractor_for,
    inception_weights_hint,
    local_inception_weights,
    require_inception_weights,
)
from genlatent.image_data import ImageFolderSource
from genlatent.inspection import LoadedRun, generate, predict_codes
from genlatent.latent import CategoricalCode
from genlatent.plugins import PluginHost, load_plugins

logger = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
# Generated images per forward pass.
GENERATE_BATCH_SIZE = 500


def to_uint8(images: torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
    """Convert float images in ``input_range`` to uint8 in [0, 255].

    ``low`` maps to 0 and ``high`` to 255, as ``round((x - low) / (high - low)
    * 255)``, with torch's round half to even. uint8 images pass through
    unchanged.

    Raises:
        ImageFormatError: a value lies outside ``input_range``. Values are never
            clamped, since clamping hides a wrong range.
    """
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ImageFormatError(
            f"images must be uint8 or floating point, got {images.dtype}"
        )
    low, high = input_range
    if images.numel():
        minimum, maximum = float(images.min()), float(images.max())
        if not (low <= minimum and maximum <= high):
            raise ImageFormatError(
                f"images must lie in [{low:g}, {high:g}], got values in "
                f"[{minimum:g}, {maximum:g}]; pass the range they were made in "
                "(the architecture's output_range)"
            )
    return ((images - low) / (high - low) * 255).round().to(torch.uint8)


def conversion_description(input_range: tuple[float, float]) -> str:
    """Describe :func:`to_uint8` for ``input_range`` as a simplified formula,
    such as ``round(x * 255)`` for [0, 1], for eval.json and the report."""
    low, high = input_range
    if low == 0:
        shifted = "x"
    elif low < 0:
        shifted = f"(x + {-low:g})"
    else:
        shifted = f"(x - {low:g})"
    span = high - low
    if span == 1:
        formula = f"{shifted} * 255"
    elif span == 255:
        formula = shifted.removeprefix("(").removesuffix(")")
    else:
        formula = f"{shifted} / {span:g} * 255"
    return f"round({formula}) to uint8 [0, 255]"


# -- clustering of real images ---------------------------------------------------


def contingency_table(
    predictions: torch.Tensor, labels: torch.Tensor
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Count ``(num_predicted, num_labels)`` co-occurrences of two labelings."""
    predicted = predictions.long().cpu().numpy()
    target = labels.long().cpu().numpy()
    table = np.zeros((predicted.max() + 1, target.max() + 1), dtype=np.int64)
    np.add.at(table, (predicted, target), 1)
    return table


def matched_accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of ``predictions`` under the best one-to-one matching of
    predicted categories to labels (the Hungarian algorithm).

    With more categories than labels, the unmatched categories count as
    errors.
    """
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ImageFormatError(
            f"predictions and labels must be equal-length 1-D tensors, got "
            f"{tuple(predictions.shape)} and {tuple(labels.shape)}"
        )
    if not len(labels):
        raise DataError("cannot score a clustering of zero images")
    table = contingency_table(predictions, labels)
    rows, columns = linear_sum_assignment(table, maximize=True)
    return float(table[rows, columns].sum()) / len(labels)


def clustering_scores(
    predictions: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Matched accuracy, normalized mutual information (arithmetic mean
    normalization) and adjusted Rand index of a clustering against labels."""
    predictions, labels = predictions.long().cpu(), labels.long().cpu()
    with warnings.catch_warnings():
        # torchmetrics (1.9.0) builds its contingency table with
        # torch.sparse_coo_tensor, which warns that sparse invariant checks are
        # off. The indices come from torch.unique, so they are valid and the
        # warning only clutters the eval output.
        warnings.filterwarnings(
            "ignore",
            message="Sparse invariant checks are implicitly disabled",
            category=UserWarning,
        )
        nmi = float(normalized_mutual_info_score(predictions, labels))
        ari = float(adjusted_rand_score(predictions, labels))
    return {
        "accuracy": matched_accuracy(predictions, labels),
        "nmi": nmi,
        "ari": ari,
    }


# -- FID ---------------------------------------------------------------------------


def frechet_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    extractor: FeatureExtractor,
    *,
    batch_size: int = GENERATE_BATCH_SIZE,
) -> float:
    """Compute the FID between two uint8 image sets in ``extractor``'s features.

    Raises:
        ImageFormatError: an image set is not uint8; convert float images with
            :func:`to_uint8` first.
    """
    for name, images in (("real", real), ("generated", fake)):
        if images.dtype != torch.uint8:
            raise ImageFormatError(
                f"{name} images must be uint8 in [0, 255] for FID, got "
                f"{images.dtype}; convert them with genlatent.evaluation.to_uint8"
            )
    metric = FrechetInceptionDistance(feature=extractor, normalize=False)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, images.shape[0], batch_size):
            metric.update(images[start : start + batch_size], real=is_real)
    return float(metric.compute())


# -- the whole evaluation ------------------------------------------------------------


@attrs.frozen
class GeneratedSet:
    """Generated images and the inputs that made them."""

    latent_input: torch.Tensor
    images: torch.Tensor


@torch.no_grad()
def generate_set(run: LoadedRun, num_samples: int, seed: int) -> GeneratedSet:
    """Generate ``num_samples`` images from prior draws, in batches."""
    spec = run.latent_spec
    generator = torch.Generator().manual_seed(seed)
    inputs, images = [], []
    for start in range(0, num_samples, GENERATE_BATCH_SIZE):
        size = min(GENERATE_BATCH_SIZE, num_samples - start)
        latent = spec.concat_input(spec.sample_values(size, generator=generator))
        inputs.append(latent)
        images.append(generate(run, latent))
    return GeneratedSet(torch.cat(inputs), torch.cat(images))


@torch.no_grad()
def mutual_information_on(
    run: LoadedRun, generated: GeneratedSet
) -> dict[str, dict[str, float | None]]:
    """L_I per scored code on generated images, in nats, with H(c)."""
    if run.recognize is None:
        return {}
    parts = []
    for start in range(0, generated.images.shape[0], GENERATE_BATCH_SIZE):
        images = generated.images[start : start + GENERATE_BATCH_SIZE]
        parts.append(run.recognize(images.to(run.device)).cpu())
    bounds = run.latent_spec.mutual_information(
        torch.cat(parts), generated.latent_input
    )
    entropies = run.latent_spec.entropies()
    return {
        name: {"lower_bound": float(bound), "entropy": entropies.get(name)}
        for name, bound in bounds.items()
    }


def dataset_splits(
    dataset: DatasetSource, data_config: DataConfig
) -> tuple[str, ...] | None:
    """Return the names of the splits ``dataset`` has on disk, or None for a
    source that does not expose them.

    An image folder without its partition file has the single split
    ``train``, made of every image found.
    """
    if not isinstance(dataset, ImageFolderSource):
        return None
    folder, _ = dataset.find_files(data_config)
    partition = dataset.partition
    if partition is None or not (folder / partition.file_name).is_file():
        return ("train",)
    return tuple(partition.splits)


def resolve_split(
    dataset: DatasetSource, splits: tuple[str, ...] | None, requested: str
) -> tuple[str, str | None]:
    """Pick the split to evaluate on, given the :func:`dataset_splits`.

    Returns:
        The split, and a note for eval.json when it is not ``requested``: a
        data set with a single split is evaluated on that split.
    """
    if splits is None or requested in splits or len(splits) != 1:
        return requested, None
    split = splits[0]
    note = (
        f"data set {dataset.name!r} has the single split {split!r}, so the real "
        f"images are from {split!r} in place of the requested {requested!r}"
    )
    return split, note


def load_split(
    run: LoadedRun, split: str, plugins: PluginHost
) -> tuple[DatasetSource, ImageData]:
    """Load a split of the run's data set."""
    dataset: DatasetSource = plugins.get("datasets", run.config.data.dataset)
    return dataset, dataset.load(attrs.evolve(run.config.data, split=split))


def _in_memory_images(data: ImageData) -> torch.Tensor:
    if data.images is not None:
        return data.images
    assert data.dataset is not None
    return torch.stack([data.dataset[i][0] for i in range(len(data))])


def evaluate_run(
    run: LoadedRun,
    *,
    split: str = "test",
    num_samples: int = 10_000,
    seed: int = 0,
    features: str = "auto",
    classifier_epochs: int = 2,
    plugins: PluginHost | None = None,
    write: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a loaded run and write ``eval.json`` to its folder.

    Args:
        run: the run, from :func:`genlatent.load_run`.
        split: the data set split of the real images. A data set with a single
            split is evaluated on that split, with a ``split_note``.
        num_samples: generated images for L_I and FID.
        seed: seed of the generated images' latent draws.
        features: the FID feature extractor: ``auto`` (Inception when its
            weights are on disk, else the classifier on labelled data, else
            no FID), ``inception`` or ``classifier``.
        classifier_epochs: training epochs of the default feature extractor,
            a classifier trained on the data set's labels, when no cached one
            was trained with these settings.
        plugins: a loaded plugin host; loaded from entry points when None.
        write: write ``RUN_DIR/eval.json``.
        progress: called with a line before each slow step.

    Returns:
        The contents of ``eval.json``. ``skipped`` maps each section left out
        (``clustering``, ``fid``) to the reason.

    Raises:
        DataError: the data cannot be loaded, or ``features="classifier"`` on
            a data set without labels.
    """
    plugins = plugins or load_plugins()
    report = progress or (lambda line: logger.info("%s", line))
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise DataError(f"num_samples must be an integer, got {num_samples!r}")
    if num_samples < 2:
        raise DataError(f"num_samples must be at least 2, got {num_samples}")
    dataset: DatasetSource = plugins.get("datasets", run.config.data.dataset)
    splits = dataset_splits(dataset, run.config.data)
    used_split, split_note = resolve_split(dataset, splits, split)
    # The feature classifier's accuracy is measured on the test split, or on
    # the only split there is.
    accuracy_split = "test" if splits is None or "test" in splits else used_split
    if split_note is not None:
        report(split_note)
    _, data = load_split(run, used_split, plugins)
    result: dict[str, Any] = {
        "experiment": run.config.name,
        "checkpoint": str(run.checkpoint_path),
        "step": run.step,
        "dataset": data.name,
        "split": used_split,
        "num_samples": num_samples,
        "seed": seed,
    }
    if split_note is not None:
        result["requested_split"] = split
        result["split_note"] = split_note
    skipped: dict[str, str] = {}
    # Decide before generating, so that a bad --features fails fast.
    fid_skip_reason = _fid_skip_reason(data, features)

    report(f"generating {num_samples} samples")
    generated = generate_set(run, num_samples, seed)
    result["mutual_information"] = mutual_information_on(run, generated)
    clustering_skip_reason = _clustering_skip_reason(run, data)
    real: torch.Tensor | None = None
    if clustering_skip_reason is None:
        real = _in_memory_images(data)
        result["clustering"] = _clustering(run, data, real)
    else:
        result["clustering"] = {}
        skipped["clustering"] = clustering_skip_reason

    if fid_skip_reason is None:
        if real is None:
            real = _in_memory_images(data)
        result["fid"] = _fid(
            run,
            dataset,
            generated,
            real,
            split=used_split,
            accuracy_split=accuracy_split,
            features=features,
            classifier_epochs=classifier_epochs,
            report=report,
        )
    else:
        result["fid"] = None
        skipped["fid"] = fid_skip_reason
        report(f"FID skipped: {fid_skip_reason}")
    result["skipped"] = skipped

    if write:
        path = run.run_dir / EVAL_FILE
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        # Debug level, because `genlatent eval` prints the path.
        logger.debug("wrote %s", path)
    return result


def _fid_skip_reason(data: ImageData, features: str) -> str | None:
    """Return why FID cannot be computed offline, or None when it can.

    Raises:
        DataError: ``features`` is ``inception`` and its weights are missing,
            or ``features`` is ``classifier`` and the data has no labels.
    """
    if features == "inception":
        require_inception_weights()
        return None
    if data.labels is not None:
        return None
    if features == "classifier":
        raise DataError(
            f"data set {data.name!r} has no labels, so no classifier can be "
            "trained for FID features; use --features auto or inception with "
            f"Inception weights on disk ({inception_weights_hint()})"
        )
    if local_inception_weights() is not None:
        return None
    return (
        f"data set {data.name!r} has no labels to train the classifier features "
        "on, and no Inception weights are on disk. To compute FID, install "
        f"torch-fidelity and put its Inception weights in "
        f"{inception_weights_hint()} (or set ${INCEPTION_WEIGHTS_ENV} to the "
        "file), then run genlatent eval again"
    )


def _fid(
    run: LoadedRun,
    dataset: DatasetSource,
    generated: GeneratedSet,
    real: torch.Tensor,
    *,
    split: str,
    accuracy_split: str,
    features: str,
    classifier_epochs: int,
    report: Callable[[str], None],
) -> dict[str, Any]:
    output_range = run.architecture.output_range
    extractor = feature_extractor_for(
        dataset,
        run.config.data,
        features=features,
        epochs=classifier_epochs,
        accuracy_split=accuracy_split,
        report=report,
    )
    num_generated = int(generated.images.shape[0])
    fid: dict[str, Any] = {
        "feature_extractor": extractor.name,
        "feature_extractor_description": extractor.description,
        "input_conversion": conversion_description(output_range),
        "num_generated_images": num_generated,
        "num_real_images": int(real.shape[0]),
        "real_split": split,
    }
    if extractor.test_accuracy is not None:
        fid["feature_extractor_test_accuracy"] = extractor.test_accuracy
        fid["feature_extractor_accuracy_split"] = extractor.accuracy_split
    report(f"computing FID with {extractor.name} features")
    fake = to_uint8(generated.images, output_range)
    fid["value"] = frechet_distance(real, fake, extractor)
    return fid


def _categorical_codes(run: LoadedRun) -> list[CategoricalCode]:
    return [
        code
        for code in run.latent_spec.scored_codes
        if isinstance(code, CategoricalCode)
    ]


def _clustering_skip_reason(run: LoadedRun, data: ImageData) -> str | None:
    if data.labels is None:
        return f"data set {data.name!r} has no labels"
    if run.recognize is None:
        return "the run has no recognition network Q to read codes from images"
    if not _categorical_codes(run):
        return "the run has no categorical code"
    return None


def _clustering(
    run: LoadedRun, data: ImageData, real: torch.Tensor
) -> dict[str, dict[str, float]]:
    labels = data.labels
    assert labels is not None
    num_classes = data.num_classes
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"data set {data.name!r} declares {num_classes} classes but has labels "
            f"{int(labels.min())}..{int(labels.max())}; its loader must map labels "
            f"to 0..{num_classes - 1}"
        )
    predictions = predict_codes(run, real)
    scores = {}
    for code in _categorical_codes(run):
        scores[code.name] = clustering_scores(
            predictions[code.name]["category"], labels
        )
        scores[code.name]["num_images"] = int(labels.shape[0])
        scores[code.name]["num_categories"] = code.num_categories
        scores[code.name]["num_classes"] = num_classes
    return scores


def format_report(result: dict[str, Any]) -> str:
    """Format an evaluation result as a short table."""
    lines = [
        f"{result['experiment']} at step {result['step']}, "
        f"{result['num_samples']} samples, real images: {result['dataset']} "
        f"{result['split']}"
    ]
    if result.get("split_note"):
        lines.append(f"note: {result['split_note']}")
    lines.append(f"{'code':10s} {'L_I (nats)':>11s} {'H(c)':>8s}")
    for name, values in result["mutual_information"].items():
        entropy = values["entropy"]
        entropy_text = "n/a" if entropy is None else f"{entropy:.3f}"
        lines.append(f"{name:10s} {values['lower_bound']:11.3f} {entropy_text:>8s}")
    if result["clustering"]:
        lines.append(f"{'code':10s} {'accuracy':>9s} {'NMI':>7s} {'ARI':>7s}")
        for name, scores in result["clustering"].items():
            lines.append(
                f"{name:10s} {scores['accuracy']:9.4f} {scores['nmi']:7.4f} "
                f"{scores['ari']:7.4f}"
            )
    skipped = result.get("skipped", {})
    if "clustering" in skipped:
        lines.append(f"clustering skipped: {skipped['clustering']}")
    fid = result["fid"]
    if fid is None:
        lines.append(f"FID skipped: {skipped.get('fid', 'no reason recorded')}")
        return "\n".join(lines)
    accuracy = fid.get("feature_extractor_test_accuracy")
    accuracy_text = "" if accuracy is None else f", test accuracy {accuracy:.4f}"
    lines.append(
        f"FID {fid['value']:.4f} ({fid['num_generated_images']} generated vs "
        f"{fid['num_real_images']} real images; features: "
        f"{fid['feature_extractor']}{accuracy_text}; input: "
        f"{fid['input_conversion']})"
    )
    if not math.isfinite(fid["value"]):
        lines.append("FID is not finite: use more samples than feature dimensions")
    return "\n".join(lines)
