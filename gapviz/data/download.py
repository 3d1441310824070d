"""Downloading files into gapviz's cache: concurrent, retried, timed out, resumable.

Standard library only (``urllib`` + ``concurrent.futures``): the job is plain HTTP GETs of
images and one listing file, which does not earn a dependency.

- Each URL has one cache file, named by a hash of the URL; a file that is there is not fetched
  again, so a second run, or a run after an interruption, only fetches what is missing.
- Bytes arrive in ``<file>.part``; an interrupted transfer resumes from there with an HTTP
  ``Range`` request (a server that ignores it is read from the start), and the finished file
  is renamed into place, so a cache file is always complete.
- Connection errors, timeouts, HTTP 5xx and 429 are retried with exponential back-off; a 4xx
  is final and remembered in ``<file>.dead`` so dead links (common in Conceptual Captions) are
  not asked for again on the next run.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .defaults import (DOWNLOAD_BACKOFF, DOWNLOAD_RETRIES, DOWNLOAD_TIMEOUT, DOWNLOAD_WORKERS,
                       MAX_DOWNLOAD_BYTES, USER_AGENT)
from .pairs import Progress

CHUNK = 64 * 1024


class DownloadError(OSError):
    """A URL that could not be fetched. ``reason`` is short and report-ready (``"HTTP 404"``);
    ``permanent`` is True when retrying cannot help (a 4xx answer, a file over the size limit)."""

    def __init__(self, url: str, reason: str, permanent: bool = False) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.permanent = permanent


def is_url(value: str | os.PathLike) -> bool:
    return isinstance(value, str) and urlparse(value).scheme in ("http", "https")


def url_cache_path(url: str, folder: str | os.PathLike, suffix: str = "") -> Path:
    """Where ``url`` is cached under ``folder``: a hash of the URL, fanned out over 256 folders."""
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()
    return Path(folder) / digest[:2] / f"{digest}{suffix}"


@dataclass
class Downloader:
    """Fetches URLs into a cache folder; call it with a list of URLs (a :data:`~gapviz.data.pairs.Fetcher`).

    Parameters
    ----------
    folder : path
        Cache folder for the downloaded files.
    workers : int
        Concurrent connections.
    timeout : float
        Seconds a connection may stay silent (connect or read) before the attempt fails.
    retries : int
        Extra attempts after a failure that may be temporary.
    backoff : float
        Seconds before the first retry; doubled for each further one.
    max_bytes : int
        Larger responses are abandoned (and the URL marked dead).
    retry_dead : bool
        Ask again for URLs that failed permanently on an earlier run.
    progress : callable, optional
        ``progress(done, total, "downloading")`` after each URL of a batch.
    """

    folder: str | os.PathLike
    workers: int = DOWNLOAD_WORKERS
    timeout: float = DOWNLOAD_TIMEOUT
    retries: int = DOWNLOAD_RETRIES
    backoff: float = DOWNLOAD_BACKOFF
    max_bytes: int = MAX_DOWNLOAD_BYTES
    retry_dead: bool = False
    progress: Progress | None = None

    def __call__(self, urls: Sequence[str]) -> list[tuple[str | None, str | None]]:
        """Fetch ``urls`` concurrently; ``(path, None)`` for each success, ``(None, reason)`` otherwise."""
        done = 0

        def one(url: str) -> tuple[str | None, str | None]:
            try:
                return str(self.fetch(url)), None
            except DownloadError as err:
                return None, f"download failed ({err.reason})"

        # One transfer per distinct URL: two threads writing the same .part file would mix bytes.
        unique = list(dict.fromkeys(urls))
        results: dict[str, tuple[str | None, str | None]] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            for url, result in zip(unique, pool.map(one, unique)):
                results[url] = result
                done += 1
                if self.progress is not None:
                    self.progress(done, len(unique), "downloading")
        return [results[url] for url in urls]

    def fetch(self, url: str, dest: str | os.PathLike | None = None,
              on_bytes: Callable[[int, int], None] | None = None) -> Path:
        """Download ``url`` to ``dest`` (default: its cache path) unless it is already there.

        ``on_bytes(received, total)`` reports progress within the file (``total`` is 0 when
        the server does not say). Raises :class:`DownloadError`.
        """
        if not is_url(url):
            raise DownloadError(url, "not an http(s) URL", permanent=True)
        dest = Path(dest) if dest is not None else url_cache_path(url, self.folder)
        if dest.is_file():
            return dest
        dead = dest.with_name(dest.name + ".dead")
        if dead.is_file() and not self.retry_dead:
            raise DownloadError(url, dead.read_text(encoding="utf-8", errors="replace").strip() or
                                "failed before", permanent=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                self._get(url, part, on_bytes)
                os.replace(part, dest)
                return dest
            except DownloadError as err:
                if err.permanent or attempt == self.retries:
                    if err.permanent:
                        dead.write_text(err.reason, encoding="utf-8")
                        part.unlink(missing_ok=True)
                    raise
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _get(self, url: str, part: Path, on_bytes: Callable[[int, int], None] | None) -> None:
        """One attempt: GET ``url`` into ``part``, resuming from what ``part`` already holds."""
        have = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if have and response.status != 206:
                    have = 0  # the server ignored the range: start again
                length = response.headers.get("Content-Length")
                expected = have + int(length) if length and length.isdigit() else 0
                if expected > self.max_bytes:
                    raise DownloadError(url, f"larger than {self.max_bytes:,} bytes", permanent=True)
                received = have
                with open(part, "ab" if have else "wb") as out:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        if received > self.max_bytes:
                            raise DownloadError(url, f"larger than {self.max_bytes:,} bytes",
                                                permanent=True)
                        if on_bytes is not None:
                            on_bytes(received, expected)
                if expected and received < expected:
                    raise DownloadError(url, f"connection closed after {received} of {expected} bytes")
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # our partial file is bad or already complete: restart
                part.unlink(missing_ok=True)
                raise DownloadError(url, "HTTP 416 (range not satisfiable)") from None
            permanent = 400 <= err.code < 500 and err.code not in (408, 425, 429)
            raise DownloadError(url, f"HTTP {err.code}", permanent=permanent) from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise DownloadError(url, "timed out") from None
            raise DownloadError(url, f"cannot connect ({reason})") from None
        except (socket.timeout, TimeoutError):
            raise DownloadError(url, "timed out") from None
        except (http.client.HTTPException, ConnectionError) as err:
            raise DownloadError(url, f"connection broken ({type(err).__name__})") from None


#: Largest single file :func:`fetch_file` accepts (annotation archives run to hundreds of MB).
MAX_FILE_BYTES = 50 * 1024**3


def fetch_file(url: str, folder: str | os.PathLike, *, name: str | None = None,
               progress: Progress | None = None, **settings: Any) -> Path:
    """Download one (possibly large) file such as an annotation listing, with byte progress.

    Cached as ``folder/<url hash>/<name>`` where ``name`` defaults to the URL's last path
    part, so the file keeps a recognisable name and extension.
    """
    name = name or Path(urlparse(url).path).name or "download"
    dest = url_cache_path(url, folder) / name
    settings.setdefault("max_bytes", MAX_FILE_BYTES)
    downloader = Downloader(folder, **settings)
    stage = f"downloading {name}"
    on_bytes = (lambda got, total: progress(got, total, stage)) if progress else None
    return downloader.fetch(url, dest, on_bytes=on_bytes)
