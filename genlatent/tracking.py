"""Metric and image logging: ``metrics.jsonl`` in the run folder, and wandb.

Every record goes to ``metrics.jsonl`` (one JSON object per line with a ``step``
key) and, unless wandb is disabled, to a wandb run whose files live in the run
folder. Offline wandb runs can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genlatent.config import WandbConfig

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def resolve_wandb_mode(mode: str) -> str:
    """Turn the configured mode into offline, online or disabled.

    ``auto`` honours ``WANDB_MODE`` and ``WANDB_DISABLED`` when set, logs online
    when an API key is configured (``WANDB_API_KEY`` or a netrc entry written
    by ``wandb login``), and otherwise logs offline.
    """
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if env_mode:
        return {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
    if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb_key():
        return "online"
    return "offline"


def _netrc_has_wandb_key() -> bool:
    try:
        entries = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in entries)


class MetricsLogger:
    """Writes metric records and images for one run.

    Args:
        run_dir: the run folder; ``metrics.jsonl`` and wandb's files go there.
        wandb_config: wandb settings.
        run_name: the wandb run's display name.
        config: the resolved experiment config, stored with the wandb run.
        wandb_id: the wandb run id; a resumed run passes its original id.
        wandb_logged_through: the last step wandb already has; records up to
            it go to ``metrics.jsonl`` only, so wandb's steps keep increasing.
        resend_lost_records: set by a resumed training run. The logger then
            reads the last step wandb stores, where it can, and sends wandb
            the ``metrics.jsonl`` records it lacks (see :meth:`_backfill_wandb`).
    """

    def __init__(
        self,
        run_dir: Path,
        wandb_config: WandbConfig,
        *,
        run_name: str,
        config: Mapping[str, Any],
        wandb_id: str | None = None,
        wandb_logged_through: int = 0,
        resend_lost_records: bool = False,
    ) -> None:
        self.path = run_dir / METRICS_FILE
        self.wandb_logged_through = wandb_logged_through
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._write_failed = False
        self.mode = resolve_wandb_mode(wandb_config.mode)
        self.wandb_run: Any = None
        if self.mode != "disabled":
            # Read before wandb.init, which starts this process's own folder.
            resend = resend_lost_records and wandb_id is not None
            offline_through = None
            if resend and wandb_id is not None and self.mode == "offline":
                offline_through = _offline_logged_through(run_dir, wandb_id)
            self.wandb_run = self._start_wandb(
                run_dir, wandb_config, run_name, config, wandb_id
            )
            if resend:
                self._backfill_wandb(run_dir, offline_through)

    def _start_wandb(
        self,
        run_dir: Path,
        wandb_config: WandbConfig,
        run_name: str,
        config: Mapping[str, Any],
        wandb_id: str | None,
    ) -> Any:
        import wandb  # imported here: wandb is slow to import and often unused

        settings = wandb.Settings(
            console="off",
            silent=True,
            # System metrics and machine info probe GPUs and cloud metadata
            # services; a training log does not need them.
            x_disable_stats=True,
            x_disable_machine_info=True,
        )
        run = wandb.init(
            project=wandb_config.project,
            entity=wandb_config.entity,
            name=run_name,
            id=wandb_id,
            resume="allow" if wandb_id else None,
            dir=str(run_dir),
            config=dict(config),
            mode=self.mode,  # type: ignore[arg-type]
            settings=settings,
        )
        logger.info("wandb run %s (%s) in %s", run.id, self.mode, run.dir)
        return run

    def _backfill_wandb(self, run_dir: Path, offline_through: int | None) -> None:
        """Send a resumed wandb run the ``metrics.jsonl`` records it lacks.

        A killed process loses the records that wandb had not written yet
        (seconds of them, measured with wandb 0.31), so wandb can end before
        the checkpoint's step or after it. This sends wandb the kept records
        after its last step, and live records only after that step, so each
        step reaches wandb once and in increasing order. The last step comes
        from the server when online (the resumed run's ``starting_step``),
        from the earlier offline folders of the run when offline
        (``offline_through``), and from ``wandb_logged_through`` when neither
        is known.
        """
        if self.mode == "online":
            # NOTE: this branch needs a wandb server and is not covered by the
            # tests, which log offline.
            logged_through: int | None = max(int(self.wandb_run.starting_step) - 1, 0)
        else:
            logged_through = offline_through
        if logged_through is None:
            return
        pending = [
            record
            for record in read_metrics(run_dir)
            if record["step"] > logged_through
        ]
        for record in pending:
            metrics = {key: value for key, value in record.items() if key != "step"}
            self.wandb_run.log(metrics, step=record["step"])
        if pending:
            logger.info(
                "sent wandb the %d records after step %d that it lacked",
                len(pending),
                logged_through,
            )
        self.wandb_logged_through = max(
            [logged_through, *(record["step"] for record in pending)]
        )

    @property
    def wandb_id(self) -> str | None:
        """The wandb run id, or None when wandb is disabled."""
        return None if self.wandb_run is None else str(self.wandb_run.id)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one record for ``step`` to every sink.

        Raises:
            OSError: ``metrics.jsonl`` cannot be written (a full disk); its
                ``filename`` is that file's path.
        """
        record = {"step": step, **metrics}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as error:
            self._write_failed = True
            raise OSError(error.errno, error.strerror, str(self.path)) from error
        if self.wandb_run is not None and step > self.wandb_logged_through:
            self.wandb_run.log(dict(metrics), step=step)

    def log_images(self, step: int, images: Mapping[str, Path]) -> None:
        """Log PNG files to wandb under the given keys."""
        if self.wandb_run is None or step <= self.wandb_logged_through:
            return
        import wandb

        self.wandb_run.log(
            {key: wandb.Image(str(path)) for key, path in images.items()}, step=step
        )

    def close(self) -> None:
        """Flush and close every sink.

        Raises:
            OSError: the last records cannot be written to ``metrics.jsonl``,
                unless :meth:`log` already raised that error.
        """
        try:
            if self.wandb_run is not None:
                run = self.wandb_run
                run.finish()
                self.wandb_run = None
                if self.mode == "offline":
                    # run.dir is the run folder's files/ subfolder.
                    record_log = Path(run.dir).parent / f"run-{run.id}.wandb"
                    wait_for_exit_record(record_log)
        finally:
            try:
                self._file.close()
            except OSError as error:
                # A failed write leaves its record in the buffer, and closing
                # fails on it again; the caller already has that error.
                if not self._write_failed:
                    raise OSError(
                        error.errno, error.strerror, str(self.path)
                    ) from error


# Layout of wandb's offline record log, ``run-ID.wandb``, as read back from
# files that wandb 0.31 wrote. The file starts with a 7-byte header (``:W&B``,
# magic 0xBEE1, version 0) and continues in 32 KiB blocks of records. Each
# record has a 7-byte header (CRC32C, little-endian length, type: 1 full,
# 2 first, 3 middle, 4 last) and a serialised ``wandb_internal_pb2.Record``.
# A record never starts in the last 6 bytes of a block, which are padding.
_WANDB_BLOCK_SIZE = 32 * 1024
# How long close() waits for wandb to finish an offline run's record log.
WANDB_FLUSH_TIMEOUT_S = 30.0
_WANDB_HEADER_SIZE = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_payloads(data: bytes) -> list[bytes]:
    """Split an offline wandb record log into record payloads; a record cut
    off by a killed writer is left out."""
    if data[:4] != b":W&B":
        raise ValueError("not a wandb record log")
    position, payloads, pending = _WANDB_HEADER_SIZE, [], b""
    while position + _WANDB_HEADER_SIZE <= len(data):
        left_in_block = _WANDB_BLOCK_SIZE - position % _WANDB_BLOCK_SIZE
        if left_in_block < _WANDB_HEADER_SIZE:
            position += left_in_block
            continue
        header = data[position : position + _WANDB_HEADER_SIZE]
        _, length, kind = struct.unpack("<IHB", header)
        if length == 0 and kind == 0:
            position += left_in_block
            continue
        start = position + _WANDB_HEADER_SIZE
        if start + length > len(data):
            break
        payload = data[start : start + length]
        position = start + length
        if kind == _FULL:
            payloads.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            payloads.append(pending + payload)
            pending = b""
    return payloads


def read_wandb_records(path: Path) -> list[Any]:
    """Read the records of an offline wandb run's ``run-ID.wandb`` file.

    Returns:
        ``wandb_internal_pb2.Record`` messages in file order. A record cut off
        by a killed writer, or one that does not parse, is left out.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not a wandb record log.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    records = []
    for payload in _wandb_payloads(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
        try:
            record.ParseFromString(payload)
        except DecodeError:
            continue
        records.append(record)
    return records


def wait_for_exit_record(
    path: Path, timeout_s: float = WANDB_FLUSH_TIMEOUT_S, poll_s: float = 0.05
) -> bool:
    """Wait until the offline record log ``path`` ends its run.

    wandb 0.31's ``finish()`` can return before its service process has
    written the log: read at once, the file may still be empty. Waiting for
    the exit record leaves a complete offline run when a command returns, for
    ``wandb sync`` or a resume to read.

    Returns:
        True when the exit record was found; False, with a warning, after
        ``timeout_s`` seconds without it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            records = read_wandb_records(path)
        except (OSError, ValueError, struct.error):
            records = []
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return True
        if time.monotonic() >= deadline:
            logger.warning(
                "wandb has not finished writing %s after %.0f s; wait before "
                "running `wandb sync` on it",
                path,
                timeout_s,
            )
            return False
        time.sleep(poll_s)


def wandb_history_key(item: Any) -> str:
    """Return the metric name of a history item; wandb 0.31 stores it as a
    one-element ``nested_key``."""
    return str(item.key or "/".join(item.nested_key))


def _offline_logged_through(run_dir: Path, run_id: str) -> int | None:
    """Return the last history step in the offline wandb folders of run
    ``run_id`` under ``run_dir`` (0 for none), or None with a warning when a
    file cannot be read."""
    last = 0
    for path in sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-*.wandb")):
        try:
            records = read_wandb_records(path)
        except (OSError, ValueError, struct.error) as error:
            logger.warning(
                "cannot read wandb's offline history %s (%s); wandb may miss "
                "the steps logged just before the run stopped",
                path,
                error,
            )
            return None
        for record in records:
            if record.WhichOneof("record_type") != "history":
                continue
            for item in record.history.item:
                if wandb_history_key(item) == "_step":
                    last = max(last, int(json.loads(item.value_json)))
    return last


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Read every record of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]
