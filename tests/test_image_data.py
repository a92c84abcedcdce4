"""Tests for genlatent.image_data: SVHN ``.mat`` files, image folders in the
CelebA, 3D chairs and 3D faces layouts, the corrupt-file check, and short
training runs of the InfoGAN paper's experiments on tiny generated data.

Every data set is written at test time in its real on-disk layout. Downloads
are off, and the cache, ``$GENLATENT_DATA`` and the system data set folder
point at temporary folders.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from genlatent.config import DataConfig
from genlatent.data import BatchStream
from genlatent.errors import ConfigError, DataError
from genlatent.image_data import (
    ImageFileDataset,
    ImageFolderSource,
    SVHNSource,
    center_crop_box,
)
from genlatent.plugins import PluginHost, load_plugins
from genlatent.run import resolve_config, run_experiment
from genlatent.tracking import read_metrics

IMAGE_DATA_LOGGER = "genlatent.image_data"
# CelebA's aligned images are 178 pixels wide and 218 high.
CELEBA_SIZE = (178, 218)
CHAIRS_SIZE = (600, 600)


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLATENT_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.setenv("GENLATENT_SYSTEM_DATASETS", str(tmp_path / "system"))
    monkeypatch.delenv("GENLATENT_DATA", raising=False)


@pytest.fixture(scope="module")
def plugins() -> PluginHost:
    return load_plugins()


def data_config(dataset: str, root: Path | None = None, **fields) -> DataConfig:
    return DataConfig(
        dataset=dataset,
        root=None if root is None else str(root),
        download=False,
        **fields,
    )


# ---------------------------------------------------------------------------
# Writing tiny data sets in their real layouts.


def smooth_image(index: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A smooth image that differs per ``index``: random 6x6 colors upscaled."""
    generator = np.random.default_rng(index)
    channels = 3 if mode == "RGB" else 1
    coarse = generator.integers(0, 256, (6, 6, channels), dtype=np.uint8)
    small = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse, mode)
    return small.resize(size, resample=Image.Resampling.BICUBIC)


