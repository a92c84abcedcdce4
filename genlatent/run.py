"""Running an experiment: config resolution, the run folder and the loop.

:func:`run_experiment` is the Python API behind ``genlatent run``. A run folder
contains ``config.json`` (the resolved config), ``metrics.jsonl`` (one record per
logging step), ``samples/`` (PNG grids), ``checkpoints/`` and wandb's files.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import random
import shutil
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

from genlatent.checkpoint import (
    load_latest_checkpoint,
    remove_partial_files,
    save_checkpoint,
)
from genlatent.config import (
    ExperimentConfig,
    TrainerConfig,
    config_from_dict,
    config_to_dict,
    parse_override,
    set_override,
)
from genlatent.data import BatchStream, DatasetSource, ImageData
from genlatent.distributed import (
    World,
    any_rank,
    average_metrics,
    current_world,
    gather_objects,
    on_main_rank,
    rank_checkpoint_state,
    rank_seed,
    replicate,
    setup_process_group,
)
from genlatent.errors import CheckpointError, ConfigError, DataError, RunFolderError
from genlatent.latent import LatentSpec
from genlatent.losses import AdversarialLoss
from genlatent.models import Model
from genlatent.nn import Architecture
from genlatent.plugins import PluginHost, load_plugins
from genlatent.tracking import METRICS_FILE, MetricsLogger, read_metrics
from genlatent.trainer import Trainer
from genlatent.traversal import (
    TRAVERSALS_DIR,
    image_grid,
    naming_path,
    save_labelled_grid,
    traversal_inputs,
    traversal_label,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
# Rows of the traversal grid written per code at each sampling step, so a
# 10-way code or a 10-step sweep costs 100 generator outputs.
TRAINING_TRAVERSAL_ROWS = 10


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
            config_to_dict(experiment),
            regularizer_configs(plugins),
            loss_configs(plugins),
        )
    _fit_loss_config(config, plugins)
    for text in overrides:
        key, value = parse_override(text)
        set_override(config, key, value)
        if key == "loss":
            # Another loss takes other settings: start from its defaults.
            config.loss_config = None
            _fit_loss_config(config, plugins)
    model: Model = plugins.get("models", config.model)
    plugins.get("architectures", config.architecture)
    plugins.get("datasets", config.data.dataset)
    for name in config.regularizers:
        plugins.get("regularizers", name)
    LatentSpec.from_config(config.latent)
    model.check_config(config, plugins)
    return config


def _fit_loss_config(config: ExperimentConfig, plugins: PluginHost) -> None:
    """Give ``config`` its loss's default settings when it has none, and reject
    settings of another loss's kind."""
    loss: AdversarialLoss = plugins.get("losses", config.loss)
    if loss.config_class is None:
        if config.loss_config is not None:
            raise ConfigError(
                f"loss {config.loss!r} takes no settings, but loss_config is "
                f"{config.loss_config!r}; remove loss_config"
            )
        return
    if config.loss_config is None:
        config.loss_config = loss.config_class()
    elif not isinstance(config.loss_config, loss.config_class):
        raise ConfigError(
            f"loss_config is a {type(config.loss_config).__name__}, but loss "
            f"{config.loss!r} takes a {loss.config_class.__name__}"
        )


def loss_configs(plugins: PluginHost) -> dict[str, type | None]:
    """Config class of every registered adversarial loss (None for a loss
    without settings), by name."""
    return {
        name: plugins.get("losses", name).config_class
        for name in plugins.names("losses")
    }


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
    """Outcome of a finished run: its folder, step count and last metrics.

    Attributes:
        interrupted: a stop signal ended the run before ``trainer.max_steps``.
        stop_signal: the number of that signal; None when the run finished,
            or when another torchrun rank received the signal.
    """

    run_dir: Path
    steps: int
    metrics: dict[str, float]
    interrupted: bool = False
    stop_signal: int | None = None


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
    # A data.root that does not exist is a typo: it must not fall through
    # to another copy or a download.
    root = config.data.root
    if root is not None and not Path(root).is_dir():
        raise DataError(
            f"data.root={root} is not a folder; point data.root at the folder "
            f"that contains the {dataset.name} files, or leave it unset to search "
            "the default locations"
        )
    data = dataset.load(config.data)
    logger.info(
        "data set %s: %d images from %s", dataset.name, len(data), data.location
    )
    if root and not Path(data.location).resolve().is_relative_to(Path(root).resolve()):
        logger.warning(
            "data.root=%s has no %s data set; using the one found in %s",
            root,
            dataset.name,
            data.location,
        )
    if tuple(data.image_shape) != tuple(architecture.image_shape):
        raise DataError(
            f"data set {dataset.name!r} gives images of shape {data.image_shape}, "
            f"but architecture {architecture.name!r} expects "
            f"{architecture.image_shape}"
        )
    return Experiment(config, latent_spec, architecture, dataset, data, device)


