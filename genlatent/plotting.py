"""Training curves from a run's ``metrics.jsonl``, drawn with matplotlib.

matplotlib is an optional dependency: ``pip install 'genlatent[plot]'``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from genlatent.errors import MissingExtraError, RunFolderError
from genlatent.tracking import METRICS_FILE, read_metrics

logger = logging.getLogger(__name__)

CURVES_FILE = "mutual_information.png"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise MissingExtraError(
            "plotting needs matplotlib, which is not installed; install it with "
            "`pip install 'genlatent[plot]'`"
        ) from None
    return pyplot


def mutual_information_curves(
    records: list[dict[str, Any]],
) -> dict[str, tuple[list[int], list[float], float | None]]:
    """Collect ``{code: (steps, L_I values, H(c))}`` from metric records."""
    curves: dict[str, tuple[list[int], list[float], float | None]] = {}
    for record in records:
        for key, value in record.items():
            if not key.startswith("mi/"):
                continue
            name = key.removeprefix("mi/")
            steps, values, _ = curves.setdefault(name, ([], [], None))
            steps.append(int(record["step"]))
            values.append(float(value))
            entropy = record.get(f"entropy/{name}")
            if entropy is not None:
                curves[name] = (steps, values, float(entropy))
    return curves


def plot_mutual_information(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plot L_I of each code against its entropy H(c) over training steps.

    Writes one panel per code to ``out`` (``RUN_DIR/mutual_information.png``
    by default).

    Raises:
        MissingExtraError: matplotlib is not installed.
        RunFolderError: the run has no metrics, or none with an ``mi/`` key.
    """
    run_dir = Path(run_dir)
    pyplot = _pyplot()
    if not (run_dir / METRICS_FILE).is_file():
        raise RunFolderError(
            f"{run_dir} has no {METRICS_FILE}; pass a run folder written by "
            "`genlatent run`"
        )
    curves = mutual_information_curves(read_metrics(run_dir))
    if not curves:
        raise RunFolderError(
            f"{run_dir / METRICS_FILE} has no mutual-information records (mi/...); "
            "the run has no 'mi' regularizer"
        )
    path = Path(out) if out is not None else run_dir / CURVES_FILE
    figure, axes = pyplot.subplots(
        1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False
    )
    for axis, (name, (steps, values, entropy)) in zip(
        axes[0], curves.items(), strict=True
    ):
        axis.plot(steps, values, label="$L_I$ lower bound")
        if entropy is not None:
            axis.axhline(entropy, color="gray", linestyle="--", label="$H(c)$")
        axis.set_title(f"code {name}")
        axis.set_xlabel("step")
        axis.set_ylabel("nats")
        axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    # Debug level, because `genlatent plot` prints the path.
    logger.debug("wrote %s", path)
    return path
