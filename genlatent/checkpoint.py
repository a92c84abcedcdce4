"""Crash-safe checkpoint files.

A checkpoint is written to a temporary file in the checkpoint folder, flushed
and fsynced, then renamed over its final name, so the file under a final name
is always complete. Older checkpoints are removed only after the new one is in
place, and never one with a later step than the new one. A truncated or
damaged checkpoint that :func:`load_latest_checkpoint` finds is renamed to
``step_N.pt.corrupt``, so it no longer counts as a checkpoint. Checkpoints hold
tensors and plain Python values only, so they load with
``torch.load(..., weights_only=True)`` and never run code from the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from genlatent.errors import CheckpointError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d+)\.pt$")
# Appended to the name of a checkpoint found unreadable, which takes it out of
# list_checkpoints.
CORRUPT_SUFFIX = ".corrupt"
# The part of torch's weights-only error that names the rejected global.
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def checkpoint_step(path: Path) -> int:
    """Return the step of a checkpoint file named by :func:`checkpoint_path`."""
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint (step_N.pt)")
    return int(match.group(1))


def checkpoint_path(folder: Path, step: int) -> Path:
    """Return the file name of the checkpoint taken after ``step`` updates."""
    return folder / f"step_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := _NAME.match(path.name))
    ]
    return [path for _, path in sorted(found)]


def save_checkpoint(state: dict[str, Any], folder: Path, step: int, keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``.

    Then removes the checkpoints of earlier steps beyond the newest ``keep``,
    counting the new one. Checkpoints of later steps (left by a run that
    resumed from an earlier one) stay. On failure (a full disk, an unwritable
    folder) raises CheckpointError naming the file and the cause, removes the
    temporary file and leaves earlier checkpoints untouched.
    """
    final = checkpoint_path(folder, step)
    try:
        save_state(state, final)
    except OSError as error:
        reason = error.strerror or str(error)
        raise CheckpointError(
            f"cannot write checkpoint {final}: {reason}. Earlier checkpoints in "
            f"{folder} are unchanged; free disk space or fix the folder's "
            "permissions, then resume."
        ) from error
    logger.info("saved checkpoint %s", final)
    earlier = [
        path for path in list_checkpoints(folder) if checkpoint_step(path) < step
    ]
    for old in earlier[: max(len(earlier) - (keep - 1), 0)]:
        try:
            old.unlink()
        except OSError as error:
            # The new checkpoint is complete, so a stale old one costs only
            # disk space.
            logger.warning("failed to remove old checkpoint %s: %s", old, error)
    return final


def save_state(state: dict[str, Any], final: Path) -> None:
    """Write ``state`` to ``final`` atomically through a fsynced temporary file.

    Raises OSError, also for a failed write that torch.save reports as
    RuntimeError, and leaves any earlier file under ``final`` untouched.
    """
    folder = final.parent
    temporary: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{final.name}.", suffix=".tmp", dir=folder
        )
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(state, file)
                file.flush()
                os.fsync(file.fileno())
        except RuntimeError as error:
            write_error = _write_error(error, final)
            if write_error is None:
                raise
            raise write_error from error
        os.replace(temporary, final)
        temporary = None
        _fsync_folder(folder)
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)


def _write_error(error: RuntimeError, path: Path) -> OSError | None:
    """Return the OSError behind torch.save's RuntimeError for a failed write,
    or None when ``error`` is not about writing.

    torch's zip writer (inline_container.cc, torch 2.14) turns an exception of
    the file's ``write``, such as ENOSPC, into ``RuntimeError: [enforce fail at
    inline_container.cc:...] unexpected pos ...``, with the OSError as its
    context.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError):
            return OSError(cause.errno, cause.strerror or str(cause), str(path))
        cause = cause.__cause__ or cause.__context__
    message = str(error).strip()
    if "inline_container" in message or "PytorchStreamWriter" in message:
        first_line = message.splitlines()[0]
        return OSError(None, f"write failed ({first_line})", str(path))
    return None


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder entry itself is on disk.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file contains objects that could run code when unpickled."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is truncated, damaged or not a genlatent checkpoint."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        UnsafeCheckpointError: the file contains objects other than tensors and
            plain Python values. Nothing in it was run.
        CorruptCheckpointError: the file is truncated, damaged or not a
            genlatent checkpoint.
        CheckpointError: the file is missing or cannot be opened.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _UNSUPPORTED_GLOBAL.search(str(error))
        detail = f": it imports {found.group(1)}" if found else ""
        raise UnsafeCheckpointError(
            f"checkpoint {path} contains disallowed objects and was not loaded"
            f"{detail}. genlatent checkpoints contain only tensors and plain "
            "values; load files only from sources you trust."
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} not found") from None
    except OSError as error:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {error.strerror or error}"
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error) else ""
        raise CorruptCheckpointError(
            f"checkpoint {path} is unreadable (truncated or not a checkpoint: "
            f"{type(error).__name__}: {first_line})"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptCheckpointError(f"{path} is not a genlatent checkpoint")
    return state


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete temporaries left by writers that were killed mid-save.

    Call this only when no other process writes to ``folder``, such as when a
    run resumes.
    """
    removed = []
    if folder.is_dir():
        for path in folder.glob(".step_*.pt.*.tmp"):
            path.unlink()
            logger.info("removed partial checkpoint %s", path)
            removed.append(path)
    return removed


def load_latest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest readable checkpoint in ``folder``.

    A newer file that is truncated or damaged (for example by a full disk) is
    renamed to ``NAME.corrupt`` with one warning, so that retention never
    keeps it in place of a good checkpoint, and the previous checkpoint is
    used. A file that cannot be opened is skipped with a warning and left as
    it is. An unsafe file is never skipped silently: UnsafeCheckpointError
    propagates.
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except UnsafeCheckpointError:
            raise
        except CorruptCheckpointError as error:
            corrupt = path.with_name(path.name + CORRUPT_SUFFIX)
            try:
                os.replace(path, corrupt)
            except OSError as rename_error:
                logger.warning(
                    "%s; cannot rename it to %s (%s); trying the previous checkpoint",
                    error,
                    corrupt.name,
                    rename_error.strerror or rename_error,
                )
            else:
                logger.warning(
                    "%s; renamed it to %s and trying the previous checkpoint",
                    error,
                    corrupt.name,
                )
        except CheckpointError as error:
            logger.warning("%s; trying the previous checkpoint", error)
    return None