def build_trainer(
    config: ExperimentConfig, plugins: PluginHost, device: torch.device
) -> Trainer:
    """Build the trainer of an experiment with its model (``config.model``)."""
    model: Model = plugins.get("models", config.model)
    return model.build_trainer(config, plugins, device)


def check_run_folder(out: Path, overwrite: bool) -> None:
    """Reject ``out`` when it contains another run and ``overwrite`` is off."""
    existing = out / CONFIG_FILE
    if existing.exists() and not overwrite:
        raise RunFolderError(
            f"{out} already contains a run ({existing}); choose another output "
            "folder (--out, or out= in Python), or pass --overwrite "
            "(overwrite=True) to replace it"
        )


def prepare_run_folder(out: Path, config: ExperimentConfig, overwrite: bool) -> None:
    """Create ``out`` for a new run, rejecting a folder that contains another run."""
    check_run_folder(out, overwrite)
    existing = out / CONFIG_FILE
    if overwrite and existing.exists():
        # Remove only what a run writes, so other files in the folder stay.
        for name in (METRICS_FILE, CONFIG_FILE, "eval.json"):
            (out / name).unlink(missing_ok=True)
        for folder in (SAMPLES_DIR, CHECKPOINTS_DIR, TRAVERSALS_DIR, "wandb"):
            shutil.rmtree(out / folder, ignore_errors=True)
    (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    (out / CHECKPOINTS_DIR).mkdir(exist_ok=True)
    (out / CONFIG_FILE).write_text(
        json.dumps(config_to_dict(config), indent=2) + "\n", encoding="utf-8"
    )


class _StopRequest:
    """Set by SIGINT or SIGTERM; the loop stops at ``stop_point``, the end of
    the current step unless :func:`stop_check_due` defers the check."""

    def __init__(self, stop_point: str) -> None:
        self.signal_name: str | None = None
        self.signal_number: int | None = None
        self.stop_point = stop_point

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal_number = signum
        self.signal_name = signal.Signals(signum).name
        logger.warning(
            "%s received: stopping %s and writing a checkpoint",
            self.signal_name,
            self.stop_point,
        )


@contextmanager
def _stop_on_signals(stop_point: str) -> Iterator[_StopRequest]:
    request = _StopRequest(stop_point)
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
    """Sums step metrics on the device and reads them back once per record.

    Each metric is averaged over the steps that reported it, since some
    appear only on some steps (``g_loss`` with ``trainer.n_critic`` above 1).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.count = 0

    def add(self, metrics: dict[str, torch.Tensor | float]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        """Sums and counts of the open interval, as plain floats and ints."""
        sums = {key: float(value) for key, value in self.sums.items()}
        return {"sums": sums, "counts": dict(self.counts), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = dict(state["sums"])
        self.count = int(state["count"])
        # Checkpoints written before per-metric counts had every metric on
        # every step.
        counts = state.get("counts") or {key: self.count for key in self.sums}
        self.counts = {key: int(value) for key, value in counts.items()}

    def means(self) -> dict[str, float]:
        if not self.count:
            return {}
        keys = list(self.sums)
        values = [
            torch.as_tensor(self.sums[key], dtype=torch.float32).cpu() for key in keys
        ]
        counts = torch.tensor([float(self.counts[key]) for key in keys])
        means = (torch.stack(values) / counts).tolist()
        self.sums, self.counts, self.count = {}, {}, 0
        return dict(zip(keys, means, strict=True))


def _save_grid(
    images: torch.Tensor, output_range: tuple[float, float], path: Path
) -> None:
    low, high = output_range
    with naming_path(path):
        save_image((images.float().cpu() - low) / (high - low), path, nrow=8)


def run_experiment(
    experiment: str | ExperimentConfig,
    overrides: Sequence[str] = (),
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: str | Path | None = None,
    plugins: PluginHost | None = None,
) -> RunResult:
    """Train an experiment and return its run folder and final metrics.

    Args:
        experiment: a registered experiment name or a config.
        overrides: ``KEY=VALUE`` strings, for example ``trainer.max_steps=500``.
        out: the run folder; by default ``runs/<name>-<timestamp>``.
        overwrite: replace a run already in ``out``.
        resume: continue the run in this folder instead of starting one (see
            :func:`resume_run`); ``experiment`` must name the same experiment.
        plugins: a loaded plugin host; loaded from entry points when None.
    """
    plugins = plugins or load_plugins()
    if resume is not None:
        name = experiment if isinstance(experiment, str) else experiment.name
        return resume_run(resume, overrides, experiment=name, plugins=plugins)
    config = resolve_config(experiment, overrides, plugins=plugins)
    world = _join_world(config)
    # Rank 0's time stamp names the folder on every rank.
    stamp = gather_objects(datetime.now().strftime("%Y%m%d-%H%M%S"))[0]
    run_dir = Path(out) if out is not None else Path("runs") / f"{config.name}-{stamp}"
    # Checked before the data loads, which can take a while; created after,
    # so that a failed load leaves no empty run folder.
    on_main_rank(lambda: check_run_folder(run_dir, overwrite))
    prepared = prepare_experiment(config, plugins)
    trainer = build_trainer(config, plugins, prepared.device)
    trainer.latent_generator.manual_seed(rank_seed(config.trainer.seed, world.rank))
    replicate(trainer, world)

    on_main_rank(lambda: prepare_run_folder(run_dir, config, overwrite))
    metrics_logger: MetricsLogger | None = None
    if world.is_main:
        logger.info("run folder %s, device %s", run_dir, prepared.device)
        metrics_logger = MetricsLogger(
            run_dir, config.wandb, run_name=run_dir.name, config=config_to_dict(config)
        )
    try:
        return _train(
            trainer, prepared, batch_stream(prepared), metrics_logger, run_dir
        )
    finally:
        if metrics_logger is not None:
            metrics_logger.close()


def _join_world(config: ExperimentConfig) -> World:
    """Join torchrun's process group, if any, and seed this rank's streams."""
    device = select_device(config.trainer.device)
    world = setup_process_group(config.trainer, device)
    seed = rank_seed(config.trainer.seed, world.rank)
    seed_everything(seed, config.trainer.deterministic)
    return world


def resume_run(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    experiment: str | None = None,
    plugins: PluginHost | None = None,
) -> RunResult:
    """Continue a run from its newest readable checkpoint.

    Networks, optimizers, every RNG stream, the data order and the metric
    log continue where the checkpoint left them, so the resumed run matches
    an uninterrupted one. ``metrics.jsonl`` records after the checkpoint's
    step are replaced by the resumed run's, and wandb, which already has
    them, receives only later steps. Overrides apply to the saved config, for
    example ``trainer.max_steps=10000`` to train longer.

    Raises:
        RunFolderError: ``run_dir`` contains no run, another experiment's run, or
            no readable checkpoint.
        CheckpointError: the checkpoint does not fit the experiment's codes or
            networks, or contains disallowed objects.
    """
    plugins = plugins or load_plugins()
    run_dir = Path(run_dir)
    saved = read_config(run_dir, plugins)
    if experiment is not None and saved.name != experiment:
        raise RunFolderError(
            f"{run_dir} contains a run of {saved.name!r}, not {experiment!r}; "
            f"resume it with `genlatent resume {run_dir}`"
        )
    config = resolve_config(saved, overrides, plugins=plugins)
    world = _join_world(config)
    # Rank 0 clears what a killed writer left before any rank lists the folder.
    on_main_rank(lambda: remove_partial_files(run_dir / CHECKPOINTS_DIR))
    found = load_latest_checkpoint(run_dir / CHECKPOINTS_DIR)
    if found is None:
        raise RunFolderError(
            f"{run_dir} has no readable checkpoint in {run_dir / CHECKPOINTS_DIR}; "
            "start a new run instead"
        )
    path, state = found
    check_checkpoint_fits(path, state, config)
    state = rank_checkpoint_state(world, state, state.get("ranks"))
    prepared = prepare_experiment(config, plugins)
    trainer = build_trainer(config, plugins, prepared.device)
    try:
        trainer.load_state_dict(state)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    replicate(trainer, world)
    stream = batch_stream(prepared)
    stream.load_state_dict(state["data"])
    metrics_logger: MetricsLogger | None = None
    if world.is_main:
        logged_through = truncate_metrics(run_dir, trainer.step)
        (run_dir / CONFIG_FILE).write_text(
            json.dumps(config_to_dict(config), indent=2) + "\n", encoding="utf-8"
        )
        logger.info("resuming %s from %s (step %d)", run_dir, path, trainer.step)
        metrics_logger = MetricsLogger(
            run_dir,
            config.wandb,
            run_name=run_dir.name,
            config=config_to_dict(config),
            wandb_id=state.get("wandb_id"),
            wandb_logged_through=logged_through,
            resend_lost_records=True,
        )
    try:
        return _train(
            trainer,
            prepared,
            stream,
            metrics_logger,
            run_dir,
            accumulator_state=state.get("accumulator"),
        )
    finally:
        if metrics_logger is not None:
            metrics_logger.close()


def check_checkpoint_fits(
    path: Path, state: dict[str, Any], config: ExperimentConfig
) -> None:
    """Raise CheckpointError naming what differs between a checkpoint and
    the experiment it is loaded into."""
    saved_codes = {code["name"]: code for code in json.loads(state["latent_spec"])}
    codes = {code["name"]: code for code in config.latent}
    differences = []
    for name in sorted(set(saved_codes) | set(codes)):
        if name not in codes:
            differences.append(f"code {name!r} is missing from the experiment")
        elif name not in saved_codes:
            differences.append(f"code {name!r} is not in the checkpoint")
        elif saved_codes[name] != codes[name]:
            differences.append(
                f"code {name!r} is {codes[name]} but was {saved_codes[name]}"
            )
    saved_architecture = json.loads(state["config"])["architecture"]
    if saved_architecture != config.architecture:
        differences.append(
            f"architecture is {config.architecture!r} but was {saved_architecture!r}"
        )
    if differences:
        raise CheckpointError(
            f"checkpoint {path} does not fit experiment {config.name!r}: "
            + "; ".join(differences)
        )


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop ``metrics.jsonl`` records after ``step``; return the last step
    that was logged before, so sinks that keep it are not sent it again."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return step
    records = read_metrics(run_dir)
    logged_through = max((record["step"] for record in records), default=0)
    kept = [record for record in records if record["step"] <= step]
    if len(kept) != len(records):
        temporary = path.with_suffix(".jsonl.tmp")
        temporary.write_text(
            "".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8"
        )
        os.replace(temporary, path)
    return max(logged_through, step)


def batch_stream(experiment: Experiment) -> BatchStream:
    """Build the training batch stream of a prepared experiment."""
    settings = experiment.config.trainer
    world = current_world()
    return BatchStream(
        experiment.data,
        batch_size=settings.batch_size,
        seed=settings.seed,
        device=experiment.device,
        num_workers=experiment.config.data.num_workers,
        rank=world.rank,
        world_size=world.world_size,
    )


def _train(
    trainer: Trainer,
    experiment: Experiment,
    stream: BatchStream,
    metrics_logger: MetricsLogger | None,
    run_dir: Path,
    accumulator_state: dict[str, Any] | None = None,
) -> RunResult:
    """Train to ``trainer.max_steps``; ``metrics_logger`` is None on every
    rank but rank 0, which alone writes to ``run_dir``."""
    settings = experiment.config.trainer
    world = current_world()
    latent_spec = experiment.latent_spec
    entropies = {f"entropy/{name}": h for name, h in latent_spec.entropies().items()}
    # A fixed latent batch, drawn apart from the training stream, so every grid
    # shows the same codes and noise.
    sample_latent = latent_spec.sample(
        settings.num_samples,
        generator=torch.Generator().manual_seed(settings.seed + 1),
    )
    accumulator = _MetricAccumulator()
    if accumulator_state is not None:
        accumulator.load_state_dict(accumulator_state)
    last_record: dict[str, float] = {}
    interval_start, interval_steps = time.perf_counter(), 0

    def checkpoint() -> None:
        # A run that diverged since the last check stops here, before the
        # checkpoint, so the last one written stays the last good one.
        trainer.raise_on_divergence()
        state = trainer.state_dict()
        state["data"] = stream.state_dict()
        state["accumulator"] = accumulator.state_dict()
        state["config"] = json.dumps(config_to_dict(experiment.config))
        state["latent_spec"] = json.dumps(latent_spec.to_config())
        state["genlatent_version"] = importlib.metadata.version("genlatent")
        if world.is_distributed:
            # Every rank's own streams and metric sums, by rank, so that each
            # rank resumes its own; the top-level ones are rank 0's.
            state["ranks"] = gather_objects(
                {"rng": state["rng"], "accumulator": state["accumulator"]}
            )
        if metrics_logger is not None:
            state["wandb_id"] = metrics_logger.wandb_id
        # The other ranks wait until the file is complete and fail with rank
        # 0's error if the save fails.
        on_main_rank(
            lambda: save_checkpoint(
                state,
                run_dir / CHECKPOINTS_DIR,
                trainer.step,
                settings.keep_checkpoints,
            )
        )

    progress = tqdm(
        total=settings.max_steps,
        initial=trainer.step,
        disable=not settings.progress or not world.is_main,
        unit="step",
        dynamic_ncols=True,
        # Redraw often on a terminal; in a log file, write a line every 30 s.
        mininterval=0.2 if sys.stderr.isatty() else 30.0,
    )
    stopping = False
    stop_point = (
        "after this step"
        if checks_stop_every_step(world, experiment.device)
        else "after the next log or checkpoint step"
    )
    with _stop_on_signals(stop_point) as stop, progress:
        while trainer.step < settings.max_steps and not stopping:
            metrics = trainer.train_step(stream.next_batch())
            accumulator.add(metrics)
            interval_steps += 1
            step = trainer.step
            progress.update(1)
            is_last = step == settings.max_steps

            if step % settings.log_every == 0 or is_last:
                trainer.raise_on_divergence()
                elapsed = time.perf_counter() - interval_start
                record = average_metrics(accumulator.means())
                record.update(entropies)
                num_images = interval_steps * settings.batch_size * world.world_size
                record["images_per_s"] = num_images / elapsed
                if metrics_logger is not None:
                    metrics_logger.log(step, record)
                last_record = record
                progress.set_postfix(_progress_fields(record), refresh=False)
                interval_start, interval_steps = time.perf_counter(), 0

            # A stop signal also ends the run with grids and a checkpoint.
            # Under torchrun the ranks agree on it (one all-reduce of a flag),
            # so that all of them stop after the same step.
            if stop_check_due(step, settings, world, experiment.device):
                stopping = any_rank(stop.signal_name is not None)
            if metrics_logger is not None and (
                step % settings.sample_every == 0 or is_last or stopping
            ):
                _save_grids(trainer, experiment, sample_latent, run_dir, metrics_logger)
            if step % settings.checkpoint_every == 0 or is_last or stopping:
                checkpoint()
    stop_signal = stop.signal_number if stopping else None
    return RunResult(run_dir, trainer.step, last_record, stopping, stop_signal)


def _save_grids(
    trainer: Trainer,
    experiment: Experiment,
    sample_latent: torch.Tensor,
    run_dir: Path,
    metrics_logger: MetricsLogger,
) -> None:
    """Write the sample grid of ``sample_latent`` and one traversal grid per
    code for the trainer's current step, and log them to wandb."""
    step = trainer.step
    settings = experiment.config.trainer
    latent_spec = experiment.latent_spec
    output_range = experiment.architecture.output_range
    path = run_dir / SAMPLES_DIR / f"step_{step:08d}.png"
    _save_grid(trainer.generate(sample_latent), output_range, path)
    logged = {"samples": path}
    for code in latent_spec.traversable_codes:
        # Seeded apart from the training stream, so every step's grid starts
        # from the same draws and resume stays exact.
        latent, num_columns = traversal_inputs(
            latent_spec,
            code.name,
            rows=TRAINING_TRAVERSAL_ROWS,
            generator=torch.Generator().manual_seed(settings.seed + 2),
        )
        grid = image_grid(trainer.generate(latent), output_range, num_columns)
        logged[f"traversal/{code.name}"] = save_labelled_grid(
            grid,
            f"step {step}, {traversal_label(latent_spec, code.name)}",
            run_dir / TRAVERSALS_DIR / f"step_{step:08d}_{code.name}.png",
        )
    metrics_logger.log_images(step, logged)


def checks_stop_every_step(world: World, device: torch.device) -> bool:
    """True unless the ranks of a torchrun run train on CUDA."""
    return not world.is_distributed or device.type != "cuda"


def stop_check_due(
    step: int, settings: TrainerConfig, world: World, device: torch.device
) -> bool:
    """Decide whether the training loop reads the stop flag after ``step``.

    One process, and torchrun ranks on CPU, read it after every step, so a
    signal stops the run at the end of the current step. Ranks on CUDA agree
    on it with an NCCL all-reduce whose result the host reads, which waits
    for every kernel queued so far. They read it only after log, checkpoint
    and last steps, where the host waits for the device anyway, so a signal
    stops them at the next such step. torchrun (torch 2.14.1) kills its
    workers ``--shutdown-timeout`` seconds (30 by default) after it forwards
    a signal. The stop checkpoint is therefore written only if that many
    seconds cover ``trainer.log_every`` steps. CPU ranks read the flag every
    step, because they are slower and gain nothing from skipping the check.
    """
    if checks_stop_every_step(world, device):
        return True
    return (
        step % settings.log_every == 0
        or step % settings.checkpoint_every == 0
        or step == settings.max_steps
    )


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
    return config_from_dict(data, regularizer_configs(plugins), loss_configs(plugins))
