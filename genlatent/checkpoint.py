"""Crash-safe checkpoint files.

A checkpoint is written to a temporary file in the checkpoint folder, flushed
and fsynced, then renamed over its final name, so the file under a final name
is always complete. Older checkpoints are removed only after the new one is in
place. Checkpoints hold tensors and plain Python values only, so they load with
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
# The part of torch's weights-only error that names the rejected global.
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


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

    Keeps the newest ``keep`` checkpoints. On failure (a full disk, an
    unwritable folder) raises CheckpointError and leaves earlier checkpoints
    untouched.
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
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink()
    logger.info("saved checkpoint %s", final)
    return final


def save_state(state: dict[str, Any], final: Path) -> None:
    """Write ``state`` to ``final`` atomically through a fsynced temporary file.

    Raises OSError and leaves any earlier file under ``final`` untouched.
    """
    folder = final.parent
    temporary: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{final.name}.", suffix=".tmp", dir=folder
        )
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
        temporary = None
        _fsync_folder(folder)
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder entry itself is on disk.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file contains objects that could run code when unpickled."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        UnsafeCheckpointError: the file contains objects other than tensors and
            plain Python values. Nothing in it was run.
        CheckpointError: the file is missing, truncated or not a checkpoint.
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
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or not a checkpoint: "
            f"{type(error).__name__}: {first_line})"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a genlatent checkpoint")
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

    An unreadable newest file (for example one truncated by a full disk) is
    reported once and the previous checkpoint is used. An unsafe file is never
    skipped silently: UnsafeCheckpointError propagates.
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            logger.warning("%s; trying the previous checkpoint", error)
    return None
