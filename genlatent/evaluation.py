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
counts.
"""

from __future__ import annotations

import json
import logging
import math
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

from genlatent.data import DatasetSource, ImageData
from genlatent.errors import DataError, ImageFormatError
from genlatent.feature_extractors import (
    FeatureExtractor,
    feature_extractor_for,
)
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
    """Describe :func:`to_uint8` for ``input_range``, for eval.json."""
    low, high = input_range
    return f"round((x - {low:g}) / ({high:g} - {low:g}) * 255) to uint8 [0, 255]"


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
    return {
        "accuracy": matched_accuracy(predictions, labels),
        "nmi": float(normalized_mutual_info_score(predictions, labels)),
        "ari": float(adjusted_rand_score(predictions, labels)),
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
        split: the data set split of the real images.
        num_samples: generated images for L_I and FID.
        seed: seed of the generated images' latent draws.
        features: the FID feature extractor: ``auto`` (Inception when its
            weights are on disk, else the classifier), ``inception`` or
            ``classifier``.
        classifier_epochs: training epochs of the default feature extractor,
            a classifier trained on the data set's labels, when no cached one
            was trained with these settings.
        plugins: a loaded plugin host; loaded from entry points when None.
        write: write ``RUN_DIR/eval.json``.
        progress: called with a line before each slow step.

    Returns:
        The contents of ``eval.json``.
    """
    plugins = plugins or load_plugins()
    report = progress or (lambda line: logger.info("%s", line))
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise DataError(f"num_samples must be an integer, got {num_samples!r}")
    if num_samples < 2:
        raise DataError(f"num_samples must be at least 2, got {num_samples}")
    dataset, data = load_split(run, split, plugins)
    real = _in_memory_images(data)
    result: dict[str, Any] = {
        "experiment": run.config.name,
        "checkpoint": str(run.checkpoint_path),
        "step": run.step,
        "dataset": data.name,
        "split": split,
        "num_samples": num_samples,
        "seed": seed,
    }

    report(f"generating {num_samples} samples")
    generated = generate_set(run, num_samples, seed)
    result["mutual_information"] = mutual_information_on(run, generated)
    result["clustering"] = _clustering(run, data, real)

    output_range = run.architecture.output_range
    extractor = feature_extractor_for(
        dataset,
        run.config.data,
        features=features,
        epochs=classifier_epochs,
        report=report,
    )
    fid: dict[str, Any] = {
        "feature_extractor": extractor.description,
        "input_conversion": conversion_description(output_range),
        "num_generated_images": num_samples,
        "num_real_images": int(real.shape[0]),
        "real_split": split,
    }
    if extractor.test_accuracy is not None:
        fid["feature_extractor_test_accuracy"] = extractor.test_accuracy
    report(f"computing FID with {extractor.name}")
    fake = to_uint8(generated.images, output_range)
    fid["value"] = frechet_distance(real, fake, extractor)
    result["fid"] = fid

    if write:
        path = run.run_dir / EVAL_FILE
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %s", path)
    return result


def _clustering(
    run: LoadedRun, data: ImageData, real: torch.Tensor
) -> dict[str, dict[str, float]]:
    categorical = [
        code
        for code in run.latent_spec.scored_codes
        if isinstance(code, CategoricalCode)
    ]
    if data.labels is None or not categorical or run.recognize is None:
        return {}
    predictions = predict_codes(run, real)
    scores = {}
    for code in categorical:
        scores[code.name] = clustering_scores(
            predictions[code.name]["category"], data.labels
        )
        scores[code.name]["num_images"] = int(data.labels.shape[0])
    return scores


def format_report(result: dict[str, Any]) -> str:
    """Format an evaluation result as a short table."""
    lines = [
        f"{result['experiment']} at step {result['step']}, "
        f"{result['num_samples']} samples, real images: {result['dataset']} "
        f"{result['split']}"
    ]
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
    fid = result["fid"]
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
