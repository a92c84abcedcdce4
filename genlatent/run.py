"""Running an experiment: config resolution, the run folder and the loop.

:func:`run_experiment` is the Python API behind ``genlatent run``. A run folder
contains ``config.json`` (the resolved config), ``metrics.jsonl`` (one record per
logging step), ``samples/`` (PNG grids), ``checkpoints/`` and wandb's files.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import numpy as np
import torch
from torchvision.utils import save_image
from tqdm import tqdm

from genlatent.checkpoint import save_checkpoint
from genlatent.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
)
from genlatent.data import BatchStream, DatasetSource, ImageData
from genlatent.errors import ConfigError, DataError, RunFolderError
from genlatent.latent import LatentSpec
from genlatent.nn import Architecture
from genlatent.plugins import PluginHost, load_plugins
from genlatent.regularizers import Regularizer, RegularizerContext
from genlatent.tracking import MetricsLogger
from genlatent.trainer import AdversarialTrainer

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"


def resolve_config(
    experiment: str | ExperimentConfig,
    overrides: Sequence[str] = (),
    *,
    plugins: PluginHost | None = None,
) -> ExperimentConfig:
    """Look up an experiment, apply overrides and check every name it uses."""
    plugins = plugins or load_plugins()
    if isinstance(experiment, str):
        config = plugins.experiment(experiment)
    else:
        config = config_from_dict(
            config_to_dict(experiment), regularizer_configs(plugins)
        )
    apply_overrides(config, overrides)
    plugins.get("architectures", config.architecture)
    plugins.get("losses", config.loss)
    plugins.get("datasets", config.data.dataset)
    for name in config.regularizers:
        plugins.get("regularizers", name)
    LatentSpec.from_config(config.latent)
    return config


def regularizer_configs(plugins: PluginHost) -> dict[str, type]:
    """Config class of every registered regularizer, by name."""
    return {
        name: plugins.get("regularizers", name).config_class
        for name in plugins.names("regularizers")
    }


def select_device(name: str) -> torch.device:
    """Resolve ``auto`` to cuda, then mps, then cpu; check explicit choices."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name} but CUDA is not available; use "
            "trainer.device=cpu or auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"trainer.device={name} but MPS is not available; use "
            "trainer.device=cpu or auto"
        )
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


@attrs.frozen
class RunResult:
    """Outcome of a finished run: its folder, step count and last metrics."""

    run_dir: Path
    steps: int
    metrics: dict[str, float]
    interrupted: bool = False


@attrs.define
class Experiment:
    """An experiment's resolved parts, built and checked before any file is
    written."""

    config: ExperimentConfig
    latent_spec: LatentSpec
    architecture: Architecture
    dataset: DatasetSource
    data: ImageData
    device: torch.device


def prepare_experiment(config: ExperimentConfig, plugins: PluginHost) -> Experiment:
    """Load the data and check it against the networks."""
    latent_spec = LatentSpec.from_config(config.latent)
    architecture: Architecture = plugins.get("architectures", config.architecture)
    dataset: DatasetSource = plugins.get("datasets", config.data.dataset)
    device = select_device(config.trainer.device)
    data = dataset.load(config.data)
    if tuple(data.image_shape) != tuple(architecture.image_shape):
        raise DataError(
            f"data set {dataset.name!r} gives images of shape {data.image_shape}, "
            f"but architecture {architecture.name!r} expects "
            f"{architecture.image_shape}"
        )
    return Experiment(config, latent_spec, architecture, dataset, data, device)


def build_trainer(
    config: ExperimentConfig, plugins: PluginHost, device: torch.device
) -> AdversarialTrainer:
    """Build the networks, regularizers and optimizers of an experiment."""
    latent_spec = LatentSpec.from_config(config.latent)
    architecture: Architecture = plugins.get("architectures", config.architecture)
    context = RegularizerContext(
        architecture=architecture, latent_spec=latent_spec, device=device
    )
    regularizers: list[Regularizer] = [
        plugins.get("regularizers", name)(regularizer_config, context)
        for name, regularizer_config in config.regularizers.items()
    ]
    return AdversarialTrainer(
        config,
        architecture=architecture,
        latent_spec=latent_spec,
        loss=plugins.get("losses", config.loss),
        regularizers=regularizers,
        device=device,
    )


