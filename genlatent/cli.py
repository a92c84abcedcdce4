"""The ``genlatent`` command line, a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
from tqdm import tqdm

from genlatent import __version__
from genlatent.config import dumps
from genlatent.distributed import destroy_process_group, launched_world
from genlatent.errors import GenlatentError
from genlatent.inspection import load_run, sample, save_traversals
from genlatent.latent import LatentSpec
from genlatent.plotting import plot_mutual_information
from genlatent.plugins import PluginHost, load_plugins
from genlatent.run import (
    RunResult,
    build_trainer,
    resolve_config,
    resume_run,
    run_experiment,
)
from genlatent.summary import format_table, layer_table
from genlatent.traversal import image_grid, save_labelled_grid

logger = logging.getLogger("genlatent")


class _TqdmHandler(logging.Handler):
    """Writes log lines above any progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _configure_logging(verbose: bool) -> None:
    handler = _TqdmHandler()
    world = launched_world()
    handler.setFormatter(
        logging.Formatter(f"{_program_name()}: %(levelname)s: %(message)s")
    )
    logger.handlers[:] = [handler]
    level = logging.DEBUG if verbose else logging.INFO
    if not world.is_main and not verbose:
        # Every rank logs the same progress; rank 0's is enough.
        level = logging.WARNING
    logger.setLevel(level)
    logger.propagate = False


def _global_options(parser: argparse.ArgumentParser, *, in_command: bool) -> None:
    # Global options are accepted before and after the command name. Inside a
    # command they default to SUPPRESS, so they never overwrite values parsed
    # before the command name.
    def default(value: object) -> object:
        return argparse.SUPPRESS if in_command else value

    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show tracebacks and debug logs",
    )
    parser.add_argument(
        "--disable-plugin",
        action="append",
        default=default([]),
        metavar="NAME",
        help="skip the plugin with this entry-point or distribution name "
        "(repeatable; also $GENLATENT_DISABLE_PLUGINS)",
    )
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        default=default(None),
        help="fail on any plugin problem instead of warning "
        "(also $GENLATENT_STRICT_PLUGINS=1)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlatent",
        description="Train and inspect generative models with interpretable "
        "latent codes (InfoGAN and plugins).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    _global_options(parser, in_command=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    list_command = commands.add_parser(
        "list", help="list experiments and registered components"
    )
    _global_options(list_command, in_command=True)

    show = commands.add_parser(
        "show", help="print an experiment's resolved config and networks"
    )
    _global_options(show, in_command=True)
    show.add_argument("experiment", help="experiment name (see `genlatent list`)")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    run = commands.add_parser("run", help="train an experiment")
    _global_options(run, in_command=True)
    run.add_argument("experiment", help="experiment name (see `genlatent list`)")
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, for example trainer.max_steps=500 data.root=/data",
    )
    run.add_argument(
        "--out", metavar="DIR", help="run folder (default runs/NAME-TIMESTAMP)"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace a run already in --out"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint",
    )

    resume = commands.add_parser(
        "resume", help="continue a run from its newest checkpoint"
    )
    _global_options(resume, in_command=True)
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    resume.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="changes to the saved config, for example trainer.max_steps=10000",
    )

    _add_inspection_commands(commands)

    plugins = commands.add_parser(
        "plugins", help="list loaded plugins and what they registered"
    )
    _global_options(plugins, in_command=True)
    plugins.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _add_inspection_commands(commands: argparse._SubParsersAction) -> None:
    sample = commands.add_parser("sample", help="save a grid of samples from a run")
    _global_options(sample, in_command=True)
    sample.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    sample.add_argument("--n", type=int, default=64, help="number of samples")
    sample.add_argument("--seed", type=int, default=0, help="seed of the draws")
    _checkpoint_option(sample)
    sample.add_argument(
        "--out", metavar="PNG", help="output file (default RUN_DIR/samples.png)"
    )

    traverse = commands.add_parser(
        "traverse",
        help="save one grid per code, varying that code along each row",
    )
    _global_options(traverse, in_command=True)
    traverse.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    traverse.add_argument(
        "--code",
        action="append",
        metavar="NAME",
        help="code to traverse (repeatable; default every categorical and "
        "continuous code)",
    )
    traverse.add_argument(
        "--range",
        type=float,
        nargs=2,
        default=(-2.0, 2.0),
        metavar=("LOW", "HIGH"),
        help="values a continuous code sweeps (default -2 2)",
    )
    traverse.add_argument(
        "--steps", type=int, default=10, help="columns of a continuous code's grid"
    )
    traverse.add_argument(
        "--rows", type=int, default=10, help="rows: draws of the other inputs"
    )
    traverse.add_argument("--seed", type=int, default=0, help="seed of the draws")
    _checkpoint_option(traverse)
    traverse.add_argument(
        "--out", metavar="DIR", help="output folder (default RUN_DIR/traversals)"
    )

    plot = commands.add_parser(
        "plot",
        aliases=["curves"],
        help="plot each code's mutual-information lower bound over training "
        "(needs matplotlib)",
    )
    _global_options(plot, in_command=True)
    plot.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    plot.add_argument(
        "--out",
        metavar="PNG",
        help="output file (default RUN_DIR/mutual_information.png)",
    )

    evaluate = commands.add_parser(
        "eval",
        help="score a run: mutual information, clustering of real images, FID; "
        "writes RUN_DIR/eval.json",
    )
    _global_options(evaluate, in_command=True)
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    evaluate.add_argument(
        "--split", default="test", help="data set split of the real images"
    )
    evaluate.add_argument(
        "--num-samples",
        type=int,
        default=10_000,
        help="generated images for mutual information and FID",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the draws")
    evaluate.add_argument(
        "--features",
        choices=("auto", "classifier", "inception"),
        default="auto",
        help="FID features: a classifier trained on the data set's labels, or "
        "Inception v3 when its weights are on disk (auto: Inception if present)",
    )
    evaluate.add_argument(
        "--classifier-epochs",
        type=int,
        default=2,
        help="training epochs of the feature classifier when none is cached",
    )
    _checkpoint_option(evaluate)


def _checkpoint_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="checkpoint to load, a path or a name in RUN_DIR/checkpoints "
        "(default the newest)",
    )