def write_celeba(root: Path, count: int) -> Path:
    """Write ``count`` JPEGs as ``root/celeba/img_align_celeba/000001.jpg``..."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for index in range(1, count + 1):
        smooth_image(index, CELEBA_SIZE).save(folder / f"{index:06d}.jpg", quality=90)
    return folder


def write_chairs(root: Path, num_models: int, num_views: int) -> Path:
    """Write renders as ``root/rendered_chairs/<model>/renders/*.png``."""
    folder = root / "rendered_chairs"
    for model in range(num_models):
        renders = folder / f"{model:032x}" / "renders"
        renders.mkdir(parents=True)
        for view in range(num_views):
            image = Image.new("L", CHAIRS_SIZE, 255)
            chair = smooth_image(model * 100 + view, (200, 300), mode="L")
            image.paste(chair, (200, 150))
            image.save(renders / f"image_{view:03d}_p020_t{view * 10:03d}_r096.png")
    return folder


def write_faces(folder: Path, count: int) -> Path:
    """Write ``count`` 64x64 face PNGs into one folder, gray and RGB mixed."""
    folder.mkdir(parents=True)
    for index in range(count):
        mode = "L" if index % 2 else "RGB"
        smooth_image(index, (64, 64), mode).save(folder / f"face_{index:04d}.png")
    return folder


def svhn_arrays(labels: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """SVHN's .mat contents: X as (32, 32, 3, N) uint8, y as (N, 1) uint8."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    return {"X": images, "y": np.array(labels, dtype=np.uint8).reshape(-1, 1)}


def write_svhn(folder: Path, labels: list[int], split: str = "train") -> np.ndarray:
    """Write ``<split>_32x32.mat`` into ``folder`` and return its X array."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = svhn_arrays(labels)
    scipy.io.savemat(folder / f"{split}_32x32.mat", arrays)
    return arrays["X"]


def truncate(path: Path) -> None:
    """Cut a file to half its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------------------
# Registered sources.


@pytest.mark.parametrize(
    ("name", "image_shape"),
    [
        ("svhn", (3, 32, 32)),
        ("celeba", (3, 32, 32)),
        ("faces", (1, 32, 32)),
        ("chairs", (1, 64, 64)),
    ],
)
def test_registry_image_sources(plugins: PluginHost, name: str, image_shape) -> None:
    source = plugins.get("datasets", name)
    assert source.name == name
    assert source.image_shape == image_shape


def test_registry_defaults(plugins: PluginHost) -> None:
    assert isinstance(plugins.get("datasets", "svhn"), SVHNSource)
    celeba = plugins.get("datasets", "celeba")
    chairs = plugins.get("datasets", "chairs")
    faces = plugins.get("datasets", "faces")
    assert isinstance(celeba, ImageFolderSource)
    assert celeba.default_crop == 108
    assert chairs.default_crop == 400
    assert faces.default_crop == 0
    assert plugins.get("datasets", "svhn").num_classes == 10


# ---------------------------------------------------------------------------
# SVHN.


def test_svhn_labels_ten_is_zero(plugins: PluginHost, tmp_path: Path) -> None:
    write_svhn(tmp_path / "svhn", [10, 1, 9])
    data = plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))
    assert data.labels is not None
    assert data.labels.tolist() == [0, 1, 9]
    assert data.labels.dtype == torch.int64
    assert data.labels.ndim == 1
    assert data.num_classes == 10


def test_svhn_pixels_layout(plugins: PluginHost, tmp_path: Path) -> None:
    written = write_svhn(tmp_path / "svhn", [10, 1, 9])
    data = plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))
    assert data.images is not None
    assert data.images.shape == (3, 3, 32, 32)
    assert data.images.dtype == torch.uint8
    assert data.images.is_contiguous()
    for index in range(3):
        expected = torch.from_numpy(written[:, :, :, index]).permute(2, 0, 1)
        assert torch.equal(data.images[index], expected)
    assert data.location == str(tmp_path / "svhn")


def test_svhn_one_image_labels_1d(plugins: PluginHost, tmp_path: Path) -> None:
    write_svhn(tmp_path, [10])
    data = plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))
    assert data.labels is not None
    assert data.labels.shape == (1,)
    assert data.labels.tolist() == [0]


def test_svhn_test_split(plugins: PluginHost, tmp_path: Path) -> None:
    write_svhn(tmp_path, [3, 10, 10, 4], split="test")
    config = data_config("svhn", tmp_path, split="test")
    data = plugins.get("datasets", "svhn").load(config)
    assert data.labels is not None
    assert data.labels.tolist() == [3, 0, 0, 4]


def test_svhn_data_env_lookup(
    plugins: PluginHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_svhn(tmp_path / "data" / "svhn", [1, 2])
    monkeypatch.setenv("GENLATENT_DATA", str(tmp_path / "data"))
    data = plugins.get("datasets", "svhn").load(data_config("svhn"))
    assert data.location == str(tmp_path / "data" / "svhn")


def test_svhn_split_invalid(plugins: PluginHost, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has splits train, test, extra"):
        plugins.get("datasets", "svhn").load(
            data_config("svhn", tmp_path, split="valid")
        )


def test_svhn_missing_message(plugins: PluginHost, tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))
    message = str(caught.value)
    assert "train_32x32.mat" in message
    assert str(tmp_path) in message
    assert str(tmp_path / "svhn") in message
    assert str(tmp_path / "cache-home" / "genlatent" / "svhn") in message
    assert str(tmp_path / "system" / "svhn") in message
    assert "http://ufldl.stanford.edu/housenumbers/train_32x32.mat" in message
    assert "No download was tried" in message
    cache = tmp_path / "cache-home" / "genlatent" / "svhn"
    assert message.endswith(
        "To add it by hand, download "
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat and put it in "
        f"{cache}, in $GENLATENT_DATA/svhn, or in a folder given as "
        "data.root=FOLDER."
    )


def test_svhn_wrong_image_shape(plugins: PluginHost, tmp_path: Path) -> None:
    images = np.zeros((28, 28, 1, 2), dtype=np.uint8)
    labels = np.array([[1], [2]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": images, "y": labels})
    with pytest.raises(DataError, match=r"\(28, 28, 1, 2\)") as caught:
        plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))
    assert str(tmp_path / "train_32x32.mat") in str(caught.value)


def test_svhn_label_out_of_range(plugins: PluginHost, tmp_path: Path) -> None:
    write_svhn(tmp_path, [1, 11])
    with pytest.raises(DataError, match=r"labels 1\.\.\.11"):
        plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))


def test_svhn_label_count_mismatch(plugins: PluginHost, tmp_path: Path) -> None:
    arrays = svhn_arrays([1, 2, 3])
    arrays["y"] = arrays["y"][:2]
    scipy.io.savemat(tmp_path / "train_32x32.mat", arrays)
    with pytest.raises(DataError, match="3 images but 2 labels"):
        plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))


@pytest.mark.parametrize("content", [b"", b"not a MATLAB file" * 100])
def test_svhn_unreadable_file(
    plugins: PluginHost, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))
    assert str(path) in str(caught.value)
    assert "replace it with the original file" in str(caught.value)


def test_svhn_truncated_file(plugins: PluginHost, tmp_path: Path) -> None:
    write_svhn(tmp_path, list(range(1, 11)) * 4)
    truncate(tmp_path / "train_32x32.mat")
    with pytest.raises(DataError, match="replace it with the original file"):
        plugins.get("datasets", "svhn").load(data_config("svhn", tmp_path))


# ---------------------------------------------------------------------------
# Folder lookup and layouts.


@pytest.mark.parametrize("root_level", ["parent", "celeba", "img_align_celeba"])
def test_celeba_standard_layout(
    plugins: PluginHost, tmp_path: Path, root_level: str
) -> None:
    images_folder = write_celeba(tmp_path, 5)
    root = {
        "parent": tmp_path,
        "celeba": tmp_path / "celeba",
        "img_align_celeba": images_folder,
    }[root_level]
    data = plugins.get("datasets", "celeba").load(data_config("celeba", root))
    assert len(data) == 5
    assert data.images is not None
    assert data.images.shape == (5, 3, 32, 32)
    assert data.images.dtype == torch.uint8
    assert data.labels is None


def test_celeba_any_folder(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "my-faces"
    folder.mkdir()
    for index in range(3):
        smooth_image(index, (120, 150)).save(folder / f"person{index}.png")
    (folder / "notes.txt").write_text("not an image")
    data = plugins.get("datasets", "celeba").load(data_config("celeba", folder))
    assert len(data) == 3
    assert data.location == str(folder)


def test_celeba_data_env_lookup(
    plugins: PluginHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_celeba(tmp_path / "data", 2)
    monkeypatch.setenv("GENLATENT_DATA", str(tmp_path / "data"))
    data = plugins.get("datasets", "celeba").load(data_config("celeba"))
    assert data.location == str(tmp_path / "data" / "celeba")
    assert len(data) == 2


def test_celeba_cache_lookup(plugins: PluginHost, tmp_path: Path) -> None:
    write_celeba(tmp_path / "cache-home" / "genlatent", 2)
    data = plugins.get("datasets", "celeba").load(data_config("celeba"))
    assert data.location == str(tmp_path / "cache-home" / "genlatent" / "celeba")


def test_folder_sorted_order(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for index in (3, 1, 2):
        Image.new("L", (8, 8), index * 50).save(folder / f"{index}.png")
    data = plugins.get("datasets", "faces").load(data_config("faces", folder))
    assert data.images is not None
    assert data.images[:, 0, 0, 0].tolist() == [50, 100, 150]


@pytest.mark.parametrize("root_level", ["parent", "chairs", "rendered_chairs"])
def test_chairs_layout(plugins: PluginHost, tmp_path: Path, root_level: str) -> None:
    rendered = write_chairs(tmp_path / "chairs", num_models=2, num_views=3)
    root = {
        "parent": tmp_path,
        "chairs": tmp_path / "chairs",
        "rendered_chairs": rendered,
    }[root_level]
    data = plugins.get("datasets", "chairs").load(data_config("chairs", root))
    assert len(data) == 6
    assert data.images is not None
    assert data.images.shape == (6, 1, 64, 64)


def test_chairs_default_crop(plugins: PluginHost, tmp_path: Path) -> None:
    # A black border of 100 px around a white 400x400 center: the default
    # 400 px crop keeps only the white part.
    renders = tmp_path / "rendered_chairs" / "model" / "renders"
    renders.mkdir(parents=True)
    image = Image.new("L", CHAIRS_SIZE, 0)
    image.paste(255, (100, 100, 500, 500))
    image.save(renders / "image_000.png")
    source = plugins.get("datasets", "chairs")

    data = source.load(data_config("chairs", tmp_path))
    assert data.images is not None
    assert data.images.min() == 255

    whole = source.load(data_config("chairs", tmp_path, crop=0))
    assert whole.images is not None
    assert whole.images.min() == 0


def test_faces_folder(plugins: PluginHost, tmp_path: Path) -> None:
    folder = write_faces(tmp_path / "faces", 6)
    data = plugins.get("datasets", "faces").load(data_config("faces", folder))
    assert data.images is not None
    assert data.images.shape == (6, 1, 32, 32)


def test_folder_split_invalid(plugins: PluginHost, tmp_path: Path) -> None:
    folder = write_faces(tmp_path / "faces", 2)
    with pytest.raises(DataError, match="single split train"):
        plugins.get("datasets", "faces").load(
            data_config("faces", folder, split="test")
        )


def test_empty_folder_message(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError) as caught:
        plugins.get("datasets", "celeba").load(data_config("celeba", folder))
    message = str(caught.value)
    assert "matching img_align_celeba/* or * in: " in message
    assert f"{folder} is empty" in message
    assert str(folder / "celeba") in message
    assert str(tmp_path / "cache-home" / "genlatent" / "celeba") in message
    assert str(tmp_path / "system" / "celeba") in message
    assert message.count("https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html") == 1
    assert message.count("Put the images in") == 1
    assert "data.root=FOLDER" in message


def test_no_images_folder_message(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "celeba"
    folder.mkdir()
    (folder / "list_attr_celeba.txt").write_text("202599\n")
    (folder / "img_align_celeba.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError) as caught:
        plugins.get("datasets", "celeba").load(data_config("celeba", folder))
    message = str(caught.value)
    assert f"{folder} contains no image files (2 entries" in message
    assert "extract img_align_celeba.zip first" in message


def test_chairs_missing_message(plugins: PluginHost, tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        plugins.get("datasets", "chairs").load(data_config("chairs", tmp_path))
    message = str(caught.value)
    assert "matching rendered_chairs/*/renders/*, */renders/* or * in: " in message
    assert str(tmp_path / "chairs") in message
    assert "rendered_chairs.tar" in message


# ---------------------------------------------------------------------------
# Decoding: crop, color conversion, transparency, 16-bit files.


@pytest.mark.parametrize(
    ("size", "crop", "box"),
    [
        ((178, 218), 108, (35, 55, 143, 163)),
        ((178, 218), 140, (19, 39, 159, 179)),
        ((178, 218), 0, (0, 20, 178, 198)),
        ((178, 218), 500, (0, 20, 178, 198)),
        ((600, 600), 400, (100, 100, 500, 500)),
        ((101, 50), 10, (46, 20, 56, 30)),
    ],
)
def test_center_crop_box(size, crop: int, box) -> None:
    assert center_crop_box(*size, crop) == box


def test_celeba_default_crop(plugins: PluginHost, tmp_path: Path) -> None:
    # White inside the default 108 px center square, black outside it.
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    image = Image.new("RGB", CELEBA_SIZE, (0, 0, 0))
    image.paste((255, 255, 255), (35, 55, 143, 163))
    image.save(folder / "000001.png")
    source = plugins.get("datasets", "celeba")

    data = source.load(data_config("celeba", tmp_path))
    assert data.images is not None
    assert data.images.min() == 255

    wider = source.load(data_config("celeba", tmp_path, crop=140))
    assert wider.images is not None
    assert wider.images[0, :, 0, 0].tolist() == [0, 0, 0]
    assert wider.images[0, :, 16, 16].tolist() == [255, 255, 255]


def test_gray_file_in_color_set(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    smooth_image(0, CELEBA_SIZE, mode="L").save(folder / "gray.jpg")
    data = plugins.get("datasets", "celeba").load(data_config("celeba", folder))
    assert data.images is not None
    assert data.images.shape == (1, 3, 32, 32)
    assert torch.equal(data.images[0, 0], data.images[0, 1])
    assert torch.equal(data.images[0, 0], data.images[0, 2])


def test_color_file_in_gray_set(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(folder / "red.png")
    data = plugins.get("datasets", "faces").load(data_config("faces", folder))
    assert data.images is not None
    assert data.images.shape == (1, 1, 32, 32)
    # ITU-R 601-2 luma, as Pillow converts: 299/1000 of red.
    assert data.images.unique().tolist() == [76]


def test_transparent_png_on_white(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (0, 0, 16, 32))
    image.save(folder / "half.png")
    data = plugins.get("datasets", "faces").load(data_config("faces", folder))
    assert data.images is not None
    assert data.images[0, 0, :, :16].unique().tolist() == [0]
    assert data.images[0, 0, :, 16:].unique().tolist() == [255]


def test_16bit_png_scaled(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    pixels = np.full((32, 32), 65535, dtype=np.uint16)
    pixels[:, 16:] = 32896
    Image.fromarray(pixels).save(folder / "deep.png")
    with Image.open(folder / "deep.png") as written:
        assert written.mode == "I;16"
    data = plugins.get("datasets", "faces").load(data_config("faces", folder))
    assert data.images is not None
    assert data.images[0, 0, :, :16].unique().tolist() == [255]
    assert data.images[0, 0, :, 16:].unique().tolist() == [128]


def test_crop_override_parsed() -> None:
    assert resolve_config("infogan-celeba", ["data.crop=140"]).data.crop == 140
    assert resolve_config("infogan-celeba", ["data.crop=none"]).data.crop is None
    skip = resolve_config("infogan-celeba", ["data.skip_corrupt=true"])
    assert skip.data.skip_corrupt is True


@pytest.mark.parametrize("value", ["-1", "2.5", "wide"])
def test_crop_override_invalid(value: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.crop"):
        resolve_config("infogan-celeba", [f"data.crop={value}"])


# ---------------------------------------------------------------------------
# Corrupt files.


def faces_with_defects(folder: Path, count: int) -> dict[str, Path]:
    """Write ``count`` PNGs, then break some: a truncated PNG, random bytes
    named .jpg and a PNG with a wrong chunk checksum."""
    write_faces(folder, count)
    truncated = folder / "face_0001.png"
    truncate(truncated)
    (folder / "face_0002.png").unlink()
    garbage = folder / "face_0002.jpg"
    garbage.write_bytes(os.urandom(2000))
    checksum = folder / "face_0003.png"
    data = bytearray(checksum.read_bytes())
    data[29] ^= 0xFF  # a byte of the IHDR chunk's checksum
    checksum.write_bytes(bytes(data))
    return {"truncated": truncated, "garbage": garbage, "checksum": checksum}


def test_corrupt_file_named(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    write_faces(folder, 4)
    broken = folder / "face_0002.png"
    truncate(broken)
    with pytest.raises(DataError) as caught:
        plugins.get("datasets", "faces").load(data_config("faces", folder))
    message = str(caught.value)
    assert message.startswith(f"{broken} is not a readable image")
    assert "data.skip_corrupt=true" in message


def test_corrupt_files_all_listed(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    broken = faces_with_defects(folder, 8)
    with pytest.raises(DataError) as caught:
        plugins.get("datasets", "faces").load(data_config("faces", folder))
    message = str(caught.value)
    for path in broken.values():
        assert str(path) in message
    assert "2 more unreadable file(s)" in message


def test_corrupt_files_skipped(
    plugins: PluginHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "faces"
    broken = faces_with_defects(folder, 8)
    caplog.set_level(logging.WARNING, logger=IMAGE_DATA_LOGGER)
    config = data_config("faces", folder, skip_corrupt=True)
    data = plugins.get("datasets", "faces").load(config)
    assert len(data) == 5
    warnings = [r for r in caplog.records if r.name == IMAGE_DATA_LOGGER]
    assert len(warnings) == 3
    for record, path in zip(warnings, sorted(broken.values()), strict=True):
        assert record.levelno == logging.WARNING
        assert str(path) in record.getMessage()


def test_corrupt_warnings_capped(
    plugins: PluginHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "faces"
    write_faces(folder, 30)
    for path in sorted(folder.iterdir())[:25]:
        path.write_bytes(b"broken")
    caplog.set_level(logging.WARNING, logger=IMAGE_DATA_LOGGER)
    config = data_config("faces", folder, skip_corrupt=True)
    data = plugins.get("datasets", "faces").load(config)
    assert len(data) == 5
    messages = [r.getMessage() for r in caplog.records if r.name == IMAGE_DATA_LOGGER]
    assert len(messages) == 21
    assert messages[-1] == f"skipped 5 more unreadable images in {folder}"


def test_corrupt_every_file(plugins: PluginHost, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.png").write_bytes(b"broken")
    config = data_config("faces", folder, skip_corrupt=True)
    with pytest.raises(DataError, match="None of the 3 image files is readable"):
        plugins.get("datasets", "faces").load(config)


# ---------------------------------------------------------------------------
# Decoding on demand, for folders too large to keep in memory.


@pytest.fixture
def on_demand_celeba(plugins: PluginHost) -> ImageFolderSource:
    source = copy.copy(plugins.get("datasets", "celeba"))
    source.max_in_memory_bytes = 0
    return source


def test_on_demand_items(
    plugins: PluginHost, on_demand_celeba: ImageFolderSource, tmp_path: Path
) -> None:
    write_celeba(tmp_path, 20)
    config = data_config("celeba", tmp_path)
    in_memory = plugins.get("datasets", "celeba").load(config)
    on_demand = on_demand_celeba.load(config)
    assert on_demand.images is None
    assert isinstance(on_demand.dataset, ImageFileDataset)
    assert len(on_demand) == 20

    image, label = on_demand.dataset[3]
    assert image.dtype == torch.uint8
    assert image.shape == (3, 32, 32)
    assert label == -1
    assert in_memory.images is not None
    assert torch.equal(image, in_memory.images[3])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_on_demand_batches(
    on_demand_celeba: ImageFolderSource, tmp_path: Path, num_workers: int
) -> None:
    write_celeba(tmp_path, 20)
    data = on_demand_celeba.load(data_config("celeba", tmp_path))
    stream = BatchStream(
        data,
        batch_size=8,
        seed=0,
        device=torch.device("cpu"),
        num_workers=num_workers,
    )
    for _ in range(3):  # crosses into the second epoch
        batch = stream.next_batch()
        assert batch.shape == (8, 3, 32, 32)
        assert batch.dtype == torch.uint8


def test_on_demand_corrupt_checked(
    on_demand_celeba: ImageFolderSource, tmp_path: Path
) -> None:
    folder = write_celeba(tmp_path, 4)
    truncate(folder / "000003.jpg")
    with pytest.raises(DataError, match=r"000003\.jpg is not a readable image"):
        on_demand_celeba.load(data_config("celeba", tmp_path))


def test_on_demand_changed_file(
    on_demand_celeba: ImageFolderSource, tmp_path: Path
) -> None:
    folder = write_celeba(tmp_path, 4)
    data = on_demand_celeba.load(data_config("celeba", tmp_path))
    (folder / "000002.jpg").write_bytes(b"overwritten")
    assert data.dataset is not None
    with pytest.raises(DataError, match=r"000002\.jpg is not a readable image"):
        data.dataset[1]


# ---------------------------------------------------------------------------
# A CelebA folder with a truncated and a grayscale JPEG: 100 files in all.


@pytest.fixture
def celeba_with_defects(tmp_path: Path) -> dict[str, Path]:
    folder = write_celeba(tmp_path / "data", 100)
    truncated = folder / "000042.jpg"
    truncate(truncated)
    gray = folder / "000007.jpg"
    smooth_image(7, CELEBA_SIZE, mode="L").save(gray)
    return {"root": tmp_path / "data", "truncated": truncated, "gray": gray}


def test_celeba_corrupt_cli_fails_early(
    celeba_with_defects: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    environment = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "GENLATENT_NO_DOWNLOAD": "1",
    }

    command = [
        sys.executable,
        "-m",
        "genlatent",
        "run",
        "infogan-celeba",
        f"data.root={celeba_with_defects['root']}",
        "trainer.max_steps=50",
        "trainer.batch_size=8",
        "trainer.progress=false",
        "wandb.mode=disabled",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=300
    )

    assert result.returncode != 0
    assert f"{celeba_with_defects['truncated']} is not a readable image" in (
        result.stderr
    )
    assert "data.skip_corrupt=true" in result.stderr
    assert str(celeba_with_defects["gray"]) not in result.stderr
    assert "Traceback" not in result.stderr
    # The check runs before the run folder is made, so no step ran.
    assert not (out / "metrics.jsonl").exists()
    assert not (out / "checkpoints").exists()


def test_celeba_corrupt_skipped_trains(
    celeba_with_defects: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch_shapes: list[tuple[int, ...]] = []
    data_sizes: list[int] = []
    next_batch = BatchStream.next_batch

    def recording_next_batch(self: BatchStream) -> torch.Tensor:
        batch = next_batch(self)
        batch_shapes.append(tuple(batch.shape))
        data_sizes.append(len(self.data))
        return batch

    monkeypatch.setattr(BatchStream, "next_batch", recording_next_batch)
    caplog.set_level(logging.WARNING, logger=IMAGE_DATA_LOGGER)
    result = run_experiment(
        "infogan-celeba",
        [
            f"data.root={celeba_with_defects['root']}",
            "data.skip_corrupt=true",
            "trainer.max_steps=50",
            "trainer.batch_size=8",
            "trainer.log_every=25",
            "trainer.sample_every=50",
            "trainer.checkpoint_every=50",
            "trainer.progress=false",
            "wandb.mode=disabled",
        ],
        out=tmp_path / "run",
    )
    assert result.steps == 50
    assert batch_shapes == [(8, 3, 32, 32)] * 50
    assert set(data_sizes) == {99}

    warnings = [r for r in caplog.records if r.name == IMAGE_DATA_LOGGER]
    assert len(warnings) == 1
    assert str(celeba_with_defects["truncated"]) in warnings[0].getMessage()
    assert [record["step"] for record in read_metrics(result.run_dir)] == [25, 50]


# ---------------------------------------------------------------------------
# Short training runs of every paper experiment.


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    write_svhn(base / "svhn", [1 + index % 10 for index in range(32)])
    write_celeba(base / "celeba-parent", 200)
    write_chairs(base / "chairs", num_models=2, num_views=10)
    write_faces(base / "faces", 32)
    return {
        "svhn": base / "svhn",
        "celeba": base / "celeba-parent",
        "chairs": base / "chairs",
        "faces": base / "faces",
    }


@pytest.mark.parametrize(
    "name",
    [
        "infogan-svhn",
        "infogan-celeba",
        "infogan-faces-azimuth",
        "infogan-faces-elevation",
        "infogan-faces-lighting",
        "infogan-chairs-rotation",
        "infogan-chairs-width",
    ],
)
def test_experiment_short_run(
    plugins: PluginHost, data_roots: dict[str, Path], tmp_path: Path, name: str
) -> None:
    config = plugins.get("experiments", name)
    out = tmp_path / "run"
    result = run_experiment(
        name,
        [
            f"data.root={data_roots[config.data.dataset]}",
            "trainer.max_steps=3",
            "trainer.batch_size=16",
            "trainer.num_samples=16",
            "trainer.progress=false",
            "wandb.mode=disabled",
        ],
        out=out,
        plugins=plugins,
    )
    assert result.steps == 3
    for key in ("d_loss", "g_loss"):
        assert math.isfinite(result.metrics[key]), key
    scored = [code["name"] for code in config.latent if code["kind"] != "noise"]
    for code in scored:
        assert math.isfinite(result.metrics[f"mi/{code}"]), code

    sample = out / "samples" / "step_00000003.png"
    assert sample.is_file()
    _, height, _ = plugins.get("architectures", config.architecture).image_shape
    with Image.open(sample) as grid:
        # 16 samples in 2 rows of 8, each image plus 2 pixels of padding.
        assert grid.size == (8 * (height + 2) + 2, 2 * (height + 2) + 2)
        assert grid.mode == "RGB"
        # After 3 steps the generators still output about the middle of their
        # range: 0 for tanh, 0.5 for sigmoid. Both map to about 128 in the
        # grid, while tanh outputs saved without mapping [-1, 1] to [0, 1]
        # would be clipped to about 0.
        first_image = np.asarray(grid)[2 : 2 + height, 2 : 2 + height]
        assert 64 < first_image.mean() < 192
    # A chairs checkpoint is an estimated 470 MB: 39 million float32
    # parameters, each with two Adam moments.
    shutil.rmtree(out / "checkpoints")
