"""Tests for genlatent.data: data set lookup, IDX extraction and batch order.

Every test runs with downloads off and with the cache, ``$GENLATENT_DATA`` and
the system data set folder pointed at its own temporary folders, so no test
reads the user's cache or reaches a network host.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import attrs
import pytest
import torch
from torch.utils.data import Dataset
from torchvision.datasets import MNIST, FashionMNIST

from genlatent.config import DataConfig
from genlatent.data import (
    BatchStream,
    IDXDatasetSource,
    ImageData,
    cache_folder,
    candidate_folders,
    downloads_enabled,
    scale_images,
)
from genlatent.errors import DataError
from genlatent.plugins import load_plugins

NAME = "fashion-mnist"
# File names of the four archives, in the order torchvision lists them.
ARCHIVE_NAMES = [name for name, _ in FashionMNIST.resources]
RAW_NAMES = [name.removesuffix(".gz") for name in ARCHIVE_NAMES]
NUM_TRAIN = 64
NUM_TEST = 16
REAL_DATA_FOLDER = Path("/usr/share/datasets/fashion-mnist")

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


# ---------------------------------------------------------------------------
# IDX files on disk.


@attrs.frozen
class TinySplit:
    """Images and labels of one split as written to disk."""

    images: torch.Tensor  # (count, 28, 28) uint8
    labels: torch.Tensor  # (count,) int64


@attrs.frozen
class TinyDataset:
    """A tiny MNIST-format data set. Its ``marker`` makes each copy distinguishable."""

    marker: int
    train: TinySplit
    test: TinySplit


def idx_images_bytes(images: torch.Tensor) -> bytes:
    """Encode ``(count, rows, cols)`` uint8 images as an IDX file."""
    count, rows, cols = images.shape
    header = b"".join(
        value.to_bytes(4, "big") for value in (IDX_IMAGES_MAGIC, count, rows, cols)
    )
    return header + images.numpy().tobytes()


def idx_labels_bytes(labels: torch.Tensor) -> bytes:
    """Encode ``(count,)`` labels in 0..255 as an IDX file."""
    header = IDX_LABELS_MAGIC.to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    return header + labels.to(torch.uint8).numpy().tobytes()


def make_split(count: int, marker: int, split_offset: int) -> TinySplit:
    """Build ``count`` images whose pixels depend on index, position and marker."""
    index = torch.arange(count).view(count, 1, 1)
    row = torch.arange(28).view(1, 28, 1)
    col = torch.arange(28).view(1, 1, 28)
    pixels = (index * 37 + row * 28 + col + marker * 101 + split_offset) % 256
    labels = (torch.arange(count) * 3 + marker + split_offset) % 10
    return TinySplit(images=pixels.to(torch.uint8), labels=labels.long())


def make_dataset(marker: int) -> TinyDataset:
    return TinyDataset(
        marker=marker,
        train=make_split(NUM_TRAIN, marker, split_offset=0),
        test=make_split(NUM_TEST, marker, split_offset=7),
    )


def idx_contents(dataset: TinyDataset) -> dict[str, bytes]:
    """Map each uncompressed IDX file name to its bytes."""
    return {
        "train-images-idx3-ubyte": idx_images_bytes(dataset.train.images),
        "train-labels-idx1-ubyte": idx_labels_bytes(dataset.train.labels),
        "t10k-images-idx3-ubyte": idx_images_bytes(dataset.test.images),
        "t10k-labels-idx1-ubyte": idx_labels_bytes(dataset.test.labels),
    }


def write_dataset(folder: Path, marker: int, *, compressed: bool) -> TinyDataset:
    """Write the four IDX files into ``folder``, as ``.gz`` archives or raw."""
    dataset = make_dataset(marker)
    folder.mkdir(parents=True, exist_ok=True)
    for raw_name, content in idx_contents(dataset).items():
        if compressed:
            (folder / f"{raw_name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / raw_name).write_bytes(content)
    return dataset


def layout_folder(root: Path, layout: str) -> Path:
    """Return the folder under ``root`` where ``layout`` puts the files."""
    if layout == "flat":
        return root
    if layout == "named":
        return root / NAME
    return root / "FashionMNIST" / "raw"


# ---------------------------------------------------------------------------
# Fixtures.


@attrs.frozen
class Places:
    """Temporary folders, one for each lookup location."""

    root: Path
    data_env: Path
    cache_home: Path
    system: Path

    @property
    def cache(self) -> Path:
        return self.cache_home / "genlatent"

    @property
    def extracted(self) -> Path:
        # Extracted copies live in one folder per source, named by a
        # fingerprint of the archives; these tests extract one source at most.
        base = self.cache / "extracted" / NAME
        folders = sorted(base.iterdir()) if base.is_dir() else []
        assert len(folders) <= 1, folders
        return folders[0] if folders else base / "not-extracted"


@pytest.fixture(autouse=True)
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Places:
    result = Places(
        root=tmp_path / "root",
        data_env=tmp_path / "data-env",
        cache_home=tmp_path / "cache-home",
        system=tmp_path / "system",
    )
    result.system.mkdir()
    monkeypatch.setenv("GENLATENT_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(result.cache_home))
    monkeypatch.setenv("GENLATENT_SYSTEM_DATASETS", str(result.system))
    monkeypatch.delenv("GENLATENT_DATA", raising=False)
    return result


@pytest.fixture(scope="module")
def plugin_host():
    return load_plugins()


@pytest.fixture(scope="module")
def source(plugin_host) -> IDXDatasetSource:
    return plugin_host.get("datasets", NAME)


def config(root: Path | None = None, split: str = "train") -> DataConfig:
    return DataConfig(
        dataset=NAME,
        root=None if root is None else str(root),
        split=split,
        download=False,
    )


# ---------------------------------------------------------------------------
# Registered sources.


def test_registry_fashion_mnist(source: IDXDatasetSource) -> None:
    assert isinstance(source, IDXDatasetSource)
    assert source.name == NAME
    assert source.torchvision_class is FashionMNIST
    assert source.image_shape == (1, 28, 28)
    assert source.num_classes == 10


def test_registry_mnist(plugin_host) -> None:
    mnist = plugin_host.get("datasets", "mnist")
    assert isinstance(mnist, IDXDatasetSource)
    assert mnist.torchvision_class is MNIST


def test_registry_archive_names(source: IDXDatasetSource) -> None:
    assert [name for name, _ in source.archives] == ARCHIVE_NAMES


# ---------------------------------------------------------------------------
# Layouts.


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", ["flat", "named", "torchvision"])
def test_load_layout(
    source: IDXDatasetSource, places: Places, layout: str, compressed: bool
) -> None:
    folder = layout_folder(places.root, layout)
    written = write_dataset(folder, marker=1, compressed=compressed)

    data = source.load(config(places.root))

    assert data.location == str(folder)
    assert data.images is not None
    assert torch.equal(data.images[:, 0], written.train.images)
    assert torch.equal(data.labels, written.train.labels)


def test_load_mnist_layout(plugin_host, places: Places) -> None:
    mnist = plugin_host.get("datasets", "mnist")
    folder = places.root / "MNIST" / "raw"
    written = write_dataset(folder, marker=2, compressed=False)

    data = mnist.load(attrs.evolve(config(places.root), dataset="mnist"))

    assert data.location == str(folder)
    assert data.name == "mnist"
    assert torch.equal(data.images[:, 0], written.train.images)


def test_load_data_env_layout(
    source: IDXDatasetSource, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = places.data_env / NAME / "FashionMNIST" / "raw"
    written = write_dataset(folder, marker=3, compressed=True)
    monkeypatch.setenv("GENLATENT_DATA", str(places.data_env))

    data = source.load(config())

    assert data.location == str(folder)
    assert torch.equal(data.images[:, 0], written.train.images)


# ---------------------------------------------------------------------------
# Lookup order.

# Place names in lookup order. Each parametrized case fills its place and every
# later one, so the case's place must win.
PLACE_ORDER = ["root", "data_env", "cache", "system"]


def fill_places(places: Places, first: str, monkeypatch) -> dict[str, Path]:
    """Write a distinguishable copy into ``first`` and every later place."""
    folders = {
        "root": places.root,
        "data_env": places.data_env / NAME,
        "cache": places.cache / NAME,
        "system": places.system / NAME,
    }
    for marker, place in enumerate(PLACE_ORDER):
        if PLACE_ORDER.index(place) >= PLACE_ORDER.index(first):
            write_dataset(folders[place], marker=marker, compressed=False)
    monkeypatch.setenv("GENLATENT_DATA", str(places.data_env))
    return folders


@pytest.mark.parametrize("winner", PLACE_ORDER)
def test_lookup_order(
    source: IDXDatasetSource,
    places: Places,
    monkeypatch: pytest.MonkeyPatch,
    winner: str,
) -> None:
    folders = fill_places(places, winner, monkeypatch)
    expected = make_dataset(marker=PLACE_ORDER.index(winner))
    root = places.root if winner == "root" else None

    data = source.load(config(root))

    assert data.location == str(folders[winner])
    assert torch.equal(data.images[:, 0], expected.train.images)
    assert torch.equal(data.labels, expected.train.labels)


def test_lookup_skips_incomplete(
    source: IDXDatasetSource, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset(places.root, marker=0, compressed=False)
    (places.root / RAW_NAMES[3]).unlink()
    fallback = places.system / NAME
    expected = write_dataset(fallback, marker=3, compressed=False)

    data = source.load(config(places.root))

    assert data.location == str(fallback)
    assert torch.equal(data.images[:, 0], expected.train.images)


def test_lookup_default_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENLATENT_SYSTEM_DATASETS")
    folders = candidate_folders(NAME, None)
    assert folders[-1] == Path("/usr/share/datasets") / NAME


def test_lookup_candidate_order(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENLATENT_DATA", str(places.data_env))
    folders = candidate_folders(NAME, str(places.root))
    assert folders == [
        places.root,
        places.root / NAME,
        places.data_env / NAME,
        places.cache / NAME,
        places.system / NAME,
    ]


def test_extract_two_sources(source: IDXDatasetSource, places: Places) -> None:
    # Both places contain .gz copies of the same data set, so each load must
    # return the copy it reports in `location`, whichever was extracted first.
    system_copy = write_dataset(places.system / NAME, marker=4, compressed=True)
    root_copy = write_dataset(places.root, marker=0, compressed=True)

    from_system = source.load(config())
    from_root = source.load(config(places.root))

    assert from_system.location == str(places.system / NAME)
    assert torch.equal(from_system.images[:, 0], system_copy.train.images)
    assert from_root.location == str(places.root)
    assert torch.equal(from_root.images[:, 0], root_copy.train.images)


def test_lookup_previous_download(source: IDXDatasetSource, places: Places) -> None:
    # Downloads land in <cache>/<name>/FashionMNIST/raw (torchvision's layout
    # under the data set's cache folder), and an earlier download there must
    # still be found once downloads are off.
    folder = places.cache / "fashion-mnist" / "FashionMNIST" / "raw"
    written = write_dataset(folder, marker=5, compressed=False)

    data = source.load(config())

    assert torch.equal(data.images[:, 0], written.train.images)


# ---------------------------------------------------------------------------
# Extraction of .gz archives.


def test_extract_values(source: IDXDatasetSource, places: Places) -> None:
    written = write_dataset(places.root, marker=1, compressed=True)

    data = source.load(config(places.root))

    assert data.images is not None
    assert data.images.dtype == torch.uint8
    assert data.images.shape == (NUM_TRAIN, 1, 28, 28)
    assert torch.equal(data.images[:, 0], written.train.images)
    assert data.labels is not None
    assert data.labels.dtype == torch.int64
    assert data.labels.shape == (NUM_TRAIN,)
    assert torch.equal(data.labels, written.train.labels)
    assert data.num_classes == 10
    assert data.image_shape == (1, 28, 28)
    assert len(data) == NUM_TRAIN


def test_extract_into_cache(source: IDXDatasetSource, places: Places) -> None:
    written = write_dataset(places.root, marker=1, compressed=True)

    source.load(config(places.root))

    assert cache_folder() == places.cache
    assert sorted(os.listdir(places.extracted)) == sorted(RAW_NAMES)
    for raw_name, content in idx_contents(written).items():
        assert (places.extracted / raw_name).read_bytes() == content, raw_name


def test_extract_source_untouched(source: IDXDatasetSource, places: Places) -> None:
    write_dataset(places.system / NAME, marker=1, compressed=True)

    source.load(config())

    assert sorted(os.listdir(places.system / NAME)) == sorted(ARCHIVE_NAMES)


def test_extract_once(source: IDXDatasetSource, places: Places) -> None:
    write_dataset(places.root, marker=1, compressed=True)
    source.load(config(places.root))
    first = {name: (places.extracted / name).stat() for name in RAW_NAMES}

    source.load(config(places.root, split="test"))
    source.load(config(places.root))

    for name in RAW_NAMES:
        second = (places.extracted / name).stat()
        assert second.st_ino == first[name].st_ino, name
        assert second.st_mtime_ns == first[name].st_mtime_ns, name


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_split_sizes(
    source: IDXDatasetSource, places: Places, compressed: bool
) -> None:
    written = write_dataset(places.root, marker=1, compressed=compressed)

    train = source.load(config(places.root, split="train"))
    test = source.load(config(places.root, split="test"))

    assert train.images.shape == (NUM_TRAIN, 1, 28, 28)
    assert test.images.shape == (NUM_TEST, 1, 28, 28)
    assert test.labels.shape == (NUM_TEST,)
    assert torch.equal(test.images[:, 0], written.test.images)
    assert torch.equal(test.labels, written.test.labels)


def test_split_invalid(source: IDXDatasetSource, places: Places) -> None:
    write_dataset(places.root, marker=1, compressed=False)

    with pytest.raises(DataError) as caught:
        source.load(config(places.root, split="validation"))

    message = str(caught.value)
    assert "'validation'" in message
    assert "train" in message
    assert "test" in message


# ---------------------------------------------------------------------------
# Corrupt archives and files.


def truncate_archive(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def replace_magic(path: Path) -> None:
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[0:4] = (0x12345678).to_bytes(4, "big")
    path.write_bytes(gzip.compress(bytes(content)))


def shorten_payload(path: Path) -> None:
    # A complete gzip stream whose IDX content stops before its declared size.
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content[:-10]))


DEFECTS = {
    "truncated": truncate_archive,
    "wrong_magic": replace_magic,
    "short_payload": shorten_payload,
}


@pytest.mark.parametrize("archive", [ARCHIVE_NAMES[0], ARCHIVE_NAMES[3]])
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_gz_defect(
    source: IDXDatasetSource, places: Places, defect: str, archive: str
) -> None:
    write_dataset(places.root, marker=1, compressed=True)
    broken = places.root / archive
    DEFECTS[defect](broken)

    with pytest.raises(DataError) as caught:
        source.load(config(places.root))

    assert str(broken) in str(caught.value)
    raw_name = archive.removesuffix(".gz")
    assert not (places.extracted / raw_name).exists()
    # Only archives listed before the broken one may have been extracted, and
    # no temporary file may remain beside them.
    leftovers = (
        set(os.listdir(places.extracted)) if places.extracted.exists() else set()
    )
    extracted_before = set(RAW_NAMES[: ARCHIVE_NAMES.index(archive)])
    assert leftovers == extracted_before


def test_gz_repaired(source: IDXDatasetSource, places: Places) -> None:
    write_dataset(places.root, marker=1, compressed=True)
    truncate_archive(places.root / ARCHIVE_NAMES[3])
    with pytest.raises(DataError):
        source.load(config(places.root))

    written = write_dataset(places.root, marker=1, compressed=True)
    data = source.load(config(places.root))

    assert torch.equal(data.labels, written.train.labels)
    assert torch.equal(data.images[:, 0], written.train.images)


@pytest.mark.parametrize("defect", ["truncated", "wrong_magic"])
def test_raw_defect(source: IDXDatasetSource, places: Places, defect: str) -> None:
    write_dataset(places.root, marker=1, compressed=False)
    broken = places.root / RAW_NAMES[0]
    content = bytearray(broken.read_bytes())
    if defect == "truncated":
        content = content[: len(content) // 2]
    else:
        content[0:4] = (0x12345678).to_bytes(4, "big")
    broken.write_bytes(bytes(content))

    with pytest.raises(DataError) as caught:
        source.load(config(places.root))

    assert str(broken) in str(caught.value)


# ---------------------------------------------------------------------------
# Data set not found.


def test_missing_message(
    source: IDXDatasetSource, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    places.root.mkdir()
    monkeypatch.setenv("GENLATENT_DATA", str(places.data_env))

    with pytest.raises(DataError) as caught:
        source.load(config(places.root))

    message = str(caught.value)
    searched = []
    for folder in candidate_folders(NAME, str(places.root)):
        searched += [folder, folder / "FashionMNIST" / "raw"]
    assert len(searched) == 10
    for folder in searched:
        # Folder names are prefixes of one another, so match up to a separator.
        pattern = re.escape(str(folder)) + r"[,.] "
        assert re.search(pattern, message), f"{folder} missing from: {message}"
    for archive in ARCHIVE_NAMES:
        assert archive in message, archive
    assert message.count("To add it by hand") == 1
    assert f"put them in {places.cache / NAME}, " in message
    assert "data.root" in message
    assert "$GENLATENT_DATA" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_missing_no_download_env(source: IDXDatasetSource, places: Places) -> None:
    # data.download stays true, so only $GENLATENT_NO_DOWNLOAD stops the download.
    with pytest.raises(DataError) as caught:
        source.load(attrs.evolve(config(), download=True))

    assert "GENLATENT_NO_DOWNLOAD" in str(caught.value)
    assert not (places.cache / NAME / "FashionMNIST").exists()


def test_missing_download_off(
    source: IDXDatasetSource, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $GENLATENT_NO_DOWNLOAD is unset, so only data.download=False stops it.
    monkeypatch.delenv("GENLATENT_NO_DOWNLOAD")

    with pytest.raises(DataError) as caught:
        source.load(config())

    assert "data.download=false" in str(caught.value)
    assert not (places.cache / NAME / "FashionMNIST").exists()


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("", True), ("0", True), ("1", False), ("true", False), ("YES", False)],
)
def test_downloads_enabled_env(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv("GENLATENT_NO_DOWNLOAD", value)
    assert downloads_enabled(DataConfig(download=True)) is enabled


def test_downloads_enabled_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENLATENT_NO_DOWNLOAD")
    assert downloads_enabled(DataConfig(download=False)) is False


# ---------------------------------------------------------------------------
# Real Fashion-MNIST from the Debian package dataset-fashion-mnist.


@pytest.fixture(scope="module")
def real_data(tmp_path_factory: pytest.TempPathFactory, source: IDXDatasetSource):
    if not all((REAL_DATA_FOLDER / name).is_file() for name in ARCHIVE_NAMES):
        pytest.skip(
            f"Fashion-MNIST not found in {REAL_DATA_FOLDER}; run "
            "`apt-get install dataset-fashion-mnist`"
        )
    with pytest.MonkeyPatch.context() as monkeypatch:
        cache_home = tmp_path_factory.mktemp("real-cache")
        monkeypatch.setenv("GENLATENT_NO_DOWNLOAD", "1")
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
        monkeypatch.setenv("GENLATENT_SYSTEM_DATASETS", str(REAL_DATA_FOLDER.parent))
        monkeypatch.delenv("GENLATENT_DATA", raising=False)
        train = source.load(config(split="train"))
        test = source.load(config(split="test"))
    return train, test


@pytest.mark.realdata
def test_real_location(real_data) -> None:
    train, _ = real_data
    assert train.location == str(REAL_DATA_FOLDER)


@pytest.mark.realdata
def test_real_sizes(real_data) -> None:
    train, test = real_data
    assert train.images.shape == (60000, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert train.labels.shape == (60000,)
    assert test.images.shape == (10000, 1, 28, 28)
    assert test.labels.shape == (10000,)


@pytest.mark.realdata
def test_real_labels(real_data) -> None:
    train, test = real_data
    assert int(train.labels.min()) == 0
    assert int(train.labels.max()) == 9
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10


@pytest.mark.realdata
def test_real_pixels(real_data) -> None:
    train, _ = real_data
    assert int(train.images.min()) == 0
    assert int(train.images.max()) == 255


# ---------------------------------------------------------------------------
# BatchStream.


def indexed_data(count: int) -> ImageData:
    """In-memory images where every pixel of image ``i`` equals ``i``."""
    assert count <= 256
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1)
    return ImageData(
        name="indexed",
        image_shape=(1, 28, 28),
        location="memory",
        images=images.expand(count, 1, 28, 28).contiguous(),
    )


class IndexedDataset(Dataset):
    """Map-style data set that decodes the images of :func:`indexed_data` on demand."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full((1, 28, 28), index, dtype=torch.uint8), index % 10


