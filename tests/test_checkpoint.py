"""Checkpoint files: atomic writes, retention, safe loading, full disks,
networks that do not fit, non-finite weights, and stopping a run with a
signal."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genlatent.checkpoint import (
    UnsafeCheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from genlatent.cli import main
from genlatent.errors import CheckpointError, DivergenceError
from genlatent.plugins import load_plugins
from genlatent.run import build_trainer, resolve_config
from genlatent.tracking import read_metrics

from .conftest import requires_fashion_mnist

SHORT = [
    "trainer.batch_size=16",
    "trainer.log_every=1",
    "trainer.sample_every=100000",
    "trainer.progress=false",
    "wandb.mode=disabled",
]


def state_at(step: int) -> dict:
    return {"step": step, "weights": torch.full((4,), float(step))}


def genlatent(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "genlatent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def logged_records(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(condition, process: subprocess.Popen[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- files ----------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    path = save_checkpoint(state_at(7), tmp_path, 7, keep=3)
    assert path.name == "step_00000007.pt"
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    assert torch.equal(loaded["weights"], torch.full((4,), 7.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000007.pt"]


def test_keeps_newest_checkpoints(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(state_at(step), tmp_path, step, keep=2)
    names = [path.name for path in list_checkpoints(tmp_path)]
    assert names == ["step_00000030.pt", "step_00000040.pt"]


def test_list_orders_by_step_number(tmp_path):
    for step in (100, 9, 1000):
        save_checkpoint(state_at(step), tmp_path, step, keep=5)
    steps = [load_checkpoint(path)["step"] for path in list_checkpoints(tmp_path)]
    assert steps == [9, 100, 1000]


def test_unwritable_folder_keeps_previous(tmp_path):
    save_checkpoint(state_at(1), tmp_path, 1, keep=3)
    # Root ignores permission bits, so the folder is made immutable instead.
    if subprocess.run(["chattr", "+i", str(tmp_path)]).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        with pytest.raises(CheckpointError) as error:
            save_checkpoint(state_at(2), tmp_path, 2, keep=3)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path)], check=True)
    message = str(error.value)
    assert "cannot write checkpoint" in message
    assert str(tmp_path / "step_00000002.pt") in message
    assert "Earlier checkpoints" in message
    assert [path.name for path in list_checkpoints(tmp_path)] == ["step_00000001.pt"]
    assert load_checkpoint(tmp_path / "step_00000001.pt")["step"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["step_00000001.pt"]


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for one test, a real file system that fills up.
    Skips where mounting is not permitted (not root, or a container without
    CAP_SYS_ADMIN)."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_keeps_previous(small_tmpfs):
    save_checkpoint(state_at(1), small_tmpfs, 1, keep=3)
    # 4 MB of weights on a 64 KiB file system. torch.save reports the failed
    # write as RuntimeError ("unexpected pos"), with the ENOSPC behind it.
    large = {"step": 2, "weights": torch.zeros(1_000_000)}
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(large, small_tmpfs, 2, keep=3)
    message = str(error.value)
    final = small_tmpfs / "step_00000002.pt"
    assert message.startswith(
        f"cannot write checkpoint {final}: No space left on device."
    )
    assert "\n" not in message
    cause = error.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == errno.ENOSPC
    assert [path.name for path in small_tmpfs.iterdir()] == ["step_00000001.pt"]
    assert load_checkpoint(small_tmpfs / "step_00000001.pt")["step"] == 1


def truncate(path: Path) -> bytes:
    """Cut ``path`` to half its size; return what is left."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def test_retention_keeps_new_before_damaged(tmp_path):
    # A damaged step-30 file, and a resumed run that saves step 20 with
    # keep=1: the new file stays, the older good one goes, the later one is
    # left to load_latest_checkpoint.
    for step in (10, 30):
        save_checkpoint(state_at(step), tmp_path, step, keep=3)
    truncate(tmp_path / "step_00000030.pt")
    save_checkpoint(state_at(20), tmp_path, 20, keep=1)
    names = [path.name for path in list_checkpoints(tmp_path)]
    assert names == ["step_00000020.pt", "step_00000030.pt"]
    assert load_checkpoint(tmp_path / "step_00000020.pt")["step"] == 20


def test_latest_renames_damaged(tmp_path, caplog):
    for step in (10, 20):
        save_checkpoint(state_at(step), tmp_path, step, keep=3)
    damaged = tmp_path / "step_00000020.pt"
    left = truncate(damaged)
    with caplog.at_level("WARNING", logger="genlatent"):
        found = load_latest_checkpoint(tmp_path)
    assert found is not None
    path, state = found
    assert path.name == "step_00000010.pt"
    assert state["step"] == 10
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"checkpoint {damaged} is unreadable")
    assert "renamed it to step_00000020.pt.corrupt" in warnings[0]
    assert [path.name for path in list_checkpoints(tmp_path)] == ["step_00000010.pt"]
    assert (tmp_path / "step_00000020.pt.corrupt").read_bytes() == left


