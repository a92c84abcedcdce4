"""`genlatent plot`: mutual-information curves from metrics.jsonl."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image

from genlatent.cli import main
from genlatent.errors import MissingExtraError, RunFolderError
from genlatent.plotting import mutual_information_curves, plot_mutual_information


def write_metrics(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (run_dir / "metrics.jsonl").write_text(lines)


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
        # Two panels of 4 x 3.2 inches at 100 dpi.
        assert image.size == (800, 320)


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
