"""benchmarks/throughput.py run as a real subprocess: one short configuration
in one process, and its scaling mode under torchrun with 2 CPU ranks over gloo
on 127.0.0.1. The figures vary with the machine and its load, so the checks
are on the keys, the identities between them and sane ranges."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

THROUGHPUT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
# Short timing: one warm-up step, two repeats of two steps, 0.2 s of matmul.
SHORT = ["--warmup", "1", "--steps", "2", "--repeats", "2"]
BATCH_SIZE = 16
# Seconds before a run counts as hung; each takes 10-20 s on 2 busy cores.
TIMEOUT = 240


def run_script(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def single() -> tuple[dict[str, Any], str]:
    result = run_script(
        str(THROUGHPUT),
        "--experiment",
        "infogan-mnist",
        "--device",
        "cpu",
        "--batch-size",
        str(BATCH_SIZE),
        "--matmul-seconds",
        "0.2",
        *SHORT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = json_lines(result.stdout)
    return record, result.stdout


def test_throughput_names_configuration(single):
    record, _ = single
    assert record["experiment"] == "infogan-mnist"
    assert record["device"] == "cpu"
    assert record["batch_size"] == BATCH_SIZE
    assert record["threads"] == 1
    assert record["autocast"] == "none"
    assert record["compile"] is False
    assert record["channels_last"] is False


def test_throughput_rates_sane(single):
    record, _ = single
    assert record["images_per_s"] > 0
    assert record["images_per_s_min"] <= record["images_per_s"]
    assert record["images_per_s"] <= record["images_per_s_max"]
    assert record["baseline_images_per_s"] > 0
    speedup = record["images_per_s"] / record["baseline_images_per_s"]
    assert record["speedup_vs_baseline"] == pytest.approx(speedup, rel=1e-12)


def test_throughput_flops_sane(single):
    record, _ = single
    assert record["flops_per_image"] > 0
    assert record["matmul_flops_per_s"] > 0
    # The plain loop runs the generator twice and computes the
    # discriminator's weight gradients in the generator update.
    assert record["plain_flops_per_image"] > record["flops_per_image"]
    fraction = (
        record["flops_per_image"]
        * record["images_per_s"]
        / record["matmul_flops_per_s"]
    )
    assert record["limit_fraction"] == pytest.approx(fraction, rel=1e-12)
    assert 0 < record["limit_fraction"] < 1.5


def test_throughput_memory_and_table(single):
    record, stdout = single
    assert record["peak_memory_bytes"] > 0
    assert "images/s" in stdout
    assert "matmul rate:" in stdout


def test_throughput_scaling_two_ranks():
    result = run_script(
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(THROUGHPUT),
        "--experiment",
        "infogan-mnist",
        "--device",
        "cpu",
        "--batch-size",
        str(BATCH_SIZE),
        *SHORT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Rank 0 alone prints the record.
    (record,) = json_lines(result.stdout)
    assert record["world_size"] == 2
    assert record["batch_size_per_rank"] == BATCH_SIZE
    assert record["images_per_s_per_device"] > 0
    assert record["images_per_s_one_device"] > 0
    total = 2 * record["images_per_s_per_device"]
    assert record["images_per_s_total"] == pytest.approx(total, rel=1e-12)
    efficiency = record["images_per_s_per_device"] / record["images_per_s_one_device"]
    assert record["scaling_efficiency"] == pytest.approx(efficiency, rel=1e-12)
