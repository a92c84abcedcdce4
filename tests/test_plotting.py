"""`genlatent plot`: mutual-information curves from metrics.jsonl."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

from genlatent.cli import main
from genlatent.errors import MissingExtraError, RunFolderError
from genlatent.latent import ContinuousCode
from genlatent.plotting import (
    lower_bound_maxima,
    lower_bound_maximum,
    mutual_information_curves,
    plot_mutual_information,
)


def write_metrics(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (run_dir / "metrics.jsonl").write_text(lines)


def write_latent_config(run_dir, latent):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"latent": latent}))


def red_pixel_count(path):
    # matplotlib's "tab:red", the color of the L_I maximum line.
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    distance = np.abs(pixels - np.array([214, 39, 40])).sum(axis=-1)
    return int((distance < 30).sum())


RECORDS = [
    {"step": 50, "mi/c1": 0.5, "mi/c2": -0.4, "entropy/c1": 2.302585, "d_loss": 1.0},
    {"step": 100, "mi/c1": 1.9, "mi/c2": -0.2, "entropy/c1": 2.302585, "d_loss": 1.1},
]


def test_curves_collect_codes():
    curves = mutual_information_curves(RECORDS)
    assert curves["c1"] == ([50, 100], [0.5, 1.9], 2.302585)
    assert curves["c2"] == ([50, 100], [-0.4, -0.2], None)


def test_plot_writes_png(tmp_path):
    write_metrics(tmp_path / "run", RECORDS)
    path = plot_mutual_information(tmp_path / "run")
    assert path == tmp_path / "run" / "mutual_information.png"
    with Image.open(path) as image:
        # Two panels of 4 x 3.6 inches at 100 dpi.
        assert image.size == (800, 360)


def test_maximum_uniform_std_one():
    maximum = lower_bound_maximum(ContinuousCode("c2", fixed_std=1.0))
    # H(c) = ln 2 for Unif(-1, 1), and log N(c; c, 1) = -ln(2 pi) / 2.
    assert maximum == math.log(2.0) - 0.5 * math.log(2.0 * math.pi)
    assert round(maximum, 3) == -0.226


def test_maximum_gaussian_two_dims():
    code = ContinuousCode("c2", dim=2, prior="gaussian", fixed_std=0.5)
    # Per dimension H(c) = ln(2 pi) / 2 + 1/2 and the best log-density is
    # -ln(2 pi) / 2 - ln(0.5), so the maximum is 2 * (1/2 + ln 2).
    assert lower_bound_maximum(code) == pytest.approx(1.0 + 2.0 * math.log(2.0))


def test_maximum_learned_std_none():
    assert lower_bound_maximum(ContinuousCode("c2")) is None


def test_maxima_from_config(tmp_path):
    latent = [
        {"kind": "categorical", "name": "c1", "num_categories": 10},
        {"kind": "continuous", "name": "c2", "fixed_std": 1.0},
        {"kind": "continuous", "name": "c3", "fixed_std": None},
        {"kind": "noise", "name": "z", "dim": 62},
    ]
    write_latent_config(tmp_path / "run", latent)
    expected = math.log(2.0) - 0.5 * math.log(2.0 * math.pi)
    assert lower_bound_maxima(tmp_path / "run") == {"c2": expected}


def test_maxima_without_config(tmp_path):
    assert lower_bound_maxima(tmp_path) == {}


def test_maxima_broken_config_warns(tmp_path, caplog):
    (tmp_path / "config.json").write_text('{"latent": [')
    with caplog.at_level("WARNING", logger="genlatent"):
        assert lower_bound_maxima(tmp_path) == {}
    assert len(caplog.records) == 1
    assert str(tmp_path / "config.json") in caplog.records[0].getMessage()


def test_plot_draws_fixed_std_maximum(tmp_path):
    fixed = tmp_path / "fixed"
    write_metrics(fixed, RECORDS)
    write_latent_config(fixed, [{"kind": "continuous", "name": "c2", "fixed_std": 1}])
    learned = tmp_path / "learned"
    write_metrics(learned, RECORDS)
    write_latent_config(learned, [{"kind": "continuous", "name": "c2"}])
    assert red_pixel_count(plot_mutual_information(fixed)) > 0
    assert red_pixel_count(plot_mutual_information(learned)) == 0


def test_cli_plot_and_curves_alias(tmp_path, capsys):
    write_metrics(tmp_path / "run", RECORDS)
    out = tmp_path / "curves.png"
    assert main(["curves", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert out.is_file()
    output = capsys.readouterr()
    assert output.out == f"wrote {out}\n"
    assert str(out) not in output.err


def test_plot_without_mi_records(tmp_path):
    write_metrics(tmp_path / "run", [{"step": 1, "d_loss": 1.0}])
    with pytest.raises(RunFolderError, match="no mutual-information records"):
        plot_mutual_information(tmp_path / "run")


def test_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    write_metrics(tmp_path / "run", RECORDS)
    # A None entry makes `import matplotlib` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'genlatent\[plot\]'"):
        plot_mutual_information(tmp_path / "run")
    assert main(["plot", str(tmp_path / "run")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "pip install 'genlatent[plot]'" in lines[0]
    assert not (tmp_path / "run" / "mutual_information.png").exists()