def test_truncated_file_is_reported(tmp_path):
    path = save_checkpoint(state_at(3), tmp_path, 3, keep=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "step_00000001.pt")


# -- networks ---------------------------------------------------------------------


def cpu_trainer(*overrides: str):
    plugins = load_plugins()
    config = resolve_config("infogan-fashion-mnist", overrides, plugins=plugins)
    return build_trainer(config, plugins, torch.device("cpu"))


def test_networks_shape_mismatch(tmp_path):
    path = save_checkpoint(cpu_trainer().state_dict(), tmp_path, 0, keep=1)
    # 10 noise values instead of 62: the generator's first layer takes 22
    # inputs (10 categories, 2 continuous codes, 10 noise) instead of 74.
    smaller = cpu_trainer("latent.z.dim=10")
    with pytest.raises(CheckpointError) as error:
        smaller.load_networks(load_checkpoint(path))
    assert str(error.value) == (
        "checkpoint does not fit this experiment's generator network: "
        "0.0.weight has shape (1024, 74) in the checkpoint but shape (1024, 22) "
        "in the experiment"
    )


def test_nonfinite_buffer_blocks_state(tmp_path):
    trainer = cpu_trainer()
    trainer.step = 7
    trainer.state_dict()
    running_var = dict(trainer.discriminator.named_buffers())["trunk.1.1.running_var"]
    running_var[3] = float("inf")
    with pytest.raises(DivergenceError) as error:
        trainer.state_dict()
    assert str(error.value).startswith(
        "step 7: discriminator.trunk.1.1.running_var has 1 non-finite values of "
        f"{running_var.numel()}. The checkpoint of this step was not written"
    )


# -- errors on the command line -----------------------------------------------------


@pytest.fixture
def restore_cli_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command line replaces the genlatent logger's handlers and stops
    # propagation, which would hide later tests' records from caplog.
    cli_logger = logging.getLogger("genlatent")
    monkeypatch.setattr(cli_logger, "handlers", [])
    monkeypatch.setattr(cli_logger, "propagate", cli_logger.propagate)
    monkeypatch.setattr(cli_logger, "level", cli_logger.level)


@requires_fashion_mnist
def test_cli_full_metrics_file(tmp_path, capsys, restore_cli_logging):
    # metrics.jsonl links to /dev/full, where every write fails with ENOSPC.
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to("/dev/full")
    arguments = ["run", "infogan-fashion-mnist", *SHORT, "trainer.max_steps=2"]
    assert main([*arguments, "--out", str(out)]) == 1
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert errors == [
        f"genlatent: error: {out / 'metrics.jsonl'}: No space left on device"
    ]
    assert "Traceback" not in stderr

    debug_out = tmp_path / "debug"
    debug_out.mkdir()
    (debug_out / "metrics.jsonl").symlink_to("/dev/full")
    with pytest.raises(OSError) as error:
        main([*arguments, "--out", str(debug_out), "--debug"])
    assert error.value.errno == errno.ENOSPC
    assert error.value.filename == str(debug_out / "metrics.jsonl")


# -- code hidden in a pickle ------------------------------------------------------