def _command_sample(plugins: PluginHost, args: argparse.Namespace) -> None:
    run = load_run(args.run_dir, args.checkpoint, plugins=plugins)
    images = sample(run, args.n, args.seed)
    path = Path(args.out) if args.out else run.run_dir / "samples.png"
    grid = image_grid(images, run.architecture.output_range, num_columns=8)
    save_labelled_grid(
        grid, f"{run.config.name}, step {run.step}, seed {args.seed}", path
    )
    print(f"wrote {args.n} samples from step {run.step} to {path}")


def _command_traverse(plugins: PluginHost, args: argparse.Namespace) -> None:
    run = load_run(args.run_dir, args.checkpoint, plugins=plugins)
    paths = save_traversals(
        run,
        args.code,
        value_range=tuple(args.range),
        steps=args.steps,
        rows=args.rows,
        seed=args.seed,
        out=Path(args.out) if args.out else None,
    )
    for path in paths:
        print(f"wrote {path}")


def _command_eval(plugins: PluginHost, args: argparse.Namespace) -> None:
    from genlatent.evaluation import EVAL_FILE, evaluate_run, format_report

    run = load_run(args.run_dir, args.checkpoint, plugins=plugins)
    result = evaluate_run(
        run,
        split=args.split,
        num_samples=args.num_samples,
        seed=args.seed,
        features=args.features,
        classifier_epochs=args.classifier_epochs,
        plugins=plugins,
    )
    print(format_report(result))
    print(f"wrote {run.run_dir / EVAL_FILE}")


def _command_list(plugins: PluginHost) -> None:
    print("experiments:")
    for name in plugins.names("experiments"):
        config = plugins.get("experiments", name)
        print(f"  {name:28s} {config.description}")
    for plural in ("models", "architectures", "datasets", "losses", "regularizers"):
        print(f"{plural}:")
        for name in plugins.names(plural):
            description = getattr(plugins.get(plural, name), "description", "")
            print(f"  {name:28s} {description}")


def _command_show(plugins: PluginHost, experiment: str, overrides: list[str]) -> None:
    config = resolve_config(experiment, overrides, plugins=plugins)
    print(dumps(config))
    spec = LatentSpec.from_config(config.latent)
    layout = ", ".join(
        f"{code.name}[{spec.input_slices[code.name].start}:"
        f"{spec.input_slices[code.name].stop}]"
        for code in spec.codes
    )
    print(f"\nlatent input: {spec.input_dim} values: {layout}")
    print(f"recognition outputs: {spec.posterior_dim}")
    batch = 2  # batch norm in training mode needs more than one sample
    trainer = build_trainer(config, plugins, torch.device("cpu"))
    for title, module, example in trainer.layer_tables(batch):
        print(format_table(f"\n{title}", layer_table(module, example)))