def prepare_run_folder(out: Path, config: ExperimentConfig, overwrite: bool) -> None:
    """Create ``out`` for a new run, rejecting a folder that contains another run."""
    existing = out / CONFIG_FILE
    if existing.exists() and not overwrite:
        raise RunFolderError(
            f"{out} already contains a run ({existing}); choose another --out, or "
            "pass --overwrite to replace it"
        )
    if overwrite and existing.exists():
        for name in ("metrics.jsonl", CONFIG_FILE):
            (out / name).unlink(missing_ok=True)
        for folder in (SAMPLES_DIR, CHECKPOINTS_DIR):
            for path in (out / folder).glob("*"):
                path.unlink()
    (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    (out / CHECKPOINTS_DIR).mkdir(exist_ok=True)
    (out / CONFIG_FILE).write_text(
        json.dumps(config_to_dict(config), indent=2) + "\n", encoding="utf-8"
    )


class _StopRequest:
    """Set by SIGINT or SIGTERM; the loop stops after the current step."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        logger.warning(
            "%s received: stopping after this step and writing a checkpoint",
            self.signal_name,
        )


@contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    request = _StopRequest()
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request)
    except ValueError:
        # Not the main thread: signals stay with the caller.
        pass
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _MetricAccumulator:
    """Sums step metrics on the device and reads them back once per record."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0

    def add(self, metrics: dict[str, torch.Tensor | float]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def means(self) -> dict[str, float]:
        if not self.count:
            return {}
        keys = list(self.sums)
        values = [
            torch.as_tensor(self.sums[key], dtype=torch.float32).cpu() for key in keys
        ]
        means = (torch.stack(values) / self.count).tolist()
        self.sums, self.count = {}, 0
        return dict(zip(keys, means, strict=True))


def _save_grid(
    images: torch.Tensor, output_range: tuple[float, float], path: Path
) -> None:
    low, high = output_range
    save_image((images.float().cpu() - low) / (high - low), path, nrow=8)


def run_experiment(
    experiment: str | ExperimentConfig,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    plugins: PluginHost | None = None,
) -> RunResult:
    """Train an experiment and return its run folder and final metrics.

    Args:
        experiment: a registered experiment name or a config.
        overrides: ``KEY=VALUE`` strings, for example ``trainer.max_steps=500``.
        out: the run folder; by default ``runs/<name>-<timestamp>``.
        overwrite: replace a run already in ``out``.
        plugins: a loaded plugin host; loaded from entry points when None.
    """
    plugins = plugins or load_plugins()
    config = resolve_config(experiment, overrides, plugins=plugins)
    seed_everything(config.trainer.seed, config.trainer.deterministic)
    prepared = prepare_experiment(config, plugins)
    trainer = build_trainer(config, plugins, prepared.device)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) if out is not None else Path("runs") / f"{config.name}-{stamp}"
    prepare_run_folder(run_dir, config, overwrite)
    logger.info("run folder %s, device %s", run_dir, prepared.device)
    stream = BatchStream(
        prepared.data,
        batch_size=config.trainer.batch_size,
        seed=config.trainer.seed,
        device=prepared.device,
        num_workers=config.data.num_workers,
    )
    metrics_logger = MetricsLogger(
        run_dir,
        config.wandb,
        run_name=run_dir.name,
        config=config_to_dict(config),
    )
    try:
        return _train(trainer, prepared, stream, metrics_logger, run_dir)
    finally:
        metrics_logger.close()


def _train(
    trainer: AdversarialTrainer,
    experiment: Experiment,
    stream: BatchStream,
    metrics_logger: MetricsLogger,
    run_dir: Path,
) -> RunResult:
    settings = experiment.config.trainer
    latent_spec = experiment.latent_spec
    entropies = {f"entropy/{name}": h for name, h in latent_spec.entropies().items()}
    # A fixed latent batch, drawn apart from the training stream, so every grid
    # shows the same codes and noise.
    sample_latent = latent_spec.sample(
        settings.num_samples,
        generator=torch.Generator().manual_seed(settings.seed + 1),
    )
    accumulator = _MetricAccumulator()
    last_record: dict[str, float] = {}
    interval_start, interval_steps = time.perf_counter(), 0

    def checkpoint() -> None:
        state = trainer.state_dict()
        state["data"] = stream.state_dict()
        state["config"] = json.dumps(config_to_dict(experiment.config))
        state["latent_spec"] = json.dumps(latent_spec.to_config())
        state["wandb_id"] = metrics_logger.wandb_id
        save_checkpoint(
            state, run_dir / CHECKPOINTS_DIR, trainer.step, settings.keep_checkpoints
        )

    progress = tqdm(
        total=settings.max_steps,
        initial=trainer.step,
        disable=not settings.progress,
        unit="step",
        dynamic_ncols=True,
        # Redraw often on a terminal; in a log file, write a line every 30 s.
        mininterval=0.2 if sys.stderr.isatty() else 30.0,
    )
    with _stop_on_signals() as stop, progress:
        while trainer.step < settings.max_steps and stop.signal_name is None:
            metrics = trainer.train_step(stream.next_batch())
            accumulator.add(metrics)
            interval_steps += 1
            step = trainer.step
            progress.update(1)
            is_last = step == settings.max_steps

            if step % settings.log_every == 0 or is_last:
                elapsed = time.perf_counter() - interval_start
                record = accumulator.means()
                record.update(entropies)
                record["images_per_s"] = interval_steps * settings.batch_size / elapsed
                metrics_logger.log(step, record)
                last_record = record
                progress.set_postfix(_progress_fields(record), refresh=False)
                interval_start, interval_steps = time.perf_counter(), 0

            if step % settings.sample_every == 0 or is_last:
                path = run_dir / SAMPLES_DIR / f"step_{step:08d}.png"
                images = trainer.generate(sample_latent)
                _save_grid(images, experiment.architecture.output_range, path)
                metrics_logger.log_images(step, {"samples": path})

            if step % settings.checkpoint_every == 0 or is_last:
                checkpoint()
        interrupted = stop.signal_name is not None
        if interrupted:
            checkpoint()
    return RunResult(run_dir, trainer.step, last_record, interrupted)


def _progress_fields(record: dict[str, float]) -> dict[str, str]:
    fields = {
        key.replace("mi/", "mi_"): f"{value:.3f}"
        for key, value in record.items()
        if key in ("d_loss", "g_loss") or key.startswith("mi/")
    }
    if math.isfinite(record.get("images_per_s", math.nan)):
        fields["img/s"] = f"{record['images_per_s']:.0f}"
    return fields


def read_config(run_dir: Path, plugins: PluginHost | None = None) -> ExperimentConfig:
    """Read a run folder's ``config.json``."""
    plugins = plugins or load_plugins()
    path = Path(run_dir) / CONFIG_FILE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(
            f"{run_dir} is not a run folder: {path} not found"
        ) from None
    return config_from_dict(data, regularizer_configs(plugins))
