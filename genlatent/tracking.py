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
    ) -> None:
        self.path = run_dir / METRICS_FILE
        self.wandb_logged_through = wandb_logged_through
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.mode = resolve_wandb_mode(wandb_config.mode)
        self.wandb_run: Any = None
        if self.mode != "disabled":
            self.wandb_run = self._start_wandb(
                run_dir, wandb_config, run_name, config, wandb_id
            )

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

    @property
    def wandb_id(self) -> str | None:
        """The wandb run id, or None when wandb is disabled."""
        return None if self.wandb_run is None else str(self.wandb_run.id)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one record for ``step`` to every sink."""
        record = {"step": step, **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
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
        """Flush and close every sink."""
        self._file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Read every record of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]
