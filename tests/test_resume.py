"""Exact resume after a real SIGKILL, and what a resume restores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlatent.checkpoint import list_checkpoints, load_checkpoint
from genlatent.errors import CheckpointError, RunFolderError
from genlatent.plugins import load_plugins
from genlatent.run import (
    batch_stream,
    build_trainer,
    prepare_experiment,
    prepare_run_folder,
    resolve_config,
    resume_run,
    run_experiment,
)
from genlatent.tracking import read_metrics

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
    lines = [line for line in path.read_text().splitlines() if line.strip()]
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


def test_resume_restores_optimizer_and_streams(tmp_path):
    # Run 100 steps, then compare a trainer rebuilt from the checkpoint with
    # the one that wrote it: Adam moments, the next latent draw and the next
    # batch must be identical.
    plugins = load_plugins()
    overrides = [*DETERMINISTIC, "trainer.max_steps=100", "wandb.mode=disabled"]
    config = resolve_config(EXPERIMENT, overrides, plugins=plugins)
    experiment = prepare_experiment(config, plugins)
    torch.manual_seed(0)
    trainer = build_trainer(config, plugins, torch.device("cpu"))
    stream = batch_stream(experiment)
    for _ in range(100):
        trainer.train_step(stream.next_batch())
    state = trainer.state_dict()
    state["data"] = stream.state_dict()

    torch.manual_seed(123)  # a different initialisation, overwritten by the load
    restored = build_trainer(config, plugins, torch.device("cpu"))
    restored.load_state_dict(state)
    restored_stream = batch_stream(experiment)
    restored_stream.load_state_dict(state["data"])

    saved = state["discriminator_optimizer"]["state"]
    loaded = restored.discriminator_optimizer.state_dict()["state"]
    for index, moments in saved.items():
        assert int(loaded[index]["step"]) == 100
        assert torch.equal(loaded[index]["exp_avg"], moments["exp_avg"])
        assert torch.equal(loaded[index]["exp_avg_sq"], moments["exp_avg_sq"])
    assert torch.equal(restored.sample_latent(16), trainer.sample_latent(16))
    assert torch.equal(restored_stream.next_batch(), stream.next_batch())


def test_resumed_update_is_not_fresh_adam(tmp_path):
    # A fresh Adam's first update moves every element by exactly lr.
    out = tmp_path / "run"
    overrides = [*DETERMINISTIC, "trainer.max_steps=50", "wandb.mode=disabled"]
    run_experiment(EXPERIMENT, overrides, out=out)
    before = final_state(out)["generator"]
    resume_run(out, ["trainer.max_steps=51"])
    after = final_state(out)["generator"]
    lr = 1e-3
    moved = [
        (after[name] - before[name]).abs()
        for name in before
        if before[name].is_floating_point() and name.endswith("weight")
    ]
    steps = torch.cat([delta.flatten() for delta in moved])
    assert not torch.allclose(steps, torch.full_like(steps, lr), rtol=0, atol=1e-9)


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
    resumed = start("resume", str(out))
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert "Step must only increase" not in stderr

    records = read_metrics(out)
    assert [record["step"] for record in records] == list(range(1, 301))

    runs = sorted(out.glob("wandb/offline-run-*"))
    run_ids = {path.name.rsplit("-", 1)[1] for path in runs}
    assert len(runs) == 2
    assert len(run_ids) == 1
    steps = [row["_step"] for row in read_history(out) if "d_loss" in row]
    assert steps == sorted(set(steps))
    assert steps[-1] == 300


def test_resume_without_checkpoint(tmp_path):
    out = tmp_path / "run"
    config = resolve_config(EXPERIMENT, ["wandb.mode=disabled"])
    prepare_run_folder(out, config, overwrite=False)
    with pytest.raises(RunFolderError, match="no readable checkpoint"):
        resume_run(out)


def test_resume_other_experiment(tmp_path):
    out = tmp_path / "run"
    run_experiment(
        EXPERIMENT,
        [*DETERMINISTIC, "trainer.max_steps=2", "wandb.mode=disabled"],
        out=out,
    )
    with pytest.raises(
        RunFolderError, match="contains a run of 'infogan-fashion-mnist'"
    ):
        run_experiment("infogan-mnist", resume=out)


def test_resume_with_changed_codes(tmp_path):
    out = tmp_path / "run"
    run_experiment(
        EXPERIMENT,
        [*DETERMINISTIC, "trainer.max_steps=2", "wandb.mode=disabled"],
        out=out,
    )
    with pytest.raises(CheckpointError) as error:
        resume_run(out, ["latent.c1.num_categories=12", "trainer.max_steps=4"])
    message = str(error.value)
    assert "does not fit experiment 'infogan-fashion-mnist'" in message
    assert "code 'c1'" in message
    assert "'num_categories': 12" in message
    assert "'num_categories': 10" in message


def test_truncated_checkpoint_falls_back(tmp_path, caplog):
    out = tmp_path / "run"
    run_experiment(
        EXPERIMENT,
        [*DETERMINISTIC, "trainer.max_steps=150", "wandb.mode=disabled"],
        out=out,
    )
    newest = list_checkpoints(out / "checkpoints")[-1]
    assert newest.name == "step_00000150.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="genlatent"):
        result = resume_run(out, ["trainer.max_steps=160"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert str(newest) in warnings[0]
    assert "unreadable" in warnings[0]
    assert result.steps == 160
    records = read_metrics(out)
    assert [record["step"] for record in records] == list(range(1, 161))
