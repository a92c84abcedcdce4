"""Downloads from mirrors that fail, serve web pages or serve the real files.

Every test serves files from its own HTTP server on 127.0.0.1 and points the
data sets' mirrors at it, so nothing leaves the machine.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import io
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
from PIL import Image
from torchvision.datasets import MNIST, FashionMNIST

from genlatent.config import DataConfig
from genlatent.data import IDXDatasetSource
from genlatent.errors import DataError
from genlatent.image_data import CELEBA_FILES, RemoteFile
from genlatent.plugins import load_plugins

from .conftest import FASHION_MNIST, requires_fashion_mnist

QUOTA_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>"
    b"</head><body>Too many users have viewed or downloaded this file.</body></html>"
)


@attrs.define
class Server:
    """A loopback HTTP server: ``/forbidden/*`` returns 403, ``/page/*`` a
    quota page, ``/files/*`` serves ``root``."""

    root: Path
    base: str
    requests: list[str]


@pytest.fixture
def server(tmp_path: Path, monkeypatch) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            kind, _, name = self.path.lstrip("/").partition("/")
            if kind == "forbidden":
                self.send_error(403, "Forbidden")
                return
            if kind == "page":
                body = QUOTA_PAGE
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
            elif kind == "files" and (root / name).is_file():
                body = (root / name).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
            else:
                self.send_error(404, "Not Found")
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("GENLATENT_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.setenv("GENLATENT_SYSTEM_DATASETS", str(tmp_path / "no-system"))
    try:
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    finally:
        httpd.shutdown()
        httpd.server_close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def served_fashion_source(server: Server, mirrors: list[str]) -> IDXDatasetSource:
    """A Fashion-MNIST source whose expected MD5s are those of the Debian
    archives served here (Debian recompressed them, so torchvision's differ)."""
    for name, _ in FashionMNIST.resources:
        shutil.copy(FASHION_MNIST / name, server.root / name)

    class ServedFashionMNIST(FashionMNIST):
        resources: ClassVar[list[tuple[str, str]]] = [
            (name, md5(server.root / name)) for name, _ in FashionMNIST.resources
        ]

    ServedFashionMNIST.__name__ = "FashionMNIST"
    return IDXDatasetSource(
        "fashion-mnist", ServedFashionMNIST, "served copy", mirrors=mirrors
    )


def test_mnist_expected_checksums():
    source = load_plugins().get("datasets", "mnist")
    assert dict(source.archives) == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert source.mirrors == list(MNIST.mirrors)


@requires_fashion_mnist
def test_second_mirror_used_after_403(server, caplog):
    source = served_fashion_source(
        server, [f"{server.base}/forbidden/", f"{server.base}/files/"]
    )
    with caplog.at_level("WARNING", logger="genlatent"):
        train = source.load(DataConfig(dataset="fashion-mnist"))
    test = source.load(DataConfig(dataset="fashion-mnist", split="test"))
    assert len(train) == 60_000
    assert len(test) == 10_000
    forbidden = [path for path in server.requests if path.startswith("/forbidden/")]
    assert len(forbidden) == 4
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 4
    assert all("HTTP 403" in warning for warning in warnings)
    assert all(f"from {server.base}/files/" in warning for warning in warnings)


@requires_fashion_mnist
def test_wrong_checksum_is_rejected(server):
    source = served_fashion_source(server, [f"{server.base}/files/"])
    name = "t10k-labels-idx1-ubyte.gz"
    (server.root / name).write_bytes(b"\x1f\x8b" + b"\x00" * 64)
    with pytest.raises(DataError) as error:
        source.load(DataConfig(dataset="fashion-mnist"))
    message = str(error.value)
    assert f"cannot download {name}" in message
    assert "MD5 " in message
    cached = Path(server.root.parent / "cache-home" / "genlatent" / "fashion-mnist")
    assert not (cached / name).exists()
    assert not list(cached.glob(f".{name}.*"))


def test_all_mirrors_fail_lists_each(server, caplog):
    mirrors = [f"{server.base}/forbidden/", f"{server.base}/missing/"]
    source = IDXDatasetSource("mnist", MNIST, "MNIST", mirrors=mirrors)
    with (
        caplog.at_level("WARNING", logger="genlatent"),
        pytest.raises(DataError) as error,
    ):
        source.load(DataConfig(dataset="mnist"))
    # The error is the only report, so no warning repeats a failure.
    assert caplog.records == []
    message = str(error.value)
    for mirror in mirrors:
        assert f"{mirror}train-images-idx3-ubyte.gz" in message
    assert "HTTP 403" in message
    assert "HTTP 404" in message
    for name, _ in MNIST.resources:
        assert name in message
    assert "expected MD5 f68b3c2dcbeaaa9fbdd348bbdeb94873" in message
    assert message.count(f"{mirrors[0]}train-images-idx3-ubyte.gz") == 1
    assert message.count("To add it by hand, download the four files from ") == 1


@requires_fashion_mnist
def test_local_files_make_no_request(server, tmp_path):
    root = tmp_path / "local"
    root.mkdir()
    for name, _ in FashionMNIST.resources:
        shutil.copy(FASHION_MNIST / name, root / name)
    source = served_fashion_source(server, [f"{server.base}/files/"])
    data = source.load(DataConfig(dataset="fashion-mnist", root=str(root)))
    assert len(data) == 60_000
    assert server.requests == []


# -- CelebA ---------------------------------------------------------------------


def celeba_with_downloads(files: tuple[RemoteFile, ...]):
    """The registered CelebA source, downloading ``files`` instead."""
    source = copy.copy(load_plugins().get("datasets", "celeba"))
    source.downloads = files
    return source


def test_celeba_quota_page_is_reported(server):
    files = tuple(
        attrs.evolve(remote, urls=(f"{server.base}/page/{remote.name}",))
        for remote in CELEBA_FILES
    )
    source = celeba_with_downloads(files)
    with pytest.raises(DataError) as error:
        source.load(DataConfig(dataset="celeba"))
    message = str(error.value)
    assert "img_align_celeba.zip" in message
    assert "returned a web page" in message
    assert "Quota exceeded" in message
    assert "00d2c5bc6d35e252742224ab0c1e8fcb" in message
    cached = server.root.parent / "cache-home" / "genlatent" / "celeba"
    assert message.count(f"Put the images in {cached}, ") == 1
    assert message.count("https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html") == 1
    assert message.count("Quota exceeded") == 1
    assert not (cached / "img_align_celeba.zip").exists()
    assert not list(cached.glob(".img_align_celeba.zip.*"))


def test_celeba_checksums():
    assert {remote.name: remote.md5 for remote in CELEBA_FILES} == {
        "img_align_celeba.zip": "00d2c5bc6d35e252742224ab0c1e8fcb",
        "list_attr_celeba.txt": "75e246fa4810816ffd6ee81facbd244c",
        "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668",
    }


def test_celeba_download_and_partition(server):
    # A small release in the official layout: 12 images, partition 8/2/2.
    names = [f"{index:06d}.jpg" for index in range(1, 13)]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for index, name in enumerate(names):
            image = io.BytesIO()
            Image.new("RGB", (178, 218), (index * 20, 80, 160)).save(image, "JPEG")
            zipped.writestr(f"img_align_celeba/{name}", image.getvalue())
    (server.root / "img_align_celeba.zip").write_bytes(archive.getvalue())
    partition = "".join(
        f"{name} {0 if index < 8 else 1 if index < 10 else 2}\n"
        for index, name in enumerate(names)
    )
    (server.root / "list_eval_partition.txt").write_text(partition)
    (server.root / "list_attr_celeba.txt").write_text("12\nSmiling\n")
    files = tuple(
        RemoteFile(
            remote.name,
            md5(server.root / remote.name),
            (f"{server.base}/files/{remote.name}",),
        )
        for remote in CELEBA_FILES
    )
    source = celeba_with_downloads(files)
    sizes = {
        split: len(source.load(DataConfig(dataset="celeba", split=split)))
        for split in ("train", "valid", "test")
    }
    assert sizes == {"train": 8, "valid": 2, "test": 2}
    requests_after_first = len(server.requests)
    source.load(DataConfig(dataset="celeba"))
    assert len(server.requests) == requests_after_first
    with pytest.raises(DataError, match="has splits train, valid, test"):
        source.load(DataConfig(dataset="celeba", split="all"))
