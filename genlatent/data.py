"""Image data sets: where they are found, how they load, and batch order.

Data sets are looked up in this order, and the first complete copy wins:

1. the folder given as ``data.root``;
2. ``$GENLATENT_DATA``;
3. the user cache folder (``$XDG_CACHE_HOME/genlatent``, by default
   ``~/.cache/genlatent``);
4. the system data set folder ``/usr/share/datasets/<name>``, where Debian's
   ``dataset-*`` packages install files (``$GENLATENT_SYSTEM_DATASETS`` moves it);
5. a download into the user cache folder, where the data set offers one and
   downloads are on (``data.download``, ``$GENLATENT_NO_DOWNLOAD``).

Images stay ``uint8`` until they reach the training device, where
:func:`scale_images` maps them to the generator's output range.
"""

from __future__ import annotations

import abc
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets import MNIST

from genlatent.config import DataConfig
from genlatent.download import fetch_file
from genlatent.errors import DataError

logger = logging.getLogger(__name__)

DATA_ENV = "GENLATENT_DATA"
SYSTEM_DATASETS_ENV = "GENLATENT_SYSTEM_DATASETS"
SYSTEM_DATASETS = "/usr/share/datasets"
NO_DOWNLOAD_ENV = "GENLATENT_NO_DOWNLOAD"


def downloads_enabled(config: DataConfig) -> bool:
    """Return whether this config and environment allow a download."""
    disabled = os.environ.get(NO_DOWNLOAD_ENV, "").lower() in ("1", "true", "yes")
    return config.download and not disabled


def download_skipped_note(config: DataConfig) -> str | None:
    """Say why no download is tried for the not-found message, or None when
    downloads are on."""
    if downloads_enabled(config):
        return None
    return (
        f"No download was tried because data.download=false or ${NO_DOWNLOAD_ENV} "
        "is set."
    )


def placement_note(name: str) -> str:
    """Say where to put the files of data set ``name`` by hand, for the
    not-found message, as a phrase that starts with "in"."""
    return (
        f"in {cache_folder() / name}, in ${DATA_ENV}/{name}, or in a folder given "
        "as data.root=FOLDER"
    )


def cache_folder() -> Path:
    """Return the user cache folder for data sets and extracted files."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return Path(base) / "genlatent"


def candidate_folders(name: str, root: str | None) -> list[Path]:
    """Folders that may hold data set ``name``, in lookup order."""
    folders: list[Path] = []
    if root:
        explicit = Path(root).expanduser()
        folders += [explicit, explicit / name]
    if os.environ.get(DATA_ENV):
        folders.append(Path(os.environ[DATA_ENV]).expanduser() / name)
    folders.append(cache_folder() / name)
    system = os.environ.get(SYSTEM_DATASETS_ENV, SYSTEM_DATASETS)
    folders.append(Path(system) / name)
    return folders


@attrs.frozen
class ImageData:
    """A loaded data set.

    Exactly one of ``images`` and ``dataset`` is set: ``images`` is an
    in-memory ``(num_images, channels, height, width)`` uint8 tensor;
    ``dataset`` yields ``(uint8 image tensor, label)`` pairs decoded on demand.
    ``labels`` is ``(num_images,)`` int64 where the data set has labels.
    """

    name: str
    image_shape: tuple[int, int, int]
    location: str
    images: torch.Tensor | None = None
    dataset: Dataset | None = None
    labels: torch.Tensor | None = None
    num_classes: int | None = None

    def __len__(self) -> int:
        if self.images is not None:
            return int(self.images.shape[0])
        assert self.dataset is not None
        return len(self.dataset)  # type: ignore[arg-type]


class DatasetSource(abc.ABC):
    """A named data set that plugins register.

    Attributes:
        name: registry name, also the folder name looked up on disk.
        image_shape: ``(channels, height, width)`` of loaded images.
        num_classes: number of label classes, or None for unlabelled data.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int | None = None
    description: str = ""

    @abc.abstractmethod
    def load(self, config: DataConfig) -> ImageData:
        """Find and load the split ``config.split``, or raise DataError."""


# IDX magic numbers: unsigned bytes with 1 (labels) or 3 (images) dimensions.
_IDX_LABELS, _IDX_IMAGES = 0x0801, 0x0803