def _command_plugins(plugins: PluginHost, as_json: bool) -> None:
    records = list(plugins.records.values())
    if as_json:
        print(json.dumps([attrs.asdict(record) for record in records], indent=2))
        return
    for record in records:
        kind = "built-in" if record.builtin else "third-party"
        print(
            f"{record.name} ({record.distribution} {record.version}, {kind}): "
            f"{record.status}"
        )
        if record.error:
            print(f"  error: {record.error}")
        for plural, names in record.registered.items():
            print(f"  {plural}: {', '.join(names)}")


def _print_result(result: RunResult) -> None:
    if result.interrupted:
        folder = result.run_dir
        print(
            f"interrupted at step {result.steps}; run folder: {folder}; "
            f"continue with `genlatent resume {folder}`"
        )
    else:
        print(f"finished step {result.steps}; run folder: {result.run_dir}")


def _program_name() -> str:
    world = launched_world()
    return f"genlatent[rank {world.rank}]" if world.is_distributed else "genlatent"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    # Plugins load before the full parse, so that their problems are reported
    # on every command, --help included.
    early = argparse.ArgumentParser(add_help=False)
    _global_options(early, in_command=False)
    options, _ = early.parse_known_args(argv)
    _configure_logging(options.debug)
    try:
        plugins = load_plugins(
            disable=options.disable_plugin, strict=options.strict_plugins
        )
    except GenlatentError as error:
        if options.debug:
            raise
        print(f"{_program_name()}: error: {error}", file=sys.stderr)
        return 1

    parser = _build_parser()
    # KEY=VALUE overrides may also follow options such as --out, which a
    # plain parse rejects once the positional arguments have been consumed.
    args, extra = parser.parse_known_args(argv)
    if extra:
        takes_overrides = args.command in ("run", "show", "resume")
        if not takes_overrides or any(
            "=" not in arg or arg.startswith("-") for arg in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "list":
            _command_list(plugins)
        elif args.command == "show":
            _command_show(plugins, args.experiment, args.overrides)
        elif args.command == "plugins":
            _command_plugins(plugins, args.json)
        elif args.command == "sample":
            _command_sample(plugins, args)
        elif args.command == "traverse":
            _command_traverse(plugins, args)
        elif args.command in ("plot", "curves"):
            path = plot_mutual_information(args.run_dir, args.out)
            print(f"wrote {path}")
        elif args.command == "eval":
            _command_eval(plugins, args)
        elif args.command in ("run", "resume"):
            if args.command == "run":
                result = run_experiment(
                    args.experiment,
                    args.overrides,
                    out=args.out,
                    overwrite=args.overwrite,
                    resume=args.resume,
                    plugins=plugins,
                )
            else:
                result = resume_run(args.run_dir, args.overrides, plugins=plugins)
            destroy_process_group()
            if launched_world().is_main:
                _print_result(result)
            return _exit_status(result)
    except GenlatentError as error:
        if args.debug:
            raise
        print(f"{_program_name()}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # Writing metrics, sample grids or evaluation results fails with the
        # OSError of the file system (a full disk, a read-only folder).
        if args.debug:
            raise
        print(f"{_program_name()}: error: {_describe_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genlatent: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def _exit_status(result: RunResult) -> int:
    """Return 0 for a finished run, and for a run stopped by a signal the
    shell's status of a process killed by it: 128 plus the signal number (130
    for SIGINT, 143 for SIGTERM)."""
    if not result.interrupted:
        return 0
    # A torchrun rank stopped by another rank's signal reports SIGINT's 130.
    signum = result.stop_signal or signal.SIGINT
    return 128 + int(signum)


def _describe_os_error(error: OSError) -> str:
    """Return ``PATH: REASON`` for an OSError, or its reason alone when the
    failing call did not name a file."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return f"{reason} (run with --debug to see which file)"
    path = str(error.filename)
    if error.filename2 is not None:
        path = f"{path} -> {error.filename2}"
    return f"{path}: {reason}"