class _WritesMarker:
    """Unpickling this object creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_malicious(path: Path, marker: Path) -> None:
    torch.save({"step": 5, "payload": _WritesMarker(marker)}, path)


def test_pickled_code_is_rejected(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "step_00000005.pt"
    write_malicious(path, marker)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_checkpoint(path)
    assert "disallowed objects" in str(error.value)
    assert str(path) in str(error.value)
    assert not marker.exists()
    # The same file does run code under full pickle, so the test can fail.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    torch.load(path, weights_only=False)
    assert marker.exists()


@requires_fashion_mnist
def test_resume_rejects_pickled_code(tmp_path):
    out = tmp_path / "run"
    finished = genlatent(
        "run", "infogan-fashion-mnist", *SHORT, "trainer.max_steps=2", "--out", str(out)
    )
    assert finished.wait(timeout=600) == 0, finished.communicate()[1]
    marker = tmp_path / "marker"
    write_malicious(out / "checkpoints" / "step_00000009.pt", marker)
    resumed = genlatent("run", "infogan-fashion-mnist", "--resume", str(out))
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 1
    assert "contains disallowed objects" in stderr
    assert "Traceback" not in stderr
    assert not marker.exists()


# -- signals and kills during a save ----------------------------------------------


@requires_fashion_mnist
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_with_checkpoint(tmp_path, signum):
    out = tmp_path / "run"
    process = genlatent(
        "run",
        "infogan-fashion-mnist",
        *SHORT,
        "trainer.max_steps=100000",
        "trainer.checkpoint_every=100000",
        "--out",
        str(out),
    )
    wait_for(lambda: logged_records(out) >= 5, process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=600)
    # The shell's status of a process killed by the signal: 130, 143.
    assert process.returncode == 128 + signum
    assert f"{signal.Signals(signum).name} received" in stderr
    step = read_metrics(out)[-1]["step"]
    assert f"interrupted at step {step}" in stdout
    (checkpoint,) = list_checkpoints(out / "checkpoints")
    assert load_checkpoint(checkpoint)["step"] == step
    # A stopped run leaves pictures of where it stopped.
    assert (out / "samples" / f"step_{step:08d}.png").is_file()


SLOW_SAVE = """
    # Test-only start-up hook: every checkpoint after the first is written
    # halfway, then the process sleeps, so a kill lands mid-write.
    import io
    import os
    import time

    import torch

    _real_save = torch.save
    _calls = []


    def _slow_save(obj, file, *args, **kwargs):
        _calls.append(1)
        if len(_calls) == 1 or not hasattr(file, "write"):
            return _real_save(obj, file, *args, **kwargs)
        buffer = io.BytesIO()
        _real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        open(os.environ["SLOW_SAVE_MARKER"], "w").close()
        time.sleep(600)
        file.write(data[len(data) // 2 :])


    torch.save = _slow_save
"""


@requires_fashion_mnist
def test_kill_during_save_keeps_loadable(tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(SLOW_SAVE))
    marker = tmp_path / "writing"
    out = tmp_path / "run"
    process = genlatent(
        "run",
        "infogan-fashion-mnist",
        *SHORT,
        "trainer.max_steps=40",
        "trainer.checkpoint_every=10",
        "--out",
        str(out),
        env={
            "PYTHONPATH": os.pathsep.join(
                [str(hooks), os.environ.get("PYTHONPATH", "")]
            ),
            "SLOW_SAVE_MARKER": str(marker),
        },
    )
    wait_for(marker.exists, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)

    folder = out / "checkpoints"
    final_names = [path.name for path in list_checkpoints(folder)]
    assert final_names == ["step_00000010.pt"]
    assert load_checkpoint(folder / "step_00000010.pt")["step"] == 10
    partial = [path for path in folder.iterdir() if path.name.endswith(".tmp")]
    assert len(partial) == 1
    assert partial[0].name.startswith(".step_00000020.pt.")

    resumed = genlatent("resume", str(out))
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert [record["step"] for record in read_metrics(out)] == list(range(1, 41))
    assert not partial[0].exists()
    assert f"removed partial checkpoint {partial[0]}" in stderr


def resident_kib(pid: int) -> tuple[int, int]:
    """Current and peak resident memory of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()[0] if value.split() else "0"
    return int(fields["VmRSS"]), int(fields["VmHWM"])


@pytest.mark.slow
@requires_fashion_mnist
def test_long_run_memory_stays_flat(tmp_path):
    # Resident memory after warm-up (step 100) must not grow by the end of a
    # 1000-step run with logging, sample grids and checkpoints all active.
    out = tmp_path / "run"
    process = genlatent(
        "run",
        "infogan-fashion-mnist",
        "trainer.max_steps=1000",
        "trainer.batch_size=32",
        "trainer.log_every=10",
        "trainer.sample_every=100",
        "trainer.checkpoint_every=100",
        "trainer.progress=false",
        "wandb.mode=offline",
        "--out",
        str(out),
    )
    samples = []
    try:
        wait_for(lambda: logged_records(out) >= 10, process, timeout=1800)
        after_warm_up, _ = resident_kib(process.pid)
        while process.poll() is None:
            try:
                samples.append(resident_kib(process.pid))
            except (FileNotFoundError, ProcessLookupError, KeyError):
                break
            time.sleep(0.5)
        _, stderr = process.communicate(timeout=1800)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    # Checkpoint writes add a transient buffer of the state's size (about
    # 90 MB here), so the medians of the first and last quarters of the run
    # are compared rather than single samples.
    quarter = max(len(samples) // 4, 1)
    early = statistics.median(current for current, _ in samples[:quarter])
    late = statistics.median(current for current, _ in samples[-quarter:])
    peak = max(peak for _, peak in samples)
    print(f"RSS KiB: warm-up {after_warm_up}, early {early}, late {late}, peak {peak}")
    assert late - early < 32 * 1024
    assert peak < 1.5 * 1024 * 1024
