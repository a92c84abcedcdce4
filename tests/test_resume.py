"""Exact resume after a real SIGKILL, and what a resume restores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlatent.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from genlatent.config import WandbConfig
from genlatent.errors import CheckpointError, DivergenceError, RunFolderError
from genlatent.plugins import load_plugins
from genlatent.run import (
    Experiment,
    batch_stream,
    build_trainer,
    prepare_experiment,
    prepare_run_folder,
    read_config,
    resolve_config,
    resume_run,
    run_experiment,
)
from genlatent.tracking import (
    MetricsLogger,
    read_metrics,
    read_wandb_records,
    wait_for_exit_record,
)
from genlatent.trainer import AdversarialTrainer

from .conftest import requires_fashion_mnist
from .wandb_records import read_history

pytestmark = [requires_fashion_mnist, pytest.mark.realdata]

EXPERIMENT = "infogan-fashion-mnist"
DETERMINISTIC = [
    "trainer.batch_size=16",
    "trainer.log_every=1",
    "trainer.checkpoint_every=50",
    "trainer.sample_every=100000",
    "trainer.deterministic=true",
    "trainer.device=cpu",
    "trainer.progress=false",
]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "genlatent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WANDB_SILENT": "true"},
    )


def finish(process: subprocess.Popen[str]) -> None:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    # The writer may be mid-line: only lines ended by a newline are complete.
    complete = path.read_text().split("\n")[:-1]
    lines = [line for line in complete if line.strip()]
    return json.loads(lines[-1])["step"] if lines else 0


def kill_after(process: subprocess.Popen[str], run_dir: Path, step: int) -> int:
    """SIGKILL ``process`` once ``metrics.jsonl`` reaches ``step``."""
    deadline = time.monotonic() + 600
    while logged_steps(run_dir) < step:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "run too slow"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return logged_steps(run_dir)


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])


def assert_same_tensors(first: dict, second: dict, what: str) -> None:
    assert first.keys() == second.keys(), what
    for name, value in first.items():
        other = second[name]
        if value.is_floating_point():
            assert torch.allclose(value, other, rtol=0, atol=1e-6), f"{what}.{name}"
        else:
            assert torch.equal(value, other), f"{what}.{name}"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    finish(
        start(
            "run",
            EXPERIMENT,
            *DETERMINISTIC,
            "trainer.max_steps=200",
            "wandb.mode=disabled",
            "--out",
            str(out),
        )
    )
    return out


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("killed") / "run"
    process = start(
        "run",
        EXPERIMENT,
        *DETERMINISTIC,
        "trainer.max_steps=200",
        "wandb.mode=disabled",
        "--out",
        str(out),
    )
    killed_at = kill_after(process, out, 130)
    finish(start("run", EXPERIMENT, "--resume", str(out)))
    return out, killed_at


def test_kill_landed_between_checkpoints(killed_and_resumed):
    _, killed_at = killed_and_resumed
    assert 130 <= killed_at < 200


def test_resumed_weights_match_straight_run(straight_run, killed_and_resumed):
    resumed, _ = killed_and_resumed
    straight_state, resumed_state = final_state(straight_run), final_state(resumed)
    assert resumed_state["step"] == straight_state["step"] == 200
    for part in ("generator", "discriminator", "regularizers"):
        assert_same_tensors(straight_state[part], resumed_state[part], part)


def test_resumed_losses_match_straight_run(straight_run, killed_and_resumed):
    resumed, _ = killed_and_resumed
    straight = read_metrics(straight_run)
    again = read_metrics(resumed)
    assert [r["step"] for r in again] == list(range(1, 201))
    for expected, record in zip(straight, again, strict=True):
        for key in ("d_loss", "g_loss", "mi/c1", "mi/c2"):
            assert record[key] == pytest.approx(expected[key], abs=1e-6), (
                record["step"],
                key,
            )


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def clone_moments(state: dict) -> dict[int, dict[str, torch.Tensor]]:
    return {
        index: {key: value.clone() for key, value in moments.items()}
        for index, moments in state["state"].items()
    }


def test_checkpoint_restores_adam_and_streams(straight_run, tmp_path):
    # The uninterrupted run's step-100 checkpoint goes through a trainer, a
    # second save_checkpoint and load_checkpoint into a trainer initialised
    # differently: both optimizers' moments, the latent stream and the batch
    # order must come out as saved.
    plugins = load_plugins()
    config = resolve_config(read_config(straight_run, plugins), plugins=plugins)
    experiment = prepare_experiment(config, plugins)
    saved = load_checkpoint(straight_run / "checkpoints" / "step_00000100.pt")
    optimizer_keys = ("discriminator_optimizer", "generator_optimizer")
    moments = {key: clone_moments(saved[key]) for key in optimizer_keys}

    first = build_trainer(config, plugins, torch.device("cpu"))
    first.load_state_dict(saved)
    first_stream = batch_stream(experiment)
    first_stream.load_state_dict(saved["data"])
    state = first.state_dict()
    state["data"] = first_stream.state_dict()
    path = save_checkpoint(state, tmp_path, first.step, keep=1)
    torch.manual_seed(123)  # another initialisation, which the load replaces
    restored = build_trainer(config, plugins, torch.device("cpu"))
    restored.load_state_dict(load_checkpoint(path))
    restored_stream = batch_stream(experiment)
    restored_stream.load_state_dict(load_checkpoint(path)["data"])

    assert restored.step == 100
    for key, optimizer in restored.optimizers().items():
        parameters = optimizer_parameters(optimizer)
        assert len(moments[key]) == len(parameters), key
        for index, parameter in enumerate(parameters):
            loaded = optimizer.state[parameter]
            assert loaded["step"].item() == 100, (key, index)
            assert torch.equal(loaded["exp_avg"], moments[key][index]["exp_avg"])
            assert torch.equal(loaded["exp_avg_sq"], moments[key][index]["exp_avg_sq"])

    # The uninterrupted run drew step 101's z and c from its latent stream in
    # the saved state, and its batch 101 from the data order after 100 batches.
    uninterrupted = torch.Generator().set_state(saved["rng"]["latent"])
    expected_latent = experiment.latent_spec.sample(16, generator=uninterrupted)
    drawn = restored.sample_latent(16)
    assert (drawn - expected_latent).abs().max().item() == 0.0
    reseeded = build_trainer(config, plugins, torch.device("cpu"))
    assert not torch.equal(reseeded.sample_latent(16), expected_latent)
    straight_stream = batch_stream(experiment)
    for _ in range(100):
        straight_stream.next_batch()
    expected_batch = straight_stream.next_batch()
    assert torch.equal(restored_stream.next_batch(), expected_batch)
    assert not torch.equal(batch_stream(experiment).next_batch(), expected_batch)


def first_update(
    trainer: AdversarialTrainer, experiment: Experiment, data_state: dict
) -> torch.Tensor:
    """Magnitudes of every element of the discriminator optimizer's next update,
    in float64."""
    parameters = optimizer_parameters(trainer.discriminator_optimizer)
    before = [parameter.detach().double() for parameter in parameters]
    stream = batch_stream(experiment)
    stream.load_state_dict(data_state)
    trainer.train_step(stream.next_batch())
    return torch.cat(
        [
            (parameter.detach().double() - old).abs().flatten()
            for parameter, old in zip(parameters, before, strict=True)
        ]
    )


def test_resumed_update_is_not_fresh_adam(straight_run):
    # Adam's first update from fresh moments is lr * g / (|g| + eps), which is
    # lr for every element with |g| >> eps. The tolerance is 0.1 % of lr:
    # float32 rounding of weights near 0.03 (spacing about 2e-9) and eps / |g|
    # put most fresh-Adam updates more than 1e-9 away from lr (measured: 10 %
    # within 1e-9, 98.6 % within 2e-7, on this run's step-100 checkpoint).
    plugins = load_plugins()
    config = resolve_config(read_config(straight_run, plugins), plugins=plugins)
    experiment = prepare_experiment(config, plugins)
    saved = load_checkpoint(straight_run / "checkpoints" / "step_00000100.pt")
    lr = config.optim.discriminator.lr
    assert lr == 2.0e-4
    assert config.trainer.batch_size == 16
    tolerance = 1e-3 * lr

    resumed = build_trainer(config, plugins, torch.device("cpu"))
    resumed.load_state_dict(saved)
    resumed_update = first_update(resumed, experiment, saved["data"])
    resumed_at_lr = ((resumed_update - lr).abs() <= tolerance).double().mean()
    assert resumed_at_lr.item() < 0.01

    # The fault: weights restored, Adam created anew.
    fresh = build_trainer(config, plugins, torch.device("cpu"))
    fresh.load_state_dict(saved)
    fresh.discriminator_optimizer = fresh.adam(
        optimizer_parameters(fresh.discriminator_optimizer),
        config.optim.discriminator,
    )
    fresh_update = first_update(fresh, experiment, saved["data"])
    fresh_at_lr = ((fresh_update - lr).abs() <= tolerance).double().mean()
    assert fresh_at_lr.item() > 0.9


# wandb-core 0.31 writes this line to logs/debug-internal.log, even when
# silent, when a logged step is below the current one, and drops the record.
# The user-facing form, "Tried to log to step N that is less than the current
# step M. Steps must be monotonically increasing", goes to stderr unless
# WANDB_SILENT is set.
WANDB_STEP_WARNINGS = (
    "ignoring partial history record",
    "Steps must be monotonically increasing",
)


def wandb_step_warnings(run_dir: Path) -> list[str]:
    """Lines of the wandb logs under ``run_dir`` that report a dropped step."""
    found = []
    for log in sorted(run_dir.glob("wandb/offline-run-*/logs/debug*.log")):
        found += [
            line
            for line in log.read_text(errors="replace").splitlines()
            if any(warning in line for warning in WANDB_STEP_WARNINGS)
        ]
    return found


def test_wandb_step_warning_detected(tmp_path):
    # The check below finds wandb's warning when a step does go back.
    metrics_logger = MetricsLogger(
        tmp_path, WandbConfig(mode="offline"), run_name="steps", config={}
    )
    metrics_logger.log(5, {"d_loss": 1.0})
    metrics_logger.log(3, {"d_loss": 2.0})
    metrics_logger.close()
    assert len(wandb_step_warnings(tmp_path)) == 1
    assert [row["_step"] for row in read_history(tmp_path)] == [5]


def test_close_leaves_complete_offline_run(tmp_path, caplog):
    metrics_logger = MetricsLogger(
        tmp_path, WandbConfig(mode="offline"), run_name="steps", config={}
    )
    metrics_logger.log(1, {"d_loss": 1.0})
    metrics_logger.close()
    # Read at once: close() returns only after wandb wrote the exit record.
    (record_log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    kinds = [
        record.WhichOneof("record_type") for record in read_wandb_records(record_log)
    ]
    assert kinds[-1] == "exit"
    assert [row["_step"] for row in read_history(tmp_path)] == [1]
    # A log cut before its exit record, as a killed run leaves it, times out.
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(record_log.read_bytes()[:-40])
    assert not wait_for_exit_record(cut, timeout_s=0.2)
    assert f"wandb has not finished writing {cut}" in caplog.text


LOSSES = ("d_loss", "g_loss", "mi/c1", "mi/c2")


def test_metrics_and_wandb_after_kill(tmp_path):
    out = tmp_path / "run"
    process = start(
        "run",
        EXPERIMENT,
        *DETERMINISTIC,
        "trainer.max_steps=300",
        "wandb.mode=offline",
        "--out",
        str(out),
    )
    kill_after(process, out, 212)
    killed = {record["step"]: record for record in read_metrics(out)}
    finish(start("resume", str(out)))

    records = read_metrics(out)
    assert [record["step"] for record in records] == list(range(1, 301))
    # The resume truncated the log to the step-200 checkpoint and logged 201
    # to 212 again: the deterministic losses repeat, the measured throughput
    # is new.
    by_step = {record["step"]: record for record in records}
    for step in range(201, 213):
        for key in LOSSES:
            assert by_step[step][key] == pytest.approx(killed[step][key], abs=1e-6)
        assert by_step[step]["images_per_s"] != killed[step]["images_per_s"], step

    runs = sorted(out.glob("wandb/offline-run-*"))
    run_ids = {path.name.rsplit("-", 1)[1] for path in runs}
    assert len(runs) == 2
    assert len(run_ids) == 1
    assert len(list(out.glob("wandb/offline-run-*/logs/debug-internal.log"))) == 2
    assert wandb_step_warnings(out) == []
    steps = [row["_step"] for row in read_history(out) if "d_loss" in row]
    assert steps == list(range(1, 301))


def test_resume_without_checkpoint(tmp_path):
    out = tmp_path / "run"
    config = resolve_config(EXPERIMENT, ["wandb.mode=disabled"])
    prepare_run_folder(out, config, overwrite=False)
    with pytest.raises(RunFolderError, match="no readable checkpoint"):
        resume_run(out)


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory) -> Path:
    """A finished 2-step run with its step-2 checkpoint. Tests that resume
    from it and write copy it first."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    run_experiment(
        EXPERIMENT,
        [*DETERMINISTIC, "trainer.max_steps=2", "wandb.mode=disabled"],
        out=out,
    )
    return out


