"""Image data sets stored as SVHN ``.mat`` files or as folders of image files.

Both kinds are looked up like MNIST, in the folders that
:func:`genlatent.data.candidate_folders` lists, and the first complete copy
wins. Folder data sets decode every file once at load time, before training
starts, so a corrupt or truncated file is reported by path instead of stopping
a data loader worker deep into a run.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset
from torchvision.datasets import SVHN

from genlatent.config import DataConfig
from genlatent.data import (
    DatasetSource,
    ImageData,
    cache_folder,
    candidate_folders,
    download_skipped_note,
    downloads_enabled,
    placement_note,
)
from genlatent.download import fetch_file
from genlatent.errors import DataError

logger = logging.getLogger(__name__)

# File name suffixes that Pillow decodes, compared in lower case.
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")

# Folder data sets up to this many bytes of decoded uint8 images are kept in
# memory, so batches are plain tensor indexing. CelebA's 202,599 images take
# 622 MB at 3x32x32 and fit, so only larger custom folders decode on demand.
MAX_IN_MEMORY_BYTES = 1 << 30

# Warnings about skipped files are logged one by one up to this count, then
# summed up in one more warning.
MAX_SKIP_WARNINGS = 20

# Exceptions that Pillow raises on a corrupt, truncated or unsupported file: OSError
# (UnidentifiedImageError and "image file is truncated" included), SyntaxError
# and struct.error from broken headers, zlib.error from broken PNG data, and
# DecompressionBombError for images over Pillow's pixel limit.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """Return the ``(left, top, right, bottom)`` box of a centered square.

    The side is ``crop`` pixels, or the largest that fits when ``crop`` is 0 or
    larger than the image. Offsets round like torchvision's ``CenterCrop``.
    """
    side = min(width, height) if crop == 0 else min(crop, width, height)
    left = round((width - side) / 2.0)
    top = round((height - side) / 2.0)
    return left, top, left + side, top + side


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode`` (``L`` or ``RGB``), compositing transparency on white.

    Pillow's own conversion drops the alpha band and keeps whatever color lies
    under transparent pixels, often black. 16-bit gray images are scaled to 8
    bits, where Pillow's conversion would clip them at 255.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        wide = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)


@attrs.frozen
class ImageTransform:
    """Decoding of one image file to a ``(channels, size, size)`` uint8 tensor.

    The image is converted to gray (1 channel) or RGB (3 channels), so gray
    files in a color data set get three equal channels. Then a centered square
    of ``crop`` pixels is cut (0: the largest one) and resized to ``size``
    pixels with Pillow's antialiased bilinear filter.
    """

    channels: int
    size: int
    crop: int

    @property
    def mode(self) -> str:
        """The Pillow mode images are converted to."""
        return "L" if self.channels == 1 else "RGB"

    def __call__(self, path: Path, *, verify: bool = False) -> torch.Tensor:
        """Decode ``path``, raising one of :data:`DECODE_ERRORS` on a bad file.

        With ``verify``, Pillow's ``verify()`` first checks the file's
        structure (PNG chunk checksums, for one), which decoding alone skips.
        """
        if verify:
            with Image.open(path) as image:
                image.verify()
        with Image.open(path) as image:
            image.load()
            converted = _to_mode(image, self.mode)
        box = center_crop_box(*converted.size, self.crop)
        square = converted.crop(box)
        if square.size != (self.size, self.size):
            square = square.resize(
                (self.size, self.size), resample=Image.Resampling.BILINEAR
            )
        pixels = torch.from_numpy(np.array(square, dtype=np.uint8))
        if self.channels == 1:
            return pixels.unsqueeze(0)  # (1, size, size)
        return pixels.permute(2, 0, 1).contiguous()  # (3, size, size)


class ImageFileDataset(Dataset):
    """Image files decoded on demand.

    Item ``i`` is ``(uint8 image tensor of shape (channels, size, size), -1)``,
    where -1 stands for "no label". A file that fails to decode raises
    DataError naming it.
    """

    def __init__(self, paths: Sequence[Path], transform: ImageTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            return self.transform(path), -1
        except DECODE_ERRORS as error:
            raise DataError(
                f"{path} is not a readable image ({_describe(error)}), although "
                "it was when the data set was loaded; restore the file and "
                "restart the run"
            ) from error


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".replace("\n", " ")


def _worker_count() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    # Pillow releases the GIL while it decodes and resizes, so threads scale
    # with cores; a few extra threads hide file-system latency.
    return min(32, available + 4)


def decode_files(
    paths: Sequence[Path], transform: ImageTransform, *, keep: bool
) -> tuple[torch.Tensor | None, list[tuple[Path, str]]]:
    """Verify and decode every file in a thread pool.

    Returns:
        ``(images, failures)``. With ``keep``, ``images`` is a ``(len(paths),
        channels, size, size)`` uint8 tensor in the order of ``paths``, whose
        rows of failed files are left unset. Without it, ``images`` is None.
        ``failures`` lists ``(path, reason)`` for every file that failed, in
        the order of ``paths``.
    """
    shape = (len(paths), transform.channels, transform.size, transform.size)
    images = torch.empty(shape, dtype=torch.uint8) if keep else None

    def decode(index: int) -> str | None:
        try:
            image = transform(paths[index], verify=True)
        except DECODE_ERRORS as error:
            return _describe(error)
        if images is not None:
            images[index] = image
        return None

    with concurrent.futures.ThreadPoolExecutor(_worker_count()) as pool:
        reasons = list(pool.map(decode, range(len(paths))))
    failures = [
        (path, reason)
        for path, reason in zip(paths, reasons, strict=True)
        if reason is not None
    ]
    return images, failures


def _list_images(folder: Path, pattern: str) -> list[Path]:
    # Hidden files are left out: archives made on macOS add a "._NAME.jpg"
    # metadata file next to every image, which no image decoder reads.
    return sorted(
        path
        for path in folder.glob(pattern)
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not path.name.startswith(".")
        and path.is_file()
    )


def _describe_contents(folder: Path) -> str:
    """Describe what ``folder`` contains instead of images, for the not-found
    message."""
    entries = sorted(entry.name for entry in folder.iterdir())
    if not entries:
        return f"{folder} is empty"
    archives = [name for name in entries if name.lower().endswith(ARCHIVE_SUFFIXES)]
    listing = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    note = f"{folder} contains no image files ({len(entries)} entries: {listing})"
    if archives:
        note += f"; extract {', '.join(archives)} first"
    return note


@attrs.frozen
class RemoteFile:
    """A file a data set can download: its name, MD5 and mirrors.

    A ``.zip`` file is extracted into the data set's cache folder after it
    passes its MD5 check.
    """

    name: str
    md5: str
    urls: tuple[str, ...]


@attrs.frozen
class Partition:
    """A file that assigns each image to a split, one ``NAME INDEX`` per line.

    ``splits`` maps a split name to its index; an image listed with another
    index is left out of that split.
    """

    file_name: str
    splits: dict[str, int]


class ImageFolderSource(DatasetSource):
    """An unlabelled data set of image files in a folder.

    Each folder from :func:`genlatent.data.candidate_folders` is tried with
    each of ``layouts`` in order, glob patterns relative to that folder such
    as ``img_align_celeba/*``, and the first that matches an image file wins.
    Files with the suffixes in :data:`IMAGE_SUFFIXES` count as images, except
    hidden ones.

    Every file is verified and decoded once at load time. A file that fails
    raises DataError naming it, unless ``data.skip_corrupt`` is set, which
    leaves it out with a warning. Data sets up to ``max_in_memory_bytes`` of
    decoded images stay in memory; larger ones are decoded again on demand by
    the DataLoader with ``data.num_workers`` worker processes.

    Without a ``partition`` file next to the images, the only split is
    ``train``, made of every image found. With one, each split is the images
    the file assigns to it. Data sets with ``downloads`` fetch and extract
    those files into the cache folder when no local copy is found and
    downloads are on.
    """

    def __init__(
        self,
        name: str,
        *,
        image_shape: tuple[int, int, int],
        layouts: Sequence[str],
        default_crop: int,
        description: str,
        instructions: str,
        max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES,
        downloads: Sequence[RemoteFile] = (),
        partition: Partition | None = None,
    ) -> None:
        channels, height, width = image_shape
        if channels not in (1, 3) or height != width:
            raise ValueError(
                f"image folder data sets give square gray or RGB images; got "
                f"image_shape={image_shape}"
            )
        self.name = name
        self.image_shape = image_shape
        self.layouts = tuple(layouts)
        self.default_crop = default_crop
        self.description = description
        self.instructions = instructions
        self.max_in_memory_bytes = max_in_memory_bytes
        self.downloads = tuple(downloads)
        self.partition = partition

    def transform(self, config: DataConfig) -> ImageTransform:
        """Build the decoding that ``config`` selects."""
        crop = self.default_crop if config.crop is None else config.crop
        channels, size, _ = self.image_shape
        return ImageTransform(channels=channels, size=size, crop=crop)

    def find_files(self, config: DataConfig) -> tuple[Path, list[Path]]:
        """Return the folder that matched and its sorted image files.

        Raises:
            DataError: no folder and layout matched. The message lists every
                folder searched and explains why existing folders did not match.
        """
        found, searched = self._search(config)
        if found is None:
            reason = download_skipped_note(config) if self.downloads else None
            raise self._not_found(searched, reason)
        return found

    def _search(self, config: DataConfig) -> tuple[tuple[Path, list[Path]] | None, str]:
        """Find the first folder and layout with image files.

        Returns:
            A pair: the folder and its image files (None when nothing
            matched), and the folders searched with why each existing one did
            not match, for the not-found message.
        """
        searched: list[str] = []
        notes: list[str] = []
        for folder in candidate_folders(self.name, config.root):
            searched.append(str(folder))
            if not folder.is_dir():
                continue
            for layout in self.layouts:
                files = _list_images(folder, layout)
                if files:
                    return (folder, files), ""
            notes.append(_describe_contents(folder))
        details = f" ({'; '.join(notes)})" if notes else ""
        return None, f"{', '.join(searched)}{details}"

    def _not_found(self, searched: str, reason: str | None) -> DataError:
        """Build the not-found error: where it looked, ``reason`` (why no
        download helped, a sentence) and how to add the images by hand."""
        if len(self.layouts) > 1:
            patterns = ", ".join(self.layouts[:-1]) + f" or {self.layouts[-1]}"
        else:
            patterns = self.layouts[0]
        reason_sentence = f" {reason}" if reason else ""
        return DataError(
            f"data set {self.name!r} not found. Looked for image files matching "
            f"{patterns} in: {searched}.{reason_sentence} {self.instructions} "
            f"Put the images {placement_note(self.name)}."
        )

    def download(self, config: DataConfig) -> None:
        """Fetch and extract ``downloads`` into the cache folder.

        Raises:
            DataError: a file could not be downloaded; nothing it received is
                kept.
        """
        folder = cache_folder() / self.name
        for remote in self.downloads:
            path = folder / remote.name
            if not path.is_file():
                fetch_file(remote.urls, path, remote.md5)
            if remote.name.endswith(".zip"):
                logger.info("extracting %s into %s", path, folder)
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(folder)

    def select_split(self, folder: Path, files: list[Path], split: str) -> list[Path]:
        """Keep the files of ``split``, as the partition file assigns them."""
        partition_path = folder / self.partition.file_name if self.partition else None
        if (
            self.partition is None
            or partition_path is None
            or not partition_path.is_file()
        ):
            if split != "train":
                raise DataError(
                    f"data set {self.name!r} in {folder} has the single split "
                    f"train (all images); got data.split={split!r}"
                )
            return files
        splits = self.partition.splits
        if split not in splits:
            raise DataError(
                f"data set {self.name!r} has splits {', '.join(splits)}; got "
                f"data.split={split!r}"
            )
        assigned = {}
        for number, line in enumerate(partition_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(
                    f"{partition_path}, line {number}: expected 'FILE INDEX', got "
                    f"{line!r}"
                )
            assigned[parts[0]] = int(parts[1])
        wanted = splits[split]
        return [path for path in files if assigned.get(path.name) == wanted]

    def load(self, config: DataConfig) -> ImageData:
        found, searched = self._search(config)
        if found is None and self.downloads and downloads_enabled(config):
            try:
                self.download(config)
            except DataError as error:
                raise self._not_found(
                    searched, f"The download failed: {error}."
                ) from None
            found, searched = self._search(config)
        if found is None:
            reason = download_skipped_note(config) if self.downloads else None
            raise self._not_found(searched, reason)
        folder, files = found
        files = self.select_split(folder, files, config.split)
        if not files:
            raise DataError(
                f"data set {self.name!r} in {folder} has no images in split "
                f"{config.split!r}"
            )
        transform = self.transform(config)
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            # With this Pillow global set, truncated files decode without an
            # error, so the check below cannot report them.
            logger.warning(
                "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated image "
                "files in %s load without an error and are not reported",
                folder,
            )
        image_bytes = int(np.prod(self.image_shape))
        keep = len(files) * image_bytes <= self.max_in_memory_bytes

        logger.info("checking %d image files in %s", len(files), folder)
        start = time.perf_counter()
        images, failures = decode_files(files, transform, keep=keep)
        logger.info(
            "checked %d image files in %.1f s", len(files), time.perf_counter() - start
        )
        if failures:
            self._report_failures(folder, len(files), failures, config.skip_corrupt)
            failed = {path for path, _ in failures}
            good = [index for index, path in enumerate(files) if path not in failed]
            files = [files[index] for index in good]
            if images is not None:
                images = images[torch.tensor(good, dtype=torch.long)]
        if images is not None:
            return ImageData(
                name=self.name,
                image_shape=self.image_shape,
                location=str(folder),
                images=images,
            )
        return ImageData(
            name=self.name,
            image_shape=self.image_shape,
            location=str(folder),
            dataset=ImageFileDataset(files, transform),
        )

    def _report_failures(
        self,
        folder: Path,
        num_files: int,
        failures: list[tuple[Path, str]],
        skip: bool,
    ) -> None:
        """Raise DataError for unreadable files, or warn when skipping them."""
        if not skip or len(failures) == num_files:
            first, reason = failures[0]
            others = [str(other) for other, _ in failures[1:6]]
            more = len(failures) - 1 - len(others)
            message = f"{first} is not a readable image ({reason})"
            if others:
                message += (
                    f"; {len(failures) - 1} more unreadable file(s) in {folder}: "
                    + ", ".join(others)
                    + (f" and {more} more" if more else "")
                )
            if len(failures) == num_files:
                message += f". None of the {num_files} image files is readable"
            else:
                message += (
                    ". Replace or delete the file(s), or set data.skip_corrupt=true "
                    "to train without them"
                )
            raise DataError(message)
        for path, reason in failures[:MAX_SKIP_WARNINGS]:
            logger.warning("skipping unreadable image %s (%s)", path, reason)
        if len(failures) > MAX_SKIP_WARNINGS:
            logger.warning(
                "skipped %d more unreadable images in %s",
                len(failures) - MAX_SKIP_WARNINGS,
                folder,
            )


class _PresentSVHN(SVHN):
    """torchvision's SVHN reader with a presence check in place of the MD5.

    :meth:`SVHNSource.read` checks the content instead, as MNIST's files are
    checked by content, so repackaged copies with other bytes also load.
    """

    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))


class SVHNSource(DatasetSource):
    """The Street View House Numbers digits, read by torchvision.

    A folder qualifies when it contains the split's ``.mat`` file:
    ``train_32x32.mat`` (73,257 images), ``test_32x32.mat`` (26,032) or
    ``extra_32x32.mat`` (531,131). The files label digit zero as 10; the
    loaded labels are 0..9, 1-D int64.
    """

    name = "svhn"
    image_shape = (3, 32, 32)
    num_classes = 10
    description = "SVHN house-number digits, 32x32 color, 10 classes"

    def load(self, config: DataConfig) -> ImageData:
        splits = list(SVHN.split_list)
        if config.split not in splits:
            raise DataError(
                f"data set {self.name!r} has splits {', '.join(splits)}; "
                f"got data.split={config.split!r}"
            )
        url, filename, _ = SVHN.split_list[config.split]
        searched: list[Path] = []
        for folder in candidate_folders(self.name, config.root):
            searched.append(folder)
            if (folder / filename).is_file():
                return self.read(folder, config.split)
        download_note = self._try_download(config)
        if download_note is None:
            return self.read(cache_folder() / self.name, config.split)
        raise DataError(
            f"data set {self.name!r} not found. Looked for {filename} in: "
            f"{', '.join(map(str, searched))}. {download_note} To add it by hand, "
            f"download {url} and put it {placement_note(self.name)}."
        )

    def read(self, folder: Path, split: str) -> ImageData:
        """Read and check the split's ``.mat`` file in ``folder``."""
        path = folder / SVHN.split_list[split][1]
        try:
            # torchvision reads .mat files with scipy, an optional dependency.
            from scipy.io.matlab import MatReadError
        except ImportError as error:
            raise DataError(
                f"reading {path} needs scipy ({error}); install it with "
                "`pip install scipy`"
            ) from None
        try:
            dataset = _PresentSVHN(str(folder), split=split, download=False)
        except NotImplementedError as error:
            # scipy reads MATLAB v4 to v7.2 files; v7.3 files are HDF5.
            raise DataError(
                f"{path} is not a MATLAB v5 .mat file like the original ({error}); "
                "replace it with the original file"
            ) from None
        except (MatReadError, ValueError, KeyError, TypeError, OSError) as error:
            raise DataError(
                f"{path} is not a readable SVHN file ({_describe(error)}); replace "
                "it with the original file"
            ) from None

        # torchvision transposes the file's (height, width, 3, N) X array to
        # (N, 3, height, width), which raises ValueError unless X has 4 axes.
        data = np.asarray(dataset.data)
        if data.shape[1:] != (3, 32, 32) or data.dtype != np.uint8:
            count, channels, height, width = data.shape
            raise DataError(
                f"{path} contains an X array of shape "
                f"{(height, width, channels, count)} and type {data.dtype}, but "
                "SVHN's is (32, 32, 3, N) uint8; replace it with the original file"
            )
        # torchvision already maps label 10 to 0. Reshaping, unlike its
        # squeeze(), keeps the labels of a one-image file 1-D.
        labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64)).reshape(
            -1
        )
        if labels.numel() != data.shape[0]:
            raise DataError(
                f"{path} contains {data.shape[0]} images but {labels.numel()} "
                "labels; replace it with the original file"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() > 9):
            raise DataError(
                f"{path} contains labels {labels.min().item()}..."
                f"{labels.max().item()} after mapping 10 to 0, but SVHN's labels "
                "are 1..10; replace it with the original file"
            )
        images = torch.from_numpy(np.ascontiguousarray(data))  # (N, 3, 32, 32)
        return ImageData(
            name=self.name,
            image_shape=self.image_shape,
            location=str(folder),
            images=images,
            labels=labels,
            num_classes=self.num_classes,
        )

    def _try_download(self, config: DataConfig) -> str | None:
        """Download the split into the cache folder; None on success, else a
        sentence on why there is no download for the not-found message."""
        skipped = download_skipped_note(config)
        if skipped is not None:
            return skipped
        root = cache_folder() / self.name
        try:
            # torchvision checks the download's MD5.
            SVHN(str(root), split=config.split, download=True)
        except Exception as error:
            return f"The download into {root} failed: {_describe(error)}."
        return None


def _faces_source() -> ImageFolderSource:
    return ImageFolderSource(
        "faces",
        image_shape=(1, 32, 32),
        layouts=("*",),
        # The largest centered square, as renders of faces are framed already.
        default_crop=0,
        description="3D face renderings or any folder of face images, 32x32 gray",
        instructions=(
            "Render face images with the Basel Face Model "
            "(https://faces.dmi.unibas.ch/bfm/), or use any folder of face images."
        ),
    )


def _chairs_source() -> ImageFolderSource:
    return ImageFolderSource(
        "chairs",
        image_shape=(1, 64, 64),
        layouts=("rendered_chairs/*/renders/*", "*/renders/*", "*"),
        # The renders are 600x600 with the chair centered on white; a 400 px
        # square keeps the chair and drops most of the empty border.
        default_crop=400,
        description="3D chairs renderings (Aubry et al., 2014), 64x64 gray",
        instructions=(
            "Download https://www.di.ens.fr/willow/research/seeing3Dchairs/data/"
            "rendered_chairs.tar and extract it, which gives "
            "rendered_chairs/<model>/renders/*.png."
        ),
    )


# Google Drive copies of the official release, with torchvision's MD5s.
_DRIVE = "https://drive.google.com/uc?export=download&id="
CELEBA_FILES = (
    RemoteFile(
        "img_align_celeba.zip",
        "00d2c5bc6d35e252742224ab0c1e8fcb",
        (_DRIVE + "0B7EVK8r0v71pZjFTYXZWM3FlRnM",),
    ),
    RemoteFile(
        "list_attr_celeba.txt",
        "75e246fa4810816ffd6ee81facbd244c",
        (_DRIVE + "0B7EVK8r0v71pblRyaVFSWGxPY0U",),
    ),
    RemoteFile(
        "list_eval_partition.txt",
        "d32c9cbf5e040fd4025c592c306e6668",
        (_DRIVE + "0B7EVK8r0v71pY0NSMzRuSXJEVkk",),
    ),
)
# The official partition: 162,770 training, 19,867 validation and 19,962 test
# images, 202,599 in all.
CELEBA_PARTITION = Partition(
    "list_eval_partition.txt", {"train": 0, "valid": 1, "test": 2}
)


def _celeba_source() -> ImageFolderSource:
    return ImageFolderSource(
        "celeba",
        downloads=CELEBA_FILES,
        partition=CELEBA_PARTITION,
        image_shape=(3, 32, 32),
        layouts=("img_align_celeba/*", "*"),
        # The aligned images are 178x218. A 108 px square spans brow to chin
        # and drops most hair and background, so faces fill the 32x32 frame.
        # It is also the default center crop of the widely copied
        # DCGAN-tensorflow CelebA pipeline. data.crop=140 keeps the whole head.
        default_crop=108,
        description="CelebA aligned face photos or any folder of faces, 32x32 color",
        instructions=(
            "Download img_align_celeba.zip from "
            "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and extract it, "
            "which gives img_align_celeba/*.jpg, or use any folder of face images."
        ),
    )


def image_data_sources() -> list[DatasetSource]:
    """Build the data sets of this module, as genlatent registers them."""
    return [SVHNSource(), _celeba_source(), _faces_source(), _chairs_source()]
