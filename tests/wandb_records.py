"""Read logged history back from offline wandb runs, through the same
record-log reader that genlatent uses to resume them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genlatent.tracking import read_wandb_records, wandb_history_key


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Every history row of the offline wandb runs under ``run_dir``, in the
    order the runs started (a resumed run adds one folder per resume)."""
    rows = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        for record in read_wandb_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            rows.append(
                {
                    wandb_history_key(item): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