def test_resume_other_experiment(two_step_run):
    with pytest.raises(
        RunFolderError, match="contains a run of 'infogan-fashion-mnist'"
    ):
        run_experiment("infogan-mnist", resume=two_step_run)


def test_resume_with_changed_codes(two_step_run):
    with pytest.raises(CheckpointError) as error:
        resume_run(two_step_run, ["latent.c1.num_categories=12", "trainer.max_steps=4"])
    message = str(error.value)
    assert "does not fit experiment 'infogan-fashion-mnist'" in message
    assert "code 'c1'" in message
    assert "'num_categories': 12" in message
    assert "'num_categories': 10" in message


def test_resume_with_changed_networks(two_step_run):
    # Layer norm in place of batch norm: same codes and architecture name, but
    # the discriminator has no running statistics.
    with pytest.raises(CheckpointError) as error:
        resume_run(two_step_run, ["discriminator_norm=layer", "trainer.max_steps=4"])
    message = str(error.value)
    assert "\n" not in message
    (checkpoint,) = list_checkpoints(two_step_run / "checkpoints")
    assert message.startswith(
        f"{checkpoint}: "
        "checkpoint does not fit this experiment's discriminator network: "
        "the checkpoint has trunk.1.1.running_mean, which the experiment's "
        "network lacks"
    )
    assert len(list_checkpoints(two_step_run / "checkpoints")) == 1


