"""Training curves from a run's ``metrics.jsonl``, drawn with matplotlib.

matplotlib is an optional dependency: ``pip install 'genlatent[plot]'``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from genlatent.errors import MissingExtraError, RunFolderError
from genlatent.latent import HALF_LOG_2PI, ContinuousCode, code_from_config
from genlatent.run import CONFIG_FILE
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


def lower_bound_maximum(code: ContinuousCode) -> float | None:
    """Return the maximum of L_I in nats for a continuous code, or None for a
    learned posterior std.

    With a fixed std s, Q's log-density of a value is at most
    -ln(2 pi) / 2 - ln(s) per dimension, reached when Q's mean equals the
    value, so L_I = H(c) - E[NLL] <= H(c) - dim * (ln(2 pi) / 2 + ln(s)). A
    learned std can shrink toward 0, so then L_I has no finite maximum.
    """
    if code.fixed_std is None:
        return None
    return code.entropy - code.dim * (HALF_LOG_2PI + math.log(code.fixed_std))


def lower_bound_maxima(run_dir: Path) -> dict[str, float]:
    """Return the L_I maximum of each continuous code with a fixed posterior
    std, read from the run's config.json.

    A run folder without config.json, or with one that does not parse, gives
    no maxima; the second case logs a warning.
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["latent"]
        codes = [
            code_from_config(entry, {"continuous": ContinuousCode})
            for entry in entries
            if entry.get("kind") == "continuous"
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # LatentSpecError and json.JSONDecodeError are ValueErrors.
        logger.warning(
            "cannot read the latent codes from %s (%s: %s); plotting without "
            "the L_I maxima",
            path,
            type(error).__name__,
            error,
        )
        return {}
    maxima = {}
    for code in codes:
        if isinstance(code, ContinuousCode):
            maximum = lower_bound_maximum(code)
            if maximum is not None:
                maxima[code.name] = maximum
    return maxima


def plot_mutual_information(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plot L_I of each code against its entropy H(c) over training steps.

    Writes one panel per code to ``out`` (``RUN_DIR/mutual_information.png``
    by default). Continuous codes with a fixed posterior std also get the
    maximum of L_I (:func:`lower_bound_maximum`) as a dashed line.

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
    maxima = lower_bound_maxima(run_dir)
    path = Path(out) if out is not None else run_dir / CURVES_FILE
    figure, axes = pyplot.subplots(
        1, len(curves), figsize=(4 * len(curves), 3.6), squeeze=False
    )
    for axis, (name, (steps, values, entropy)) in zip(
        axes[0], curves.items(), strict=True
    ):
        axis.plot(steps, values, label="$L_I$ lower bound")
        if entropy is not None:
            axis.axhline(entropy, color="gray", linestyle="--", label="$H(c)$")
        maximum = maxima.get(name)
        if maximum is not None:
            axis.axhline(
                maximum,
                color="tab:red",
                linestyle="--",
                label=f"max $L_I$ = {maximum:.3f}",
            )
        axis.set_title(f"code {name}")
        axis.set_xlabel("step")
        axis.set_ylabel("nats")
        # Below the panel, in one row, where it cannot hide a curve.
        handles, _ = axis.get_legend_handles_labels()
        axis.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=len(handles),
            fontsize="small",
            frameon=False,
            handlelength=1.5,
            columnspacing=1.0,
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    # Debug level, because `genlatent plot` prints the path.
    logger.debug("wrote %s", path)
    return path
