"""Traversal grids: one code varies along each row, every other input fixed.

Shared by training, which writes a grid per code at each sampling step, and by
``genlatent traverse``. Inputs are assembled by :meth:`LatentSpec.concat_input`
from draws made by :meth:`LatentSpec.sample_values`, as in training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from genlatent.errors import LatentSpecError
from genlatent.latent import CategoricalCode, ContinuousCode, LatentSpec

TRAVERSALS_DIR = "traversals"
# Height in pixels of the text strip above a labelled grid.
LABEL_HEIGHT = 16


def traversal_inputs(
    latent_spec: LatentSpec,
    code: str,
    *,
    value_range: tuple[float, float] = (-2.0, 2.0),
    steps: int = 10,
    rows: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """Build the generator inputs of a traversal grid of one code.

    Each row starts from one draw of every code from the priors. Along the row
    only ``code`` changes, through its kind's
    :meth:`~genlatent.latent.LatentCode.traversal_values`: a categorical code
    takes each category in turn, and a continuous code takes ``steps`` evenly
    spaced values from ``value_range``. A continuous code of ``dim`` values
    sweeps one value at a time, in ``dim`` blocks of ``rows`` rows, with its
    other values as drawn.

    Returns:
        ``(num_rows * num_columns, input_dim)`` inputs in row-major order, and
        ``num_columns``.

    Raises:
        LatentSpecError: ``code`` is unknown or its kind has no traversal, or
            ``steps`` or ``rows`` is not positive.
    """
    target = latent_spec[code]
    for name, value in (("steps", steps), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LatentSpecError(f"{name} must be a positive integer, got {value!r}")
    if target not in latent_spec.traversable_codes:
        names = ", ".join(code.name for code in latent_spec.traversable_codes)
        raise LatentSpecError(
            f"latent code {code!r} ({target.kind}) has no traversal; traverse one "
            f"of: {names}"
        )
    values = latent_spec.sample_values(rows, generator=generator)
    swept = target.traversal_values(values[code], value_range=value_range, steps=steps)
    assert swept is not None  # a traversable code's kind returns its values
    blocks, num_columns = swept
    inputs = []
    for block in blocks:
        repeated = {
            name: value.repeat_interleave(num_columns, dim=0)
            for name, value in values.items()
        }
        repeated[code] = block
        inputs.append(latent_spec.concat_input(repeated))
    return torch.cat(inputs), num_columns


def to_unit_range(
    images: torch.Tensor, output_range: tuple[float, float]
) -> torch.Tensor:
    """Map images from the generator's ``output_range`` to [0, 1] floats."""
    low, high = output_range
    return (images.float() - low) / (high - low)


def image_grid(
    images: torch.Tensor, output_range: tuple[float, float], num_columns: int
) -> torch.Tensor:
    """Tile images into a ``(3, height, width)`` grid in [0, 1]."""
    unit = to_unit_range(images.cpu(), output_range).clamp(0.0, 1.0)
    return make_grid(unit, nrow=num_columns, padding=2)


def traversal_label(
    latent_spec: LatentSpec,
    code: str,
    value_range: tuple[float, float] = (-2.0, 2.0),
) -> str:
    """Describe what the columns of a code's traversal grid show."""
    target = latent_spec[code]
    if isinstance(target, CategoricalCode):
        return f"{code}: categories 0..{target.num_categories - 1} (columns)"
    if not isinstance(target, ContinuousCode):
        return f"{code} ({target.kind}) along the columns"
    low, high = value_range
    label = f"{code}: {low:g} to {high:g} (columns)"
    if target.dim > 1:
        label += f", one block of rows per value 0..{target.dim - 1}"
    return label


def save_labelled_grid(grid: torch.Tensor, label: str, path: Path) -> Path:
    """Save a [0, 1] image grid as a PNG with ``label`` in a strip above it."""
    pixels = (grid.clamp(0.0, 1.0) * 255).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()  # (height, width, 3)
    body = Image.fromarray(array, mode="RGB")
    image = Image.new("RGB", (body.width, body.height + LABEL_HEIGHT), "white")
    image.paste(body, (0, LABEL_HEIGHT))
    ImageDraw.Draw(image).text((2, 2), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_path(path):
        image.save(path)
    return path


@contextmanager
def naming_path(path: Path) -> Iterator[None]:
    """Give an OSError raised while writing ``path`` the path as its filename.

    PIL's write errors (a full disk, for one) carry no file name, so without
    this the command line could not say which file failed.
    """
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