def test_nonfinite_weights_keep_checkpoint(two_step_run, tmp_path):
    # Fused Adam's first update at lr 1e39 (inf in float32) makes every
    # generator weight infinite, while the losses of that step, computed
    # before the update, are finite. The checkpoint of step 3 must be rejected.
    out = tmp_path / "run"
    shutil.copytree(two_step_run, out)
    overrides = ["optim.generator.lr=1e39", "trainer.max_steps=3"]
    with pytest.raises(DivergenceError) as error:
        resume_run(out, overrides)
    message = str(error.value)
    assert message.startswith("step 3: generator.0.0.weight has ")
    assert "The checkpoint of this step was not written" in message
    assert [path.name for path in list_checkpoints(out / "checkpoints")] == [
        "step_00000002.pt"
    ]
    assert load_checkpoint(out / "checkpoints" / "step_00000002.pt")["step"] == 2
    assert read_metrics(out)[-1]["step"] == 3


def test_truncated_checkpoint_falls_back(tmp_path, caplog):
    # Checkpoints at 10, 20 and 30; the newest is cut in half. A resume to
    # step 25 with keep_checkpoints=1 must continue from step 20 and keep its
    # own step-25 checkpoint, not the damaged step-30 file.
    out = tmp_path / "run"
    run_experiment(
        EXPERIMENT,
        [
            *DETERMINISTIC,
            "trainer.max_steps=30",
            "trainer.checkpoint_every=10",
            "wandb.mode=disabled",
        ],
        out=out,
    )
    folder = out / "checkpoints"
    newest = list_checkpoints(folder)[-1]
    assert newest.name == "step_00000030.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    overrides = ["trainer.max_steps=25", "trainer.keep_checkpoints=1"]
    with caplog.at_level("WARNING", logger="genlatent"):
        result = resume_run(out, overrides)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert str(newest) in warnings[0]
    assert "unreadable" in warnings[0]
    assert "renamed it to step_00000030.pt.corrupt" in warnings[0]
    assert result.steps == 25
    assert [path.name for path in list_checkpoints(folder)] == ["step_00000025.pt"]
    assert load_checkpoint(folder / "step_00000025.pt")["step"] == 25
    assert (folder / "step_00000030.pt.corrupt").read_bytes() == data[: len(data) // 2]
    records = read_metrics(out)
    assert [record["step"] for record in records] == list(range(1, 26))
