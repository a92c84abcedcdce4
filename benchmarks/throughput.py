"""Time genlatent's full training step and compare it with the hardware limit.

One step is a discriminator update and a generator update with every
regularizer of the experiment (the mutual-information term for InfoGAN). The
script reports images/s (median of repeats, with min and max), FLOPs per image
counted by ``torch.utils.flop_counter``, the device's dense matmul rate measured
in the same run, their ratio as the fraction of the FLOP limit reached, and
peak memory. It reports the same figures for a plain PyTorch loop over the same
networks, as a user would write it without genlatent: eager fp32, two
generator forward passes, every weight gradient computed, torch's default Adam.

``limit_fraction`` counts the FLOPs genlatent's step executes.
``plain_equivalent_limit_fraction`` counts the plain loop's FLOPs at
genlatent's rate, which credits the work the trainer skips. The options
(``--autocast bf16``, ``--compile``, ``--channels-last``) switch on the
trainer's own settings of the same names, so what is timed is what
``genlatent run`` does with them.

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
import gc
import json
import platform
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
    """Build the step a user writes without genlatent, on ``trainer``'s
    networks: the generator runs twice (without gradients for the
    discriminator update, then again for its own update), the discriminator's
    weight gradients are computed in the generator update too, and Adam is
    torch's default implementation. It draws the same latent batch per step
    as genlatent's step, so both give the same weights up to float rounding.
    """
    generator, discriminator = trainer.generator, trainer.discriminator
    regularizers = list(trainer.regularizers.values())
    loss = trainer.loss
    output_range = trainer.architecture.output_range
    optim = trainer.config.optim
    discriminator_optimizer = torch.optim.Adam(
        [*discriminator.parameters(), *trainer.regularizers.parameters()],
        lr=optim.discriminator.lr,
        betas=(optim.discriminator.beta1, optim.discriminator.beta2),
    )
    generator_optimizer = torch.optim.Adam(
        generator.parameters(),
        lr=optim.generator.lr,
        betas=(optim.generator.beta1, optim.generator.beta2),
    )

    # Steps taken, in a list so the closure can count them.
    steps_taken = [0]

    def step(real_images: torch.Tensor) -> None:
        real = scale_images(real_images, output_range, torch.float32)
        latent = trainer.sample_latent(real.shape[0])
        with torch.no_grad():
            fake = generator(latent)
        real_logits, _ = discriminator(real)
        fake_logits, features = discriminator(fake)
        d_total = loss.discriminator_loss(real_logits, fake_logits)
        penalty = loss.critic_penalty(trainer.critic_output, real, fake)
        if penalty is not None:
            d_total = d_total + penalty
        for regularizer in regularizers:
            term = regularizer.discriminator_term(
                GeneratedBatch(latent, fake, features)
            )  # type: ignore[operator]
            if term is not None:
                d_total = d_total + term.loss
        discriminator_optimizer.zero_grad()
        d_total.backward()
        discriminator_optimizer.step()
        steps_taken[0] += 1
        if steps_taken[0] % trainer.config.trainer.n_critic != 0:
            return

        fake = generator(latent)
        logits, features = discriminator(fake)
        g_total = loss.generator_loss(logits)
        for regularizer in regularizers:
            term = regularizer.generator_term(GeneratedBatch(latent, fake, features))  # type: ignore[operator]
            if term is not None:
                g_total = g_total + term.loss
        generator_optimizer.zero_grad()
        g_total.backward()
        generator_optimizer.step()

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
def fp16_autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    # The trainer has no fp16 mode, because fp16 training needs loss scaling;
    # this times fp16 kernels only.
    if not enabled:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.float16):
        yield


def trainer_overrides(args: argparse.Namespace, batch_size: int) -> list[str]:
    """Config overrides that turn on the trainer's own speed options."""
    overrides = [f"trainer.batch_size={batch_size}", "wandb.mode=disabled"]
    overrides.append(
        f"trainer.precision={'bf16' if args.autocast == 'bf16' else 'fp32'}"
    )
    if args.compile:
        overrides.append("trainer.compile=true")
    if args.channels_last:
        overrides.append("trainer.channels_last=true")
    return overrides


def build(
    experiment: str, overrides: list[str], device: torch.device
) -> AdversarialTrainer:
    plugins = load_plugins()
    config = resolve_config(experiment, overrides, plugins=plugins)
    torch.manual_seed(0)
    trainer = build_trainer(config, plugins, device)
    if not isinstance(trainer, AdversarialTrainer):
        raise SystemExit(
            f"{experiment} uses model {config.model!r}; this benchmark times "
            "adversarial trainers"
        )
    return trainer