def check_idx_file(path: Path, source: Path) -> None:
    """Check that ``path`` is a complete IDX file of uint8 labels or images.

    Archives are checked by content rather than by MD5, because repackaged
    archives (Debian's, for one) hold the same bytes under other gzip headers.
    """
    with open(path, "rb") as file:
        header = file.read(16)
    magic = int.from_bytes(header[:4], "big") if len(header) >= 8 else -1
    if magic not in (_IDX_LABELS, _IDX_IMAGES):
        raise DataError(
            f"{source} is not an IDX file of uint8 images or labels (magic "
            f"number {magic:#x}); replace it with the original file"
        )
    count = int.from_bytes(header[4:8], "big")
    item_size = 1
    header_size = 8
    if magic == _IDX_IMAGES:
        item_size = int.from_bytes(header[8:12], "big") * int.from_bytes(
            header[12:16], "big"
        )
        header_size = 16
    expected = header_size + count * item_size
    actual = path.stat().st_size
    if actual != expected:
        raise DataError(
            f"{source} is truncated or corrupt: it declares {count} items "
            f"({expected} bytes) but holds {actual} bytes; replace it with the "
            "original file"
        )


class IDXDatasetSource(DatasetSource):
    """MNIST-style data sets stored as four IDX files, read by torchvision.

    A folder qualifies when it contains the four files either uncompressed or as
    the original ``.gz`` archives, directly or in torchvision's
    ``<ClassName>/raw`` layout. Every file's IDX header and size are checked
    before torchvision reads it. Archives are extracted once into the user
    cache folder, since system folders are read-only. The extracted copy is
    keyed by the archives' path, size and modification time, so a changed or
    different source is extracted anew.
    """

    image_shape = (1, 28, 28)
    num_classes = 10

    def __init__(
        self,
        name: str,
        torchvision_class: type[MNIST],
        description: str,
        mirrors: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.torchvision_class = torchvision_class
        self.description = description
        # Base URLs tried in order for each archive; torchvision's by default.
        self.mirrors = list(torchvision_class.mirrors if mirrors is None else mirrors)

    @property
    def archives(self) -> list[tuple[str, str]]:
        """``(file name, MD5)`` of the four original ``.gz`` files."""
        return list(self.torchvision_class.resources)

    def load(self, config: DataConfig) -> ImageData:
        if config.split not in ("train", "test"):
            raise DataError(
                f"data set {self.name!r} has splits train and test; "
                f"got data.split={config.split!r}"
            )
        searched: list[Path] = []
        for folder in candidate_folders(self.name, config.root):
            for layout in (folder, folder / self.torchvision_class.__name__ / "raw"):
                searched.append(layout)
                raw_folder = self._usable_raw_folder(layout)
                if raw_folder is not None:
                    return self._read(raw_folder, config.split, str(layout))
        download_note = self._try_download(config)
        if download_note is None:
            # Downloads land in the cache folder's lookup location, where the
            # next run finds them.
            folder = cache_folder() / self.name
            raw_folder = self._usable_raw_folder(folder)
            assert raw_folder is not None, "a complete download was not found"
            return self._read(raw_folder, config.split, str(folder))
        names = ", ".join(name for name, _ in self.archives)
        if self.mirrors:
            manual = f"download the four files from {self.mirrors[0]} and put them"
        else:
            manual = "put the four files"
        raise DataError(
            f"data set {self.name!r} not found. Looked for {names} (or the same "
            f"files uncompressed) in: {', '.join(map(str, searched))}. "
            f"{download_note} To add it by hand, {manual} "
            f"{placement_note(self.name)}. On Debian, "
            f"`apt-get install dataset-{self.name}` installs them."
        )

    def _usable_raw_folder(self, folder: Path) -> Path | None:
        if not folder.is_dir():
            return None
        raw_names = [name.removesuffix(".gz") for name, _ in self.archives]
        if all((folder / name).is_file() for name in raw_names):
            for name in raw_names:
                check_idx_file(folder / name, folder / name)
            return folder
        if all((folder / name).is_file() for name, _ in self.archives):
            return self._extract(folder)
        return None

    def _extract(self, folder: Path) -> Path:
        fingerprint = hashlib.sha256()
        for name, _ in self.archives:
            archive = (folder / name).resolve()
            status = archive.stat()
            key = f"{archive}|{status.st_size}|{status.st_mtime_ns}\n"
            fingerprint.update(key.encode())
        target = cache_folder() / "extracted" / self.name / fingerprint.hexdigest()[:16]
        for name, _ in self.archives:
            source = folder / name
            destination = target / name.removesuffix(".gz")
            if destination.is_file():
                continue
            target.mkdir(parents=True, exist_ok=True)
            # Extract to a temporary name first so an interrupted run never
            # leaves a truncated file under the final name.
            try:
                with (
                    gzip.open(source, "rb") as compressed,
                    tempfile.NamedTemporaryFile(dir=target, delete=False) as temporary,
                ):
                    shutil.copyfileobj(compressed, temporary)
                check_idx_file(Path(temporary.name), source)
            except (OSError, EOFError, DataError) as error:
                Path(temporary.name).unlink(missing_ok=True)
                if isinstance(error, DataError):
                    raise
                raise DataError(
                    f"{source} is not a readable gzip archive ({error}); replace "
                    "it with the original file"
                ) from None
            os.replace(temporary.name, destination)
            logger.info("extracted %s to %s", source, destination)
        return target

    def _read(self, raw_folder: Path, split: str, location: str) -> ImageData:
        base = self.torchvision_class

        class Located(base):  # type: ignore[misc,valid-type]
            @property
            def raw_folder(self) -> str:
                return str(raw_folder)

        Located.__name__ = base.__name__
        try:
            dataset = Located(str(raw_folder), train=split == "train", download=False)
        except (RuntimeError, OSError, ValueError) as error:
            raise DataError(
                f"cannot read data set {self.name!r} from {raw_folder}: {error}"
            ) from error
        images = dataset.data.unsqueeze(1).contiguous()  # (num_images, 1, 28, 28)
        return ImageData(
            name=self.name,
            image_shape=self.image_shape,
            location=location,
            images=images,
            labels=dataset.targets.long(),
            num_classes=self.num_classes,
        )

    def _try_download(self, config: DataConfig) -> str | None:
        """Download the four archives into the cache folder, checking each
        one's MD5; None on success, else a sentence on why there is no
        download for the not-found message."""
        skipped = download_skipped_note(config)
        if skipped is not None:
            return skipped
        folder = cache_folder() / self.name
        for name, md5 in self.archives:
            if (folder / name).is_file():
                continue
            try:
                fetch_file(
                    [mirror + name for mirror in self.mirrors], folder / name, md5
                )
            except DataError as error:
                return f"The download failed: {error}."
        return None


def scale_images(
    images: torch.Tensor, output_range: tuple[float, float], dtype: torch.dtype
) -> torch.Tensor:
    """Map uint8 images to floats in ``output_range``, (0, 1) or (-1, 1)."""
    low, high = output_range
    return images.to(dtype) * ((high - low) / 255.0) + low


_augmentation = threading.local()


def augmentation_generator() -> torch.Generator:
    """Return the torch.Generator that a data set's ``__getitem__`` draws its
    random augmentation from.

    While a :class:`BatchStream` loads an item, the generator is seeded from
    the run seed, the epoch and the item's position in that epoch's
    permutation. Every item of every epoch so gets its own stream, the same
    in every DataLoader worker, on every rank and after a resume, whatever
    ``data.num_workers`` and the world size are. Outside a BatchStream it is
    one generator per process and thread, seeded from ``torch.initial_seed()``
    (which DataLoader sets per worker), so draws then depend on the worker
    layout.
    """
    generator: torch.Generator | None = getattr(_augmentation, "generator", None)
    if generator is None:
        generator = torch.Generator().manual_seed(torch.initial_seed())
        _augmentation.generator = generator
    return generator


def augmentation_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the augmentation stream of the item at ``position`` of epoch
    ``epoch``'s permutation, a 63-bit SeedSequence hash."""
    entropy = [seed % 2**64, epoch, position]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


class _SeededItems(Dataset):
    """A data set read by ``(seed, epoch, position, index)`` keys: seeds
    :func:`augmentation_generator` for the item, then loads ``index``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int, int, int]) -> Any:
        seed, epoch, position, index = key
        previous = getattr(_augmentation, "generator", None)
        _augmentation.generator = torch.Generator().manual_seed(
            augmentation_seed(seed, epoch, position)
        )
        try:
            return self.dataset[index]
        finally:
            _augmentation.generator = previous


class _EpochBatchSampler(Sampler[list[tuple[int, int, int, int]]]):
    """Item keys of this rank's batches of one epoch of a :class:`BatchStream`,
    from its position; keys are what :class:`_SeededItems` reads."""

    def __init__(self, stream: BatchStream) -> None:
        self.order = stream._order
        self.seed = stream.seed
        self.epoch = stream.epoch
        self.start = stream.position
        self.batch_size = stream.batch_size
        self.global_batch_size = stream.global_batch_size
        self.offset = stream.rank * stream.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        last = len(self.order) - self.global_batch_size
        for begin in range(self.start, last + 1, self.global_batch_size):
            first = begin + self.offset
            positions = range(first, first + self.batch_size)
            yield [
                (self.seed, self.epoch, position, int(self.order[position]))
                for position in positions
            ]

    def __len__(self) -> int:
        return (len(self.order) - self.start) // self.global_batch_size


def _collate_images(samples: Sequence[tuple[torch.Tensor, Any]]) -> torch.Tensor:
    return torch.stack([image for image, _ in samples])


class BatchStream:
    """An endless stream of uint8 image batches in a seeded shuffled order.

    Epoch ``e`` visits the images in ``randperm`` order drawn from a generator
    seeded with ``(seed, e)`` and drops the last partial global batch, so the
    order depends only on the seed and is restored exactly from
    :meth:`state_dict`.

    With ``world_size`` ranks, each global batch of ``batch_size * world_size``
    consecutive images of the permutation is cut into ``world_size`` slices
    and rank r gets slice r. The ranks' batches of one step are therefore
    disjoint, and together they are the batch that a single process with
    ``batch_size * world_size`` would draw. Every rank holds the same
    :meth:`state_dict`, in images of the global permutation.
    """

    def __init__(
        self,
        data: ImageData,
        *,
        batch_size: int,
        seed: int,
        device: torch.device,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of size {world_size}")
        self.global_batch_size = batch_size * world_size
        if len(data) < self.global_batch_size:
            per_rank = f" on each of {world_size} ranks" if world_size > 1 else ""
            raise DataError(
                f"data set {data.name!r} at {data.location} has {len(data)} "
                f"images, fewer than trainer.batch_size={batch_size}{per_rank}; "
                "lower the batch size or the number of processes, or add images"
            )
        self.data = data
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.device = device
        self.num_workers = num_workers
        self.epoch = 0
        self.position = 0
        self._images = data.images
        if self._images is not None and device.type != "cpu":
            # A uint8 image set of a few hundred MB fits on any training GPU,
            # and keeping it there removes the host-to-device copy per step.
            self._images = self._images.to(device)
        self._order = self._epoch_order()
        self._image_order = self._order_on_image_device()
        self._loader_iter: Iterator[torch.Tensor] | None = None

    def _epoch_order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.data), generator=generator)

    def _order_on_image_device(self) -> torch.Tensor:
        """Copy the epoch's permutation to the device of the resident images.

        :meth:`next_batch` then gathers each batch on the device. A per-step
        copy of the indices from pageable host memory would make the host
        wait for the GPU's queued work every step.
        """
        if self._images is None or self._images.device.type == "cpu":
            return self._order
        if self._images.device.type != "cuda":
            return self._order.to(self._images.device)
        # NOTE: this path has not run on a GPU. A pinned source lets the copy
        # run asynchronously. torch's pinned-memory allocator keeps the source
        # alive until the copy is done, even after the next epoch replaces it.
        return self._order.pin_memory().to(self._images.device, non_blocking=True)

    def _start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.position = 0
        self._order = self._epoch_order()
        self._image_order = self._order_on_image_device()
        self._loader_iter = None

    def next_batch(self) -> torch.Tensor:
        """Return this rank's next ``(batch_size, *image_shape)`` uint8 batch
        on the device."""
        if self.position + self.global_batch_size > len(self._order):
            self._start_epoch(self.epoch + 1)
        if self._images is not None:
            first = self.position + self.rank * self.batch_size
            indices = self._image_order[first : first + self.batch_size]
            batch = torch.index_select(self._images, 0, indices)
        else:
            if self._loader_iter is None:
                self._loader_iter = iter(self._loader())
            batch = next(self._loader_iter).to(self.device, non_blocking=True)
        self.position += self.global_batch_size
        return batch

    def _loader(self) -> DataLoader:
        assert self.data.dataset is not None
        return DataLoader(
            _SeededItems(self.data.dataset),
            batch_sampler=_EpochBatchSampler(self),
            num_workers=self.num_workers,
            collate_fn=_collate_images,
            pin_memory=self.device.type == "cuda",
        )

    def state_dict(self) -> dict[str, int]:
        """Position in the stream: epoch and images consumed in that epoch."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a position saved by :meth:`state_dict`."""
        self._start_epoch(int(state["epoch"]))
        self.position = int(state["position"])
