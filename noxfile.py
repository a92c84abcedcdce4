"""Development sessions: tests, slow tests, lint, typecheck and benchmarks.

torch and torchvision are pinned to the releases this project is tested with;
an unpinned install would pull whatever release is newest.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

TORCH = ("torch==2.14.1", "torchvision==0.29.1")


def install_project(session: nox.Session, *extras: str) -> None:
    session.install(*TORCH)
    suffix = f"[{','.join(extras)}]" if extras else ""
    session.install("-e", f".{suffix}")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the default test suite (excludes tests marked slow)."""
    install_project(session, "test", "plot")
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session(default=False)
def slow(session: nox.Session) -> None:
    """Run the slow tests: long trainings on real data."""
    install_project(session, "test", "plot")
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Time the training step and a real run on CPU, briefly.

    Arguments after ``--`` go to ``benchmarks/throughput.py`` only, after its
    defaults here, so they override them (argparse keeps the last value):
    ``nox -s bench -- --batch-size 128 --channels-last``.
    ``benchmarks/end_to_end.py`` always runs the short CPU configuration
    below. The GPU sweep is in docs/performance.md.
    """
    install_project(session)
    session.run(
        "python",
        "benchmarks/throughput.py",
        "--experiment",
        "infogan-mnist",
        "--device",
        "cpu",
        "--batch-size",
        "64",
        "128",
        "--repeats",
        "3",
        *session.posargs,
    )
    session.run(
        "python",
        "benchmarks/end_to_end.py",
        "--experiment",
        "infogan-fashion-mnist",
        "--device",
        "cpu",
        "--steps",
        "20",
        "120",
        "--repeats",
        "3",
        # Grids and checkpoints every 50 steps, so the short window has some.
        "trainer.sample_every=50",
        "trainer.checkpoint_every=50",
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff>=0.5")
    paths = [
        path
        for path in ("genlatent", "plugins", "tests", "benchmarks", "noxfile.py")
        if Path(path).exists()
    ]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the core and the built-in plugins with mypy."""
    install_project(session, "typecheck")
    session.run("mypy", "genlatent", "plugins")
