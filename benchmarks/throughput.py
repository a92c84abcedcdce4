"""Time genlatent's full training step and compare it with the hardware limit.

One step is a discriminator update and a generator update with every
regularizer of the experiment (the mutual-information term for InfoGAN). The
script reports images/s (median of repeats, with min and max), FLOPs per image
counted by ``torch.utils.flop_counter``, the device's dense matmul rate measured
in the same run, their ratio as the fraction of the FLOP limit reached, peak
memory, and the same figures for a plain PyTorch loop over the same networks
(eager, separate generator forward passes, every weight gradient computed), as
a user would write it without genlatent.

Example::

    python benchmarks/throughput.py --experiment infogan-mnist --device cpu \\
        --batch-size 64 128

Each configuration prints one JSON line, then a table follows.

Under torchrun the script measures data-parallel scaling instead: every rank
times the same DistributedDataParallel step as ``genlatent run`` (per-rank
batch ``--batch-size``), then a single-process run of the same step on rank
0's device, and rank 0 prints images/s per device at N devices, at 1 device,
and their ratio, the scaling efficiency::

    torchrun --nproc_per_node=8 benchmarks/throughput.py --device cuda

Scaling efficiency means something only with one GPU per rank. On CPU the
ranks share the cores, so the figure measures contention, not scaling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from genlatent.config import TrainerConfig
from genlatent.data import scale_images
from genlatent.distributed import (
    destroy_process_group,
    gather_objects,
    launched_world,
    replicate,
    setup_process_group,
)
from genlatent.plugins import load_plugins
from genlatent.regularizers import GeneratedBatch
from genlatent.run import build_trainer, resolve_config
from genlatent.trainer import AdversarialTrainer

AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(
    device: torch.device, dtype: torch.dtype, seconds: float
) -> float:
    """Measure dense matmul throughput, in FLOP/s, with square products."""
    size = 4096 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        iterations += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    return 2 * size**3 * iterations / elapsed


def plain_step(trainer: AdversarialTrainer) -> Callable[[torch.Tensor], None]:
    """Build the step a user writes without genlatent: two generator forward
    passes, and the discriminator's weight gradients computed in the
    generator update too."""
    generator, discriminator = trainer.generator, trainer.discriminator
    regularizers = list(trainer.regularizers.values())
    loss = trainer.loss
    output_range = trainer.architecture.output_range

    def step(real_images: torch.Tensor) -> None:
        real = scale_images(real_images, output_range, torch.float32)
        batch_size = real.shape[0]
        latent = trainer.sample_latent(batch_size)
        with torch.no_grad():
            fake = generator(latent)
        real_logits, _ = discriminator(real)
        fake_logits, features = discriminator(fake)
        d_total = loss.discriminator_loss(real_logits, fake_logits)
        for regularizer in regularizers:
            term = regularizer.discriminator_term(
                GeneratedBatch(latent, fake, features)
            )  # type: ignore[operator]
            if term is not None:
                d_total = d_total + term.loss
        trainer.discriminator_optimizer.zero_grad()
        d_total.backward()
        trainer.discriminator_optimizer.step()

        latent = trainer.sample_latent(batch_size)
        fake = generator(latent)
        logits, features = discriminator(fake)
        g_total = loss.generator_loss(logits)
        for regularizer in regularizers:
            term = regularizer.generator_term(GeneratedBatch(latent, fake, features))  # type: ignore[operator]
            if term is not None:
                g_total = g_total + term.loss
        trainer.generator_optimizer.zero_grad()
        g_total.backward()
        trainer.generator_optimizer.step()

    return step


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_step(
    step: Callable[[torch.Tensor], object],
    real: torch.Tensor,
    device: torch.device,
    *,
    warmup: int,
    steps: int,
    repeats: int,
) -> list[float]:
    """Images/s of each repeat of ``steps`` steps, after ``warmup`` steps."""
    for _ in range(warmup):
        step(real)
    synchronize(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step(real)
        synchronize(device)
        rates.append(steps * real.shape[0] / (time.perf_counter() - start))
    return rates


@contextlib.contextmanager
def autocast(device: torch.device, name: str) -> Iterator[None]:
    dtype = AUTOCAST[name]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def build(experiment: str, batch_size: int, device: torch.device) -> AdversarialTrainer:
    plugins = load_plugins()
    config = resolve_config(
        experiment,
        [f"trainer.batch_size={batch_size}", "wandb.mode=disabled"],
        plugins=plugins,
    )
    torch.manual_seed(0)
    return build_trainer(config, plugins, device)


def measure(args: argparse.Namespace, batch_size: int, matmul_rate: float) -> dict:
    device = torch.device(args.device)
    trainer = build(args.experiment, batch_size, device)
    shape = trainer.architecture.image_shape
    # Data kept on the device: the step's cost does not depend on pixel values.
    real = torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8, device=device)
    if args.channels_last:
        trainer.generator.to(memory_format=torch.channels_last)
        trainer.discriminator.to(memory_format=torch.channels_last)
        real = real.contiguous(memory_format=torch.channels_last)
    if args.compile:
        trainer.generator.compile()
        trainer.discriminator.compile()

    def genlatent_step(images: torch.Tensor) -> None:
        with autocast(device, args.autocast):
            trainer.train_step(images)

    with FlopCounterMode(display=False) as counter:
        genlatent_step(real)
    flops_per_image = counter.get_total_flops() / batch_size

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rates = time_step(
        genlatent_step,
        real,
        device,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
    )
    peak = peak_memory_bytes(device)

    baseline = build(args.experiment, batch_size, device)
    baseline_rates = time_step(
        plain_step(baseline),
        real,
        device,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
    )
    images_per_s = statistics.median(rates)
    baseline_images_per_s = statistics.median(baseline_rates)
    return {
        "experiment": args.experiment,
        "device": str(device),
        "batch_size": batch_size,
        "autocast": args.autocast,
        "compile": args.compile,
        "channels_last": args.channels_last,
        "threads": torch.get_num_threads(),
        "images_per_s": images_per_s,
        "images_per_s_min": min(rates),
        "images_per_s_max": max(rates),
        "flops_per_image": flops_per_image,
        "matmul_flops_per_s": matmul_rate,
        "limit_fraction": flops_per_image * images_per_s / matmul_rate,
        "baseline_images_per_s": baseline_images_per_s,
        "baseline_limit_fraction": flops_per_image
        * baseline_images_per_s
        / matmul_rate,
        "speedup_vs_baseline": images_per_s / baseline_images_per_s,
        "peak_memory_bytes": peak,
    }


def measure_scaling(args: argparse.Namespace, batch_size: int) -> dict | None:
    """Images/s per device of the DDP step at this world size over the same
    step in one process; returns the record on rank 0 and None elsewhere."""
    world = launched_world()
    device = torch.device(args.device)
    setup_process_group(TrainerConfig(), device)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    trainer = build(args.experiment, batch_size, device)
    replicate(trainer, world)
    shape = trainer.architecture.image_shape
    real = torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8, device=device)
    timing = {"warmup": args.warmup, "steps": args.steps, "repeats": args.repeats}
    rates = time_step(trainer.train_step, real, device, **timing)
    per_device = statistics.median(gather_objects(statistics.median(rates)))
    destroy_process_group()
    if not world.is_main:
        return None
    single = build(args.experiment, batch_size, device)
    single_rate = statistics.median(
        time_step(single.train_step, real, device, **timing)
    )
    return {
        "experiment": args.experiment,
        "device": str(device),
        "batch_size_per_rank": batch_size,
        "world_size": world.world_size,
        "images_per_s_per_device": per_device,
        "images_per_s_one_device": single_rate,
        "images_per_s_total": per_device * world.world_size,
        "scaling_efficiency": per_device / single_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="infogan-mnist")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128])
    parser.add_argument("--autocast", default="none", choices=sorted(AUTOCAST))
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the networks"
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--matmul-seconds", type=float, default=2.0, help="time spent measuring matmul"
    )
    args = parser.parse_args()
    if launched_world().is_distributed:
        result = measure_scaling(args, args.batch_size[0])
        if result is not None:
            print(json.dumps(result))
        return
    device = torch.device(args.device)
    dtype = AUTOCAST[args.autocast] or torch.float32
    matmul_rate = matmul_flops_per_s(device, dtype, args.matmul_seconds)

    results = [measure(args, batch_size, matmul_rate) for batch_size in args.batch_size]
    for result in results:
        print(json.dumps(result))
    print()
    print(
        f"{'batch':>6} {'images/s':>10} {'min':>8} {'max':>8} {'MFLOP/img':>10} "
        f"{'limit':>6} {'plain':>8} {'speedup':>8} {'peak MB':>8}"
    )
    for result in results:
        print(
            f"{result['batch_size']:>6} {result['images_per_s']:>10.1f} "
            f"{result['images_per_s_min']:>8.1f} {result['images_per_s_max']:>8.1f} "
            f"{result['flops_per_image'] / 1e6:>10.1f} "
            f"{result['limit_fraction']:>6.2f} "
            f"{result['baseline_images_per_s']:>8.1f} "
            f"{result['speedup_vs_baseline']:>8.2f} "
            f"{result['peak_memory_bytes'] / 2**20:>8.0f}"
        )
    print(f"matmul rate: {matmul_rate / 1e9:.1f} GFLOP/s ({args.device}, {dtype})")


if __name__ == "__main__":
    main()
