"""Compare a real ``genlatent run`` with the training step alone.

The script runs the ``genlatent`` command twice in a subprocess, for a short
and a long step budget, on the experiment's real data set. The difference of
the two wall times covers ``long - short`` steps with everything a run does
around them: batch assembly, metric logging, sample and traversal grids,
checkpoints and the progress bar. Start-up costs, such as importing torch and
loading the data set, cancel because both runs pay them once. It then times
``trainer.train_step`` alone, in this process, on batches of the same data
set, and reports the ratio of the two rates. The longer run's peak resident
memory is reported too.

Example::

    python benchmarks/end_to_end.py --experiment infogan-fashion-mnist \\
        --device cpu --batch-size 128

Without overrides, both runs write sample grids and checkpoints every 250
steps: grids twice as often as the experiments' default
(``trainer.sample_every=500``) and checkpoints four times as often
(``trainer.checkpoint_every=1000``), so the measured overhead is an upper
bound for the defaults. Overrides given on the command line replace these two.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from throughput import time_step

from genlatent.plugins import load_plugins
from genlatent.run import (
    batch_stream,
    build_trainer,
    prepare_experiment,
    resolve_config,
)

DEFAULT_OVERRIDES = ("trainer.sample_every=250", "trainer.checkpoint_every=250")


def timed_run(
    experiment: str, steps: int, overrides: list[str], out: Path
) -> tuple[float, int]:
    """Run ``genlatent run`` for ``steps`` steps; return wall seconds and the
    child's peak resident memory in bytes."""
    command = [
        sys.executable,
        "-m",
        "genlatent",
        "run",
        experiment,
        "--out",
        str(out),
        "--overwrite",
        f"trainer.max_steps={steps}",
        "trainer.progress=false",
        *overrides,
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    # wait4 returns this child's own resource usage, where getrusage(CHILDREN)
    # would report the maximum over every child waited for so far.
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`{' '.join(command)}` failed with status {status}")
    # ru_maxrss is in KiB on Linux.
    return elapsed, usage.ru_maxrss * 1024


def step_only_rates(
    experiment: str, overrides: list[str], args: argparse.Namespace
) -> list[float]:
    """Images/s of ``trainer.train_step`` on batches of the real data set."""
    plugins = load_plugins()
    config = resolve_config(experiment, overrides, plugins=plugins)
    prepared = prepare_experiment(config, plugins)
    trainer = build_trainer(config, plugins, prepared.device)
    batches = batch_stream(prepared)
    # One fixed batch per call keeps batch assembly out of the step-only rate.
    real = batches.next_batch()
    return time_step(
        trainer.train_step,
        real,
        prepared.device,
        warmup=args.warmup,
        steps=args.timed_steps,
        repeats=args.repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="infogan-fashion-mnist")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--steps",
        type=int,
        nargs=2,
        default=[50, 550],
        metavar=("SHORT", "LONG"),
        help="step budgets of the two runs",
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timed-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"config overrides for both (default: {' '.join(DEFAULT_OVERRIDES)})",
    )
    args = parser.parse_args()
    short, long = args.steps
    if not 0 < short < long:
        parser.error(f"--steps {short} {long}: need 0 < SHORT < LONG")
    overrides = [
        f"trainer.batch_size={args.batch_size}",
        f"trainer.device={args.device}",
        "wandb.mode=offline",
        *(args.overrides or DEFAULT_OVERRIDES),
    ]

    folder = Path(tempfile.mkdtemp(prefix="genlatent-e2e-"))
    try:
        short_seconds, _ = timed_run(args.experiment, short, overrides, folder / "a")
        long_seconds, peak = timed_run(args.experiment, long, overrides, folder / "b")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    run_rate = (long - short) * args.batch_size / (long_seconds - short_seconds)
    rates = step_only_rates(args.experiment, overrides, args)
    step_rate = statistics.median(rates)
    result = {
        "experiment": args.experiment,
        "device": args.device,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "overrides": overrides,
        "steps": [short, long],
        "run_seconds": [short_seconds, long_seconds],
        "run_images_per_s": run_rate,
        "step_images_per_s": step_rate,
        "step_images_per_s_min": min(rates),
        "step_images_per_s_max": max(rates),
        "run_over_step": run_rate / step_rate,
        "peak_rss_bytes": peak,
    }
    print(json.dumps(result))
    print()
    print(
        f"run {run_rate:.1f} images/s over steps {short}..{long}, "
        f"step alone {step_rate:.1f} images/s (min {min(rates):.1f}, "
        f"max {max(rates):.1f}): ratio {run_rate / step_rate:.3f}"
    )
    print(f"peak resident memory of the {long}-step run: {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