def indexed_dataset(count: int) -> ImageData:
    return ImageData(
        name="indexed",
        image_shape=(1, 28, 28),
        location="memory",
        dataset=IndexedDataset(count),
    )


def batch_indices(batch: torch.Tensor) -> list[int]:
    return batch[:, 0, 0, 0].tolist()


def take(stream: BatchStream, count: int) -> list[list[int]]:
    return [batch_indices(stream.next_batch()) for _ in range(count)]


def make_stream(data: ImageData, seed: int = 0, batch_size: int = 16) -> BatchStream:
    return BatchStream(
        data, batch_size=batch_size, seed=seed, device=torch.device("cpu")
    )


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="no CUDA device"
        ),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("build", [indexed_data, indexed_dataset])
def test_stream_batch(build, device: str) -> None:
    stream = BatchStream(build(40), batch_size=8, seed=0, device=torch.device(device))

    batch = stream.next_batch()

    assert batch.dtype == torch.uint8
    assert batch.shape == (8, 1, 28, 28)
    assert batch.device.type == device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_stream_cuda_no_host_sync() -> None:
    # Batches of data resident on the GPU are gathered on the device, across
    # an epoch boundary too. Sync debug mode "error" raises on any operation
    # that makes the host wait for the GPU, such as a pageable copy.
    stream = BatchStream(
        indexed_data(40), batch_size=8, seed=3, device=torch.device("cuda")
    )
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = [stream.next_batch() for _ in range(12)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    on_cpu = take(make_stream(indexed_data(40), seed=3, batch_size=8), 12)

    assert [batch_indices(batch.cpu()) for batch in batches] == on_cpu


@pytest.mark.parametrize("build", [indexed_data, indexed_dataset])
def test_stream_epoch_covers(build) -> None:
    stream = make_stream(build(64), batch_size=16)

    epoch = [index for batch in take(stream, 4) for index in batch]

    assert sorted(epoch) == list(range(64))
    assert stream.state_dict() == {"epoch": 0, "position": 64}


def test_stream_drop_last() -> None:
    # With 70 images in batches of 16, an epoch has four batches and drops 6 images.
    stream = make_stream(indexed_data(70), batch_size=16)

    epoch = [index for batch in take(stream, 4) for index in batch]
    take(stream, 1)

    assert len(set(epoch)) == 64
    assert stream.state_dict() == {"epoch": 1, "position": 16}


def test_stream_seed_repeat() -> None:
    torch.manual_seed(1)
    first = take(make_stream(indexed_data(40), seed=3, batch_size=8), 12)
    torch.manual_seed(2)
    second = take(make_stream(indexed_data(40), seed=3, batch_size=8), 12)

    assert first == second


def test_stream_seed_differs() -> None:
    first = take(make_stream(indexed_data(40), seed=3, batch_size=8), 5)
    second = take(make_stream(indexed_data(40), seed=4, batch_size=8), 5)

    assert first != second


def test_stream_epochs_differ() -> None:
    stream = make_stream(indexed_data(32), batch_size=16)

    epoch0 = take(stream, 2)
    epoch1 = take(stream, 2)

    assert epoch0 != epoch1


def test_stream_dataset_matches_memory() -> None:
    in_memory = take(make_stream(indexed_data(48), seed=5), 7)
    decoded = take(make_stream(indexed_dataset(48), seed=5), 7)

    assert decoded == in_memory


# Batches taken before saving, with 64 images in batches of 16: mid-epoch,
# exactly at the end of epoch 0, and one batch into epoch 1.
RESUME_POINTS = [2, 4, 5]


@pytest.mark.parametrize("build", [indexed_data, indexed_dataset])
@pytest.mark.parametrize("taken", RESUME_POINTS)
def test_stream_resume(build, taken: int) -> None:
    original = make_stream(build(64), seed=9)
    take(original, taken)
    state = original.state_dict()
    expected = take(original, 6)

    resumed = make_stream(build(64), seed=9)
    take(resumed, 1)
    resumed.load_state_dict(state)

    assert take(resumed, 6) == expected


def test_stream_state_values() -> None:
    stream = make_stream(indexed_data(64), seed=9)
    take(stream, 5)

    state = stream.state_dict()

    assert state == {"epoch": 1, "position": 16}
    assert all(type(value) is int for value in state.values())


def test_stream_too_small() -> None:
    with pytest.raises(DataError) as caught:
        make_stream(indexed_data(10), batch_size=16)

    message = str(caught.value)
    assert re.search(r"\b10\b", message), message
    assert re.search(r"\b16\b", message), message


def test_stream_exact_size() -> None:
    stream = make_stream(indexed_data(16), batch_size=16)
    assert sorted(take(stream, 1)[0]) == list(range(16))


# ---------------------------------------------------------------------------
# scale_images.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("output_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_scale_images_endpoints(
    output_range: tuple[float, float], dtype: torch.dtype
) -> None:
    low, high = output_range
    images = torch.tensor([0, 255], dtype=torch.uint8)

    scaled = scale_images(images, output_range, dtype)

    assert scaled.dtype == dtype
    assert scaled[0].item() == low
    assert scaled[1].item() == high


def test_scale_images_monotonic() -> None:
    images = torch.arange(256, dtype=torch.uint8)
    scaled = scale_images(images, (-1.0, 1.0), torch.float32)
    assert bool((scaled[1:] > scaled[:-1]).all())
