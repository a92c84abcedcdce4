"""Loading a run, sampling, traversals, reading codes, and the commands on
top of them, on a short real Fashion-MNIST run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import genlatent
from genlatent.checkpoint import UnsafeCheckpointError
from genlatent.errors import LatentSpecError
from genlatent.inspection import (
    load_run,
    predict_codes,
    sample,
    save_traversals,
    traverse,
)
from genlatent.latent import CategoricalCode, ContinuousCode, LatentSpec, NoiseCode
from genlatent.plugins import load_plugins
from genlatent.run import build_trainer, resolve_config, run_experiment
from genlatent.traversal import LABEL_HEIGHT, traversal_inputs

from .conftest import requires_fashion_mnist
from .test_checkpoint import write_malicious
from .wandb_records import read_history

SHORT_RUN = [
    "trainer.max_steps=4",
    "trainer.batch_size=16",
    "trainer.log_every=2",
    "trainer.sample_every=2",
    "trainer.checkpoint_every=2",
    "trainer.progress=false",
    "trainer.device=cpu",
    "wandb.mode=disabled",
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genlatent", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
        timeout=600,
    )


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "run"
    return run_experiment("infogan-fashion-mnist", SHORT_RUN, out=out).run_dir


# -- traversal inputs, no data needed -----------------------------------------------

SPEC = LatentSpec(
    [
        ContinuousCode("angle", fixed_std=1.0),
        CategoricalCode("digit", 4),
        ContinuousCode("pair", dim=2),
        NoiseCode("z", 3, distribution="uniform"),
    ]
)


def test_traversal_matches_training_input():
    config = resolve_config(
        "infogan-fashion-mnist", ["trainer.device=cpu", "trainer.seed=7"]
    )
    trainer = build_trainer(config, load_plugins(), torch.device("cpu"))
    spec = trainer.latent_spec
    state = trainer.latent_generator.get_state()
    training_input = trainer.sample_latent(5)

    generator = torch.Generator()
    generator.set_state(state)
    values = spec.sample_values(5, generator=generator)
    assert torch.equal(spec.concat_input(values), training_input)

    # The traversal of c1 keeps every other code's columns of those draws.
    generator.set_state(state)
    traversal, num_columns = traversal_inputs(spec, "c1", rows=5, generator=generator)
    assert num_columns == 10
    rows = traversal.reshape(5, 10, spec.input_dim)
    columns = spec.input_slices["c1"]
    for k in range(10):
        kept = torch.ones(spec.input_dim, dtype=torch.bool)
        kept[columns] = False
        assert torch.equal(rows[:, k, kept], training_input[:, kept])


def test_traversal_category_column_position():
    inputs, num_columns = traversal_inputs(
        SPEC, "digit", rows=3, generator=torch.Generator().manual_seed(1)
    )
    assert num_columns == 4
    start = SPEC.input_slices["digit"].start
    assert start == 1
    grid = inputs.reshape(3, 4, SPEC.input_dim)
    for k in range(4):
        one_hot = grid[:, k, SPEC.input_slices["digit"]]
        assert torch.equal(grid[:, k, start + k], torch.ones(3))
        assert float(one_hot.sum()) == 3.0


def test_traversal_continuous_sweep():
    inputs, num_columns = traversal_inputs(
        SPEC,
        "angle",
        value_range=(-2.0, 2.0),
        steps=5,
        rows=2,
        generator=torch.Generator().manual_seed(2),
    )
    assert num_columns == 5
    grid = inputs.reshape(2, 5, SPEC.input_dim)
    column = SPEC.input_slices["angle"].start
    expected = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    for row in range(2):
        assert torch.equal(grid[row, :, column], expected)
        others = torch.cat([grid[row, :, :column], grid[row, :, column + 1 :]], 1)
        assert torch.equal(others, others[:1].expand_as(others))


def test_traversal_multi_value_code_blocks():
    inputs, num_columns = traversal_inputs(
        SPEC, "pair", steps=3, rows=2, generator=torch.Generator().manual_seed(3)
    )
    # One block of 2 rows per value of the 2-value code.
    grid = inputs.reshape(2, 2, 3, SPEC.input_dim)
    pair = SPEC.input_slices["pair"]
    sweep = torch.tensor([-2.0, 0.0, 2.0])
    for dimension in range(2):
        for row in range(2):
            swept = grid[dimension, row, :, pair.start + dimension]
            fixed = grid[dimension, row, :, pair.start + 1 - dimension]
            assert torch.equal(swept, sweep)
            assert torch.equal(fixed, fixed[:1].expand(3))
    assert num_columns == 3


def test_traversal_rejects_noise_code():
    with pytest.raises(LatentSpecError, match="'z' \\(noise\\) has no traversal"):
        traversal_inputs(SPEC, "z")


def test_traversal_rejects_unknown_code():
    with pytest.raises(LatentSpecError, match="no latent code named 'nope'"):
        traversal_inputs(SPEC, "nope")


# -- a real run ---------------------------------------------------------------------


@pytest.mark.realdata
@requires_fashion_mnist
def test_load_run_restores_networks(short_run):
    run = genlatent.load_run(short_run)
    assert run.step == 4
    assert run.checkpoint_path.name == "step_00000004.pt"
    assert run.recognition_head is not None
    assert not run.generator.training
    assert not run.discriminator.training
    assert not run.recognition_head.training
    assert run.latent_spec.input_dim == 74
    assert run.architecture.name == "infogan-mnist"


@pytest.mark.realdata
@requires_fashion_mnist
def test_load_run_named_checkpoint(short_run):
    run = load_run(short_run, "step_00000002.pt")
    assert run.step == 2
    by_path = load_run(short_run, short_run / "checkpoints" / "step_00000002.pt")
    assert by_path.step == 2


@pytest.mark.realdata
@requires_fashion_mnist
def test_sample_is_seeded(short_run):
    run = load_run(short_run)
    first = sample(run, 6, seed=3)
    assert first.shape == (6, 1, 28, 28)
    assert torch.equal(first, sample(run, 6, seed=3))
    assert not torch.equal(first, sample(run, 6, seed=4))
    assert float(first.min()) >= 0.0
    assert float(first.max()) <= 1.0


@pytest.mark.realdata
@requires_fashion_mnist
def test_traverse_grid_shape(short_run):
    run = load_run(short_run)
    grid = traverse(run, "c1", rows=3, seed=0)
    # 3 rows of 10 categories, 28 pixels each plus 2-pixel padding.
    assert grid.shape == (3, 3 * 30 + 2, 10 * 30 + 2)
    continuous = traverse(run, "c2", steps=4, rows=2)
    assert continuous.shape == (3, 2 * 30 + 2, 4 * 30 + 2)


@pytest.mark.realdata
@requires_fashion_mnist
def test_predict_codes_outputs(short_run):
    run = load_run(short_run)
    images = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    predictions = predict_codes(run, images)
    assert predictions["c1"]["probabilities"].shape == (7, 10)
    assert torch.allclose(predictions["c1"]["probabilities"].sum(1), torch.ones(7))
    assert predictions["c1"]["category"].shape == (7,)
    assert predictions["c2"]["mean"].shape == (7, 1)
    # The MNIST codes fix the posterior std at 1.
    assert torch.equal(predictions["c2"]["std"], torch.ones(7, 1))
    assert "z" not in predictions


@pytest.mark.realdata
@requires_fashion_mnist
def test_predict_codes_rejects_out_of_range(short_run):
    run = load_run(short_run)
    with pytest.raises(ValueError, match=r"output range \[0, 1\]"):
        predict_codes(run, torch.full((2, 1, 28, 28), -0.5))


@pytest.mark.realdata
@requires_fashion_mnist
def test_training_writes_traversals(short_run):
    names = sorted(path.name for path in (short_run / "traversals").iterdir())
    assert names == [
        f"step_{step:08d}_{code}.png" for step in (2, 4) for code in ("c1", "c2", "c3")
    ]
    with Image.open(short_run / "traversals" / "step_00000004_c1.png") as image:
        assert image.size == (10 * 30 + 2, 10 * 30 + 2 + LABEL_HEIGHT)


@pytest.mark.realdata
@requires_fashion_mnist
def test_cli_traverse_writes_labelled_pngs(short_run, tmp_path):
    out = tmp_path / "grids"
    result = cli(
        "traverse", str(short_run), "--steps", "5", "--rows", "2", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["c1.png", "c2.png", "c3.png"]
    # Each path is printed once, on stdout, and not logged again on stderr.
    assert result.stdout.splitlines() == [
        f"wrote {out / name}" for name in ("c1.png", "c2.png", "c3.png")
    ]
    assert "c1.png" not in result.stderr
    with Image.open(out / "c2.png") as image:
        assert image.size == (5 * 30 + 2, 2 * 30 + 2 + LABEL_HEIGHT)
        # The label strip is white with dark text in it.
        strip = image.crop((0, 0, image.width, LABEL_HEIGHT)).convert("L")
        darkest, lightest = strip.getextrema()
        assert darkest < 64
        assert lightest == 255


@pytest.mark.realdata
@requires_fashion_mnist
def test_cli_traverse_default_folder(short_run):
    result = cli("traverse", str(short_run), "--code", "c3", "--rows", "1")
    assert result.returncode == 0, result.stderr
    assert (short_run / "traversals" / "c3.png").is_file()


@pytest.mark.realdata
@requires_fashion_mnist
def test_cli_sample_writes_png(short_run, tmp_path):
    out = tmp_path / "s.png"
    result = cli(
        "sample", str(short_run), "--n", "16", "--seed", "2", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote 16 samples from step 4 to {out}" in result.stdout
    with Image.open(out) as image:
        assert image.size == (8 * 30 + 2, 2 * 30 + 2 + LABEL_HEIGHT)


@pytest.mark.realdata
@requires_fashion_mnist
def test_cli_sample_full_disk_one_line(short_run, tmp_path):
    # A PNG path that leads to /dev/full fails every write with ENOSPC, and
    # PIL's error carries no file name of its own.
    out = tmp_path / "s.png"
    out.symlink_to("/dev/full")
    result = cli("sample", str(short_run), "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"genlatent: error: {out}: No space left on device"
    ]


@pytest.mark.realdata
@requires_fashion_mnist
def test_cli_traverse_unknown_code_one_line(short_run):
    result = cli("traverse", str(short_run), "--code", "c9")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no latent code named 'c9'" in lines[0]


def test_load_run_missing_folder(tmp_path):
    with pytest.raises(genlatent.GenlatentError, match="is not a run folder"):
        load_run(tmp_path / "none")


@pytest.mark.realdata
@requires_fashion_mnist
def test_load_run_rejects_pickled_code(short_run, tmp_path):
    run_dir = tmp_path / "unsafe"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_bytes((short_run / "config.json").read_bytes())
    marker = tmp_path / "marker"
    write_malicious(run_dir / "checkpoints" / "step_00000009.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match="disallowed objects"):
        load_run(run_dir)
    assert not marker.exists()
    for command in ("eval", "sample", "traverse"):
        result = cli(command, str(run_dir))
        assert result.returncode == 1, command
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "contains disallowed objects and was not loaded" in lines[0]
        assert not marker.exists(), command


@pytest.mark.realdata
@requires_fashion_mnist
def test_traverse_logs_to_offline_wandb(tmp_path):
    run_dir = run_experiment(
        "infogan-fashion-mnist",
        [*SHORT_RUN[:-1], "trainer.max_steps=2", "wandb.mode=offline"],
        out=tmp_path / "run",
    ).run_dir
    paths = save_traversals(load_run(run_dir), ["c1"], rows=1)
    assert paths == [run_dir / "traversals" / "c1.png"]
    rows = [row for row in read_history(run_dir) if "traversal/c1/path" in row]
    # Training logs the step-2 grid, then `traverse` logs its own at step 2.
    assert [row["_step"] for row in rows] == [2, 2]
