"""Loading a trained run, and sampling, traversing and reading its codes.

:func:`load_run` rebuilds a run's networks from a checkpoint in eval mode.
:func:`sample`, :func:`traverse` and :func:`predict_codes` are the Python API
behind ``genlatent sample`` and ``genlatent traverse``. Every generator input
here is assembled by :meth:`LatentSpec.concat_input`, from draws made by
:meth:`LatentSpec.sample_values`, so it is laid out exactly as in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from genlatent.checkpoint import load_checkpoint, load_latest_checkpoint
from genlatent.config import ExperimentConfig, config_to_dict
from genlatent.data import scale_images
from genlatent.errors import (
    CheckpointError,
    ImageFormatError,
    LatentSpecError,
    RunFolderError,
)
from genlatent.latent import CategoricalCode, ContinuousCode, LatentSpec
from genlatent.nn import Architecture
from genlatent.plugins import PluginHost, load_plugins
from genlatent.run import (
    CHECKPOINTS_DIR,
    build_trainer,
    check_checkpoint_fits,
    read_config,
    resolve_config,
    select_device,
)
from genlatent.tracking import MetricsLogger, resolve_wandb_mode
from genlatent.trainer import AdversarialTrainer, RecognitionNetwork
from genlatent.traversal import (
    TRAVERSALS_DIR,
    image_grid,
    save_labelled_grid,
    traversal_inputs,
    traversal_label,
)

logger = logging.getLogger(__name__)

# Images per forward pass when reading codes from many images.
PREDICT_BATCH_SIZE = 500


@attrs.frozen
class LoadedRun:
    """A run's networks, restored from one checkpoint and in eval mode.

    Attributes:
        run_dir: the run folder.
        config: the run's resolved config.
        latent_spec: the generator's input.
        architecture: the architecture that built the networks.
        generator: maps ``(batch, latent_spec.input_dim)`` inputs to images in
            ``architecture.output_range`` (a VAE's decoder).
        discriminator: returns ``(logits, features)`` for images; None for a
            model without a discriminator.
        recognition_head: Q's head on the discriminator features; None when
            the run has no regularizer with a ``recognition_head`` or no
            discriminator.
        recognize: Q applied to images, mapping them to ``(batch,
            posterior_dim)`` posterior parameters; None when the model has no
            recognition network.
        device: where the networks live.
        step: training steps taken before the checkpoint.
        checkpoint_path: the checkpoint loaded.
        wandb_id: the wandb run id, or None when the run did not use wandb.
    """

    run_dir: Path
    config: ExperimentConfig
    latent_spec: LatentSpec
    architecture: Architecture
    generator: nn.Module
    discriminator: nn.Module | None
    recognition_head: nn.Module | None
    device: torch.device
    step: int
    checkpoint_path: Path
    wandb_id: str | None = None
    recognize: RecognitionNetwork | None = None


def load_run(
    run_dir: str | Path,
    checkpoint: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    plugins: PluginHost | None = None,
) -> LoadedRun:
    """Load a run's networks from its newest checkpoint, or from ``checkpoint``.

    Args:
        run_dir: the run folder.
        checkpoint: a checkpoint file, as a path or a file name in the run's
            ``checkpoints/`` folder; None loads the newest readable one.
        device: where to put the networks; None uses the run's
            ``trainer.device``.
        plugins: a loaded plugin host; loaded from entry points when None.

    Raises:
        RunFolderError: ``run_dir`` is not a run folder or has no readable
            checkpoint.
        UnsafeCheckpointError: the checkpoint contains objects that could run
            code when unpickled. Nothing in it was run.
        CheckpointError: the checkpoint is unreadable or does not fit the run.
    """
    plugins = plugins or load_plugins()
    run_dir = Path(run_dir)
    config = resolve_config(read_config(run_dir, plugins), plugins=plugins)
    path, state = _read_checkpoint(run_dir, checkpoint)
    check_checkpoint_fits(path, state, config)
    if device is None:
        resolved_device = select_device(config.trainer.device)
    else:
        resolved_device = torch.device(device)

    trainer = build_trainer(config, plugins, resolved_device)
    networks = trainer.networks()
    try:
        trainer.load_networks(state)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    for module in networks.values():
        module.eval()
    recognition_head = None
    if isinstance(trainer, AdversarialTrainer):
        recognition_head = trainer.recognition_head()
    return LoadedRun(
        run_dir=run_dir,
        config=config,
        latent_spec=trainer.latent_spec,
        architecture=trainer.architecture,
        generator=trainer.generator,
        discriminator=networks.get("discriminator"),
        recognition_head=recognition_head,
        device=resolved_device,
        step=int(state["step"]),
        checkpoint_path=path,
        wandb_id=state.get("wandb_id"),
        recognize=trainer.recognition_network(),
    )


def _read_checkpoint(
    run_dir: Path, checkpoint: str | Path | None
) -> tuple[Path, dict[str, Any]]:
    folder = run_dir / CHECKPOINTS_DIR
    if checkpoint is None:
        found = load_latest_checkpoint(folder)
        if found is None:
            raise RunFolderError(
                f"{run_dir} has no readable checkpoint in {folder}; train the run "
                "first or pass --checkpoint FILE"
            )
        return found
    path = Path(checkpoint)
    if not path.exists() and (folder / path).exists():
        path = folder / path
    return path, load_checkpoint(path)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def generate(run: LoadedRun, latent_input: torch.Tensor) -> torch.Tensor:
    """Generate images in ``run.architecture.output_range`` from latent inputs."""
    return run.generator(latent_input.to(run.device)).cpu()


def sample(run: LoadedRun, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Generate ``n`` images from latent inputs drawn from the priors.

    Returns:
        ``(n, *image_shape)`` images in ``run.architecture.output_range``;
        :func:`to_unit_range` maps them to [0, 1].
    """
    values = run.latent_spec.sample_values(n, generator=_seeded(seed))
    return generate(run, run.latent_spec.concat_input(values))


def traverse(
    run: LoadedRun,
    code: str,
    value_range: tuple[float, float] = (-2.0, 2.0),
    steps: int = 10,
    rows: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """Generate the traversal grid of one code (see :func:`traversal_inputs`).

    Returns:
        A ``(3, height, width)`` image grid in [0, 1], one row per draw.
    """
    latent_input, num_columns = traversal_inputs(
        run.latent_spec,
        code,
        value_range=value_range,
        steps=steps,
        rows=rows,
        generator=_seeded(seed),
    )
    images = generate(run, latent_input)
    return image_grid(images, run.architecture.output_range, num_columns)


def save_traversals(
    run: LoadedRun,
    codes: Sequence[str] | None = None,
    *,
    value_range: tuple[float, float] = (-2.0, 2.0),
    steps: int = 10,
    rows: int = 10,
    seed: int = 0,
    out: Path | None = None,
) -> list[Path]:
    """Write one labelled traversal PNG per code to ``out``
    (``RUN_DIR/traversals`` by default) and log them to the run's wandb run.

    Args:
        codes: names of the codes to traverse; None traverses every scored code.
    """
    names = (
        list(codes) if codes else [c.name for c in run.latent_spec.traversable_codes]
    )
    folder = out if out is not None else run.run_dir / TRAVERSALS_DIR
    paths = []
    for name in names:
        grid = traverse(run, name, value_range, steps, rows, seed)
        label = traversal_label(run.latent_spec, name, value_range)
        path = save_labelled_grid(grid, label, folder / f"{name}.png")
        # Debug level, because `genlatent traverse` prints each path.
        logger.debug("wrote traversal of %s to %s", name, path)
        paths.append(path)
    log_images_to_wandb(run, {f"traversal/{p.stem}": p for p in paths})
    return paths


def log_images_to_wandb(run: LoadedRun, images: dict[str, Path]) -> bool:
    """Log PNG files to the run's wandb run at the checkpoint's step.

    Returns False, logging nothing, when the run did not use wandb or its
    config now disables it.
    """
    if run.wandb_id is None or resolve_wandb_mode(run.config.wandb.mode) == "disabled":
        return False
    # Reopens the run by id with resume="allow", as a resumed training run does.
    metrics_logger = MetricsLogger(
        run.run_dir,
        run.config.wandb,
        run_name=run.run_dir.name,
        config=config_to_dict(run.config),
        wandb_id=run.wandb_id,
        wandb_logged_through=run.step - 1,
    )
    try:
        metrics_logger.log_images(run.step, images)
    finally:
        metrics_logger.close()
    return True


def _images_to_model_input(run: LoadedRun, images: torch.Tensor) -> torch.Tensor:
    expected = tuple(run.architecture.image_shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ImageFormatError(
            f"images must have shape (batch, {', '.join(map(str, expected))}), "
            f"got {tuple(images.shape)}"
        )
    output_range = run.architecture.output_range
    if images.dtype == torch.uint8:
        return scale_images(images, output_range, torch.float32)
    low, high = output_range
    if images.numel() and (images.min() < low or images.max() > high):
        raise ImageFormatError(
            f"float images must lie in the generator's output range [{low:g}, "
            f"{high:g}], got values in [{float(images.min()):g}, "
            f"{float(images.max()):g}]; pass uint8 images or rescale them"
        )
    return images.float()


@torch.no_grad()
def posterior_parameters(run: LoadedRun, images: torch.Tensor) -> torch.Tensor:
    """Run Q on images; return ``(batch, posterior_dim)`` outputs.

    ``images`` are uint8 in [0, 255] or floats in the generator's output range.
    """
    if run.recognize is None:
        raise LatentSpecError(
            f"run {run.run_dir} has no recognition network Q (no 'mi' "
            "regularizer), so its codes cannot be read from images"
        )
    outputs = []
    for start in range(0, images.shape[0], PREDICT_BATCH_SIZE):
        chunk = _images_to_model_input(run, images[start : start + PREDICT_BATCH_SIZE])
        outputs.append(run.recognize(chunk.to(run.device)).cpu())
    return torch.cat(outputs)


def predict_codes(
    run: LoadedRun, images: torch.Tensor
) -> dict[str, dict[str, torch.Tensor]]:
    """Read every scored code from images with Q.

    Returns:
        Per code: for a categorical code ``probabilities`` ``(batch,
        num_categories)`` and ``category`` ``(batch,)``, Q's argmax; for a
        continuous code the posterior ``mean`` and ``std``, ``(batch, dim)``.
    """
    params = run.latent_spec.split_posterior(posterior_parameters(run, images))
    predictions: dict[str, dict[str, torch.Tensor]] = {}
    for code in run.latent_spec.scored_codes:
        if isinstance(code, CategoricalCode):
            probabilities = code.posterior_probabilities(params[code.name])
            predictions[code.name] = {
                "probabilities": probabilities,
                "category": probabilities.argmax(dim=1),
            }
        elif isinstance(code, ContinuousCode):
            mean, log_std = code.posterior_mean_log_std(params[code.name])
            predictions[code.name] = {"mean": mean, "std": log_std.exp()}
        else:
            predictions[code.name] = {"params": params[code.name]}
    return predictions
