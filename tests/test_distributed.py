"""Multi-process training: real torchrun runs of 2 CPU processes over gloo on
127.0.0.1, and the per-rank data sharding and random streams they rely on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

import genlatent.run
from genlatent.checkpoint import list_checkpoints, load_checkpoint
from genlatent.config import TrainerConfig
from genlatent.data import BatchStream, ImageData, augmentation_generator
from genlatent.distributed import World, rank_seed, uses_sync_batch_norm
from genlatent.errors import ConfigError, DataError
from genlatent.run import stop_check_due
from genlatent.tracking import read_metrics

from .conftest import requires_fashion_mnist
from .distributed_worker import ReplicateSpy, experiment_config, worker_plugins

WORKER = Path(__file__).with_name("distributed_worker.py")
# Seconds a torchrun launch may take before the test fails as hung; a 2-rank
# run of a few steps takes 20-40 s on 2 busy cores.
LAUNCH_TIMEOUT = 240
COMMON = [
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.log_every=1",
    "trainer.checkpoint_every=2",
    "trainer.sample_every=100000",
    "trainer.deterministic=true",
    "wandb.mode=disabled",
]
BATCH_PER_RANK = 4


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def torchrun(mode: str, out: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Launch 2 ranks of the worker with rendezvous and gloo on loopback."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(WORKER),
        mode,
        str(out),
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
        env=env,
        cwd=out,
    )


def launch(mode: str, out: Path, *overrides: str) -> list[dict[str, Any]]:
    """Run ``mode`` to success and return each rank's saved record."""
    result = torchrun(mode, out, *overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    return [torch.load(out / f"{mode}_rank{rank}.pt") for rank in range(2)]


def max_difference(first: dict, second: dict) -> float:
    """Max absolute difference over nested dicts of tensors with equal keys."""
    assert first.keys() == second.keys()
    worst = 0.0
    for key, value in first.items():
        if isinstance(value, dict):
            worst = max(worst, max_difference(value, second[key]))
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            worst = max(worst, (value - second[key]).abs().max().item())
    return worst


def run_files(run_dir: Path) -> set[str]:
    return {str(path.relative_to(run_dir)) for path in run_dir.rglob("*")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("straight")
    overrides = [*COMMON, f"trainer.batch_size={BATCH_PER_RANK}", "trainer.max_steps=4"]
    return out, launch("run", out, *overrides)


@pytest.fixture(scope="module")
def repeated(tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    """The straight run's config, stopped after 2 steps."""
    out = tmp_path_factory.mktemp("repeated")
    overrides = [*COMMON, f"trainer.batch_size={BATCH_PER_RANK}", "trainer.max_steps=2"]
    return out, launch("run", out, *overrides)


@pytest.fixture(scope="module")
def resumed(repeated) -> tuple[Path, list[dict[str, Any]]]:
    """The repeated run resumed to the straight run's 4 steps."""
    out, _ = repeated
    return out, launch("resume", out, "trainer.max_steps=4")


# -- a real 2-process run -----------------------------------------------------


@requires_fashion_mnist
def test_ranks_draw_distinct_latents(straight):
    _, ranks = straight
    first, second = (record["first_latent"] for record in ranks)
    assert first.shape == second.shape == (BATCH_PER_RANK, first.shape[1])
    same_rows = (first[:, None, :] == second[None, :, :]).all(dim=-1)
    assert not same_rows.any(), "a latent row (z and c) is identical on both ranks"


@requires_fashion_mnist
def test_ddp_setup_copies_rank_zero_weights(straight):
    _, ranks = straight
    # Ranks seed torch differently, so their networks start apart ...
    assert max_difference(ranks[0]["before_setup"], ranks[1]["before_setup"]) > 0
    # ... and the DDP wrappers broadcast rank 0's parameters to rank 1.
    assert max_difference(ranks[0]["after_setup"], ranks[1]["after_setup"]) == 0.0
    assert max_difference(ranks[0]["before_setup"], ranks[0]["after_setup"]) == 0.0


@requires_fashion_mnist
def test_ranks_end_with_identical_weights(straight):
    _, ranks = straight
    assert max_difference(ranks[0]["final"], ranks[1]["final"]) == 0.0
    assert max_difference(ranks[0]["after_setup"], ranks[0]["final"]) > 0
    for name in ("discriminator_optimizer", "generator_optimizer"):
        first, second = (record[name]["state"] for record in ranks)
        assert max_difference(first, second) == 0.0, name


@requires_fashion_mnist
def test_only_rank_zero_writes(straight):
    out, _ = straight
    run_dir = out / "run"
    assert run_files(run_dir) == {
        "config.json",
        "metrics.jsonl",
        "samples",
        "samples/step_00000004.png",
        "checkpoints",
        "checkpoints/step_00000002.pt",
        "checkpoints/step_00000004.pt",
        "traversals",
        "traversals/step_00000004_c1.png",
        "traversals/step_00000004_c2.png",
        "traversals/step_00000004_c3.png",
    }
    assert [record["step"] for record in read_metrics(run_dir)] == [1, 2, 3, 4]
    assert {path.name for path in out.iterdir()} == {
        "run",
        "run_rank0.pt",
        "run_rank1.pt",
    }


@requires_fashion_mnist
def test_checkpoint_holds_every_rank_streams(straight):
    out, ranks = straight
    state = load_checkpoint(list_checkpoints(out / "run" / "checkpoints")[-1])
    saved = state["ranks"]
    assert len(saved) == 2
    assert torch.equal(saved[0]["rng"]["latent"], state["rng"]["latent"])
    for rank, record in enumerate(ranks):
        assert torch.equal(saved[rank]["rng"]["latent"], record["latent_generator"])
    assert not torch.equal(saved[0]["rng"]["latent"], saved[1]["rng"]["latent"])
    assert saved[0]["accumulator"]["count"] == 0


@requires_fashion_mnist
def test_same_seed_reproduces_rank_draws(straight, repeated):
    _, first_run = straight
    _, second_run = repeated
    for rank in range(2):
        assert torch.equal(
            first_run[rank]["first_latent"], second_run[rank]["first_latent"]
        )
        assert (
            max_difference(
                first_run[rank]["after_setup"], second_run[rank]["after_setup"]
            )
            == 0.0
        )


@pytest.mark.slow
@requires_fashion_mnist
def test_resume_matches_straight_run(straight, resumed):
    straight_out, straight_ranks = straight
    resumed_out, resumed_ranks = resumed
    for rank in range(2):
        final = resumed_ranks[rank]["final"]
        assert max_difference(straight_ranks[rank]["final"], final) == 0.0, rank
        assert torch.equal(
            straight_ranks[rank]["latent_generator"],
            resumed_ranks[rank]["latent_generator"],
        )
    straight_records = read_metrics(straight_out / "run")
    resumed_records = read_metrics(resumed_out / "run")
    for before, after in zip(straight_records, resumed_records, strict=True):
        before.pop("images_per_s")
        after.pop("images_per_s")
        assert before == after


@requires_fashion_mnist
def test_failing_rank_stops_every_rank(tmp_path):
    overrides = [
        *COMMON,
        f"trainer.batch_size={BATCH_PER_RANK}",
        "trainer.max_steps=50",
    ]
    start = time.monotonic()
    result = torchrun("fail", tmp_path, *overrides)
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "injected failure on rank 1 at step 2" in output
    # Neither rank reached the end of the run.
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert not list(tmp_path.glob("fail_rank*.pt"))
    assert elapsed < LAUNCH_TIMEOUT


@requires_fashion_mnist
def test_signal_on_one_rank_stops_all(tmp_path):
    # Rank 1 alone receives SIGTERM during step 2. CPU ranks agree on the
    # stop flag after every step, so both stop after step 2 with a checkpoint.
    overrides = [
        *COMMON,
        f"trainer.batch_size={BATCH_PER_RANK}",
        "trainer.max_steps=50",
        "trainer.log_every=100",
        "trainer.checkpoint_every=100",
    ]
    result = torchrun("signal", tmp_path, *overrides)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SIGTERM received: stopping after this step" in output
    for rank in range(2):
        record = torch.load(tmp_path / f"signal_rank{rank}.pt")
        assert record["steps"] == 2, rank
        assert record["interrupted"], rank
    (checkpoint,) = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert load_checkpoint(checkpoint)["step"] == 2


def test_stop_check_cadence():
    settings = TrainerConfig(log_every=5, checkpoint_every=7, max_steps=12)
    steps = range(1, 13)
    two_ranks = World(rank=1, world_size=2)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    due_on_cuda = [s for s in steps if stop_check_due(s, settings, two_ranks, cuda)]
    assert due_on_cuda == [5, 7, 10, 12]
    assert all(stop_check_due(s, settings, two_ranks, cpu) for s in steps)
    assert all(stop_check_due(s, settings, World(), cuda) for s in steps)


@requires_fashion_mnist
def test_sync_batch_norm_on_cpu_fails(tmp_path):
    overrides = [
        *COMMON,
        "trainer.sync_batch_norm=true",
        "trainer.max_steps=1",
        f"trainer.batch_size={BATCH_PER_RANK}",
    ]
    result = torchrun("run", tmp_path, *overrides)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "trainer.sync_batch_norm=true needs CUDA, but the device is cpu" in output
    assert not (tmp_path / "run").exists()


# -- equal to a single process with the same global batch -----------------------


@requires_fashion_mnist
def test_two_ranks_match_single_process(tmp_path):
    """2 ranks x 8 images equal 1 process x 16 images when the networks have
    no batch norm: the shards concatenate to the single-process batch, the
    reference draws its latent rows from the two ranks' seeds, and DDP's
    averaged gradient is the gradient of the mean loss over 16 images."""
    overrides = [
        *COMMON,
        "architecture=test-linear",
        "trainer.max_steps=3",
        "trainer.checkpoint_every=100",
    ]
    ranks = launch("run", tmp_path, *overrides, "trainer.batch_size=8")

    plugins = worker_plugins()
    spy = _TwoStreamSpy()
    original = genlatent.run.replicate
    genlatent.run.replicate = spy  # type: ignore[assignment]
    try:
        genlatent.run.run_experiment(
            experiment_config(plugins),
            [*overrides, "trainer.batch_size=16"],
            out=tmp_path / "single",
            plugins=plugins,
        )
    finally:
        genlatent.run.replicate = original  # type: ignore[assignment]
    assert spy.trainer is not None
    single = spy.after_training()
    difference = max_difference(ranks[0]["final"], single)
    moved = max_difference(ranks[0]["after_setup"], single)
    # Only the summation order of the batch means and of the gradient
    # all-reduce differs, by a few float32 ulps per gradient. Adam's early
    # updates are about lr * sign(gradient) = 2e-4 per step, so 1e-6 leaves
    # room for rounding and is far below one step's change.
    assert difference <= 1e-6, difference
    assert moved > 1e-4


class _TwoStreamSpy(ReplicateSpy):
    """Makes a single-process trainer draw each batch's latent rows from the
    streams that ranks 0 and 1 would use: the first half from rank 0's seed,
    the second from rank 1's."""

    def __call__(self, trainer: Any, world: Any) -> None:
        super().__call__(trainer, world)
        seed = trainer.config.trainer.seed
        streams = [torch.Generator().manual_seed(rank_seed(seed, r)) for r in range(2)]
        spec = trainer.latent_spec

        def sample_latent(batch_size: int) -> torch.Tensor:
            half = batch_size // 2
            return torch.cat([spec.sample(half, generator=g) for g in streams])

        trainer.sample_latent = sample_latent

    def after_training(self) -> dict[str, Any]:
        from .distributed_worker import all_parameters

        assert self.trainer is not None
        return all_parameters(self.trainer)


def test_sync_batch_norm_setting_resolves_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not uses_sync_batch_norm(TrainerConfig(), cpu)
    assert not uses_sync_batch_norm(TrainerConfig(sync_batch_norm=False), cpu)
    assert uses_sync_batch_norm(TrainerConfig(), cuda)
    assert not uses_sync_batch_norm(TrainerConfig(sync_batch_norm=False), cuda)
    with pytest.raises(ConfigError, match=re.escape("trainer.sync_batch_norm=false")):
        uses_sync_batch_norm(TrainerConfig(sync_batch_norm=True), cpu)


def test_rank_seed_keeps_rank_zero():
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(7, rank) for rank in range(8)}
    assert len(seeds) == 8
    assert rank_seed(7, 3) == rank_seed(7, 3)
    assert all(0 <= seed < 2**63 for seed in seeds)


# -- data sharding and the augmentation generator -------------------------------


def numbered_images(count: int) -> ImageData:
    """``count`` 1x1x1 images whose pixel is their index."""
    images = torch.arange(count, dtype=torch.uint8).reshape(count, 1, 1, 1)
    return ImageData("numbered", (1, 1, 1), "memory", images=images)


def test_rank_shards_concatenate_to_global_batch():
    data = numbered_images(50)
    cpu = torch.device("cpu")
    single = BatchStream(data, batch_size=8, seed=3, device=cpu)
    ranks = [
        BatchStream(data, batch_size=4, seed=3, device=cpu, rank=r, world_size=2)
        for r in range(2)
    ]
    # 50 images make 6 global batches of 8, so 20 steps reach the fourth epoch.
    for step in range(20):
        expected = single.next_batch().flatten()
        shards = [stream.next_batch().flatten() for stream in ranks]
        assert torch.equal(torch.cat(shards), expected), step
        assert not set(shards[0].tolist()) & set(shards[1].tolist()), step
    assert single.state_dict() == ranks[0].state_dict() == ranks[1].state_dict()
    assert single.epoch == 3


def test_rank_shard_resumes_mid_epoch():
    data = numbered_images(50)
    cpu = torch.device("cpu")
    stream = BatchStream(data, batch_size=4, seed=3, device=cpu, rank=1, world_size=2)
    for _ in range(4):
        stream.next_batch()
    restored = BatchStream(data, batch_size=4, seed=3, device=cpu, rank=1, world_size=2)
    restored.load_state_dict(stream.state_dict())
    for _ in range(8):
        assert torch.equal(stream.next_batch(), restored.next_batch())


def test_global_batch_larger_than_data_set_fails():
    with pytest.raises(
        DataError, match=re.escape("trainer.batch_size=4 on each of 4 ranks")
    ):
        BatchStream(
            numbered_images(15),
            batch_size=4,
            seed=0,
            device=torch.device("cpu"),
            rank=0,
            world_size=4,
        )


class AugmentedDraws(Dataset):
    """Each item's image is one integer in [0, 2**31) drawn through
    genlatent's augmentation generator."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        draw = torch.randint(0, 2**31, (1, 1, 1), generator=augmentation_generator())
        return draw, index


def augmentation_draws(seed: int, num_workers: int, **shard: int) -> list[int]:
    data = ImageData("draws", (1, 1, 1), "memory", dataset=AugmentedDraws())
    stream = BatchStream(
        data,
        batch_size=2 if shard else 4,
        seed=seed,
        device=torch.device("cpu"),
        num_workers=num_workers,
        **shard,
    )
    steps = 4  # two epochs of 8 items
    return [
        value for _ in range(steps) for value in stream.next_batch().flatten().tolist()
    ]


def test_workers_draw_distinct_augmentations():
    draws = augmentation_draws(seed=5, num_workers=4)
    assert len(draws) == 16
    assert len(set(draws)) == 16
    assert augmentation_draws(seed=5, num_workers=4) == draws
    assert augmentation_draws(seed=6, num_workers=4) != draws


def test_augmentation_ignores_worker_and_rank_layout():
    draws = augmentation_draws(seed=5, num_workers=4)
    assert augmentation_draws(seed=5, num_workers=0) == draws
    shards = [
        augmentation_draws(seed=5, num_workers=2, rank=r, world_size=2)
        for r in range(2)
    ]
    # Each step's global batch is rank 0's 2 items, then rank 1's 2.
    interleaved = [
        value
        for step in range(4)
        for shard in shards
        for value in shard[2 * step : 2 * step + 2]
    ]
    assert interleaved == draws