def counted_flops(step: Callable[[torch.Tensor], object], real: torch.Tensor) -> int:
    """FLOPs of one call of ``step``, as torch.utils.flop_counter counts them
    (matrix products and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step(real)
    return counter.get_total_flops()


def measure(args: argparse.Namespace, batch_size: int, matmul_rate: float) -> dict:
    device = torch.device(args.device)
    overrides = trainer_overrides(args, batch_size)
    trainer = build(args.experiment, overrides, device)
    shape = trainer.architecture.image_shape
    # The step's cost does not depend on pixel values, so random images serve.
    real = torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8)
    if args.data == "device":
        real = real.to(device)
    elif device.type == "cuda":
        real = real.pin_memory()

    def genlatent_step(images: torch.Tensor) -> None:
        with fp16_autocast(device, args.autocast == "fp16"):
            trainer.train_step(images.to(device, non_blocking=True))

    flops_per_image = counted_flops(genlatent_step, real) / batch_size
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
    trainer.raise_on_divergence()
    peak = peak_memory_bytes(device)

    # The baseline is eager fp32 on default layouts, whatever the options.
    baseline = build(
        args.experiment,
        [f"trainer.batch_size={batch_size}", "wandb.mode=disabled"],
        device,
    )
    baseline_step = plain_step(baseline)

    def plain(images: torch.Tensor) -> None:
        baseline_step(images.to(device, non_blocking=True))

    plain_flops_per_image = counted_flops(plain, real) / batch_size
    baseline_rates = time_step(
        plain,
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
        "device_name": device_name(device),
        "batch_size": batch_size,
        "autocast": args.autocast,
        "compile": args.compile,
        "channels_last": args.channels_last,
        "data": args.data,
        "threads": torch.get_num_threads(),
        "images_per_s": images_per_s,
        "images_per_s_min": min(rates),
        "images_per_s_max": max(rates),
        "flops_per_image": flops_per_image,
        "matmul_flops_per_s": matmul_rate,
        "limit_fraction": flops_per_image * images_per_s / matmul_rate,
        "plain_flops_per_image": plain_flops_per_image,
        # The plain step's FLOPs per image at genlatent's rate: the work a
        # user's loop would need for the same training, per second.
        "plain_equivalent_limit_fraction": plain_flops_per_image
        * images_per_s
        / matmul_rate,
        "baseline_images_per_s": baseline_images_per_s,
        "baseline_limit_fraction": plain_flops_per_image
        * baseline_images_per_s
        / matmul_rate,
        "speedup_vs_baseline": images_per_s / baseline_images_per_s,
        "peak_memory_bytes": peak,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def measure_scaling(args: argparse.Namespace, batch_size: int) -> dict | None:
    """Images/s per device of the DDP step at this world size over the same
    step in one process; returns the record on rank 0 and None elsewhere."""
    world = launched_world()
    device = torch.device(args.device)
    setup_process_group(TrainerConfig(), device)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    overrides = trainer_overrides(args, batch_size)
    trainer = build(args.experiment, overrides, device)
    replicate(trainer, world)
    shape = trainer.architecture.image_shape
    real = torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8, device=device)
    timing = {"warmup": args.warmup, "steps": args.steps, "repeats": args.repeats}
    rates = time_step(trainer.train_step, real, device, **timing)
    per_device = statistics.median(gather_objects(statistics.median(rates)))
    # Free the DistributedDataParallel wrappers, which hold the process group,
    # before destroying it. A rank that exited with them still alive, while
    # rank 0 went on timing, aborted in 3 of 10 CPU runs (torch 2.14.1, gloo)
    # with "terminate called without an active exception". The wrappers and
    # the trainer form a reference cycle, so only the collector frees them.
    del trainer
    gc.collect()
    destroy_process_group()
    if not world.is_main:
        return None
    single = build(args.experiment, overrides, device)
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
    parser.add_argument(
        "--autocast",
        default="none",
        choices=sorted(AUTOCAST),
        help="bf16 uses trainer.precision=bf16; fp16 times fp16 kernels only",
    )
    parser.add_argument(
        "--data",
        default="device",
        choices=["device", "host"],
        help="keep the batch on the device, or copy it from host memory each step",
    )
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
        f"{'limit':>6} {'plain-eq':>8} {'plain':>8} {'plain lim':>9} "
        f"{'speedup':>8} {'peak MB':>8}"
    )
    for result in results:
        print(
            f"{result['batch_size']:>6} {result['images_per_s']:>10.1f} "
            f"{result['images_per_s_min']:>8.1f} {result['images_per_s_max']:>8.1f} "
            f"{result['flops_per_image'] / 1e6:>10.1f} "
            f"{result['limit_fraction']:>6.2f} "
            f"{result['plain_equivalent_limit_fraction']:>8.2f} "
            f"{result['baseline_images_per_s']:>8.1f} "
            f"{result['baseline_limit_fraction']:>9.2f} "
            f"{result['speedup_vs_baseline']:>8.2f} "
            f"{result['peak_memory_bytes'] / 2**20:>8.0f}"
        )
    print(f"matmul rate: {matmul_rate / 1e9:.1f} GFLOP/s ({args.device}, {dtype})")


if __name__ == "__main__":
    main()
