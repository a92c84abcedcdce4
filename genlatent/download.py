"""Downloads that check what they receive.

A server that cannot serve a file often returns something else: an HTML
page saying a quota is exceeded, a login page, or a 403. :func:`fetch_file`
tries each mirror in turn, rejects web pages and files whose MD5 differs, and
keeps nothing it rejected, so a bad download is reported at once instead of
failing later as a "corrupt" file. Its callers add how to get the file by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from genlatent.errors import DataError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class WebPageError(OSError):
    """A server returned an HTML page where a data file was expected."""


class ChecksumError(OSError):
    """A downloaded file's MD5 differs from the expected one."""


def looks_like_web_page(first_bytes: bytes, content_type: str) -> bool:
    """Return whether a response is an HTML page rather than a data file."""
    start = first_bytes.lstrip()[:15].lower()
    return content_type == "text/html" or start.startswith(
        (b"<!doctype html", b"<html")
    )


def _page_title(first_bytes: bytes) -> str:
    found = _TITLE.search(first_bytes)
    if not found:
        return ""
    return " ".join(found.group(1).decode("utf-8", "replace").split())


def _fetch_one(url: str, destination: Path, md5: str, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "genlatent"})
    digest = hashlib.md5()
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    try:
        with (
            os.fdopen(handle, "wb") as file,
            urllib.request.urlopen(request, timeout=timeout) as response,
        ):
            first = response.read(CHUNK_BYTES)
            if looks_like_web_page(first, response.headers.get_content_type()):
                title = _page_title(first)
                raise WebPageError(
                    "the server returned a web page instead of the file"
                    + (f" (titled {title!r})" if title else "")
                    + ", which usually means a download quota was exceeded or "
                    "the file needs permission"
                )
            chunk = first
            while chunk:
                digest.update(chunk)
                file.write(chunk)
                chunk = response.read(CHUNK_BYTES)
        if digest.hexdigest() != md5:
            raise ChecksumError(f"MD5 {digest.hexdigest()}, expected {md5}")
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{error.reason}"
    return str(error) or type(error).__name__


def fetch_file(
    urls: Sequence[str],
    destination: Path,
    md5: str,
    *,
    timeout: float = 60.0,
) -> None:
    """Download ``destination`` from the first of ``urls`` that serves it.

    Args:
        urls: mirrors of the same file, tried in order.
        destination: where the file goes; written only once it is complete
            and its MD5 matches.
        md5: the expected MD5 as hex digits.
        timeout: seconds to wait for each server.

    Raises:
        DataError: no mirror served the file. The message names the file and
            the expected MD5 and lists every mirror with its failure. The
            caller adds how to get the file by hand.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        logger.info("downloading %s from %s", destination.name, url)
        try:
            _fetch_one(url, destination, md5, timeout)
        except (OSError, ValueError) as error:
            # Logged at debug level only, because the warning or error below
            # repeats every failure.
            reason = _reason(error)
            logger.debug("download of %s failed: %s", url, reason)
            failures.append(f"{url}: {reason}")
            continue
        if failures:
            logger.warning(
                "downloaded %s from %s after failures of %s",
                destination,
                url,
                "; ".join(failures),
            )
        else:
            logger.info("downloaded %s", destination)
        return
    mirrors = "1 mirror" if len(failures) == 1 else f"{len(failures)} mirrors"
    raise DataError(
        f"cannot download {destination.name} (expected MD5 {md5}) from "
        f"{mirrors}: {'; '.join(failures)}"
    )
