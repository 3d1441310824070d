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
- Time: ``timeout`` bounds each silent wait, ``deadline`` the whole transfer of one URL (all
  attempts), ``total_seconds`` everything one :class:`Downloader` fetches.
- Two processes fetching the same URL take turns on a lock file (``<file>.lock``): the second
  waits, then finds the finished file instead of writing into the first one's ``.part``.
- Redirects go only to http(s) URLs (at most :data:`~gapviz.hosting.MAX_REDIRECTS`). In hosted
  mode (:mod:`gapviz.hosting`) URLs resolving to private or loopback addresses are refused, the
  address actually connected to is checked too, and the hosted size and time limits apply.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

from .. import hosting
from .defaults import (DOWNLOAD_BACKOFF, DOWNLOAD_DEADLINE, DOWNLOAD_RETRIES, DOWNLOAD_TIMEOUT,
                       DOWNLOAD_WORKERS, FILE_DEADLINE, MAX_DOWNLOAD_BYTES, USER_AGENT)
from .pairs import Progress

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent runs there are not protected
    fcntl = None  # type: ignore[assignment]

CHUNK = 64 * 1024


class DownloadError(OSError):
    """A URL that could not be fetched. ``reason`` is short and report-ready (``"HTTP 404"``);
    ``permanent`` is True when retrying cannot help (a 4xx answer, a file over the size limit)."""

    def __init__(self, url: str, reason: str, permanent: bool = False, remember: bool = True) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.permanent = permanent
        #: Whether a permanent failure is remembered in ``<file>.dead`` (not for refusals,
        #: which depend on the mode, not on the URL).
        self.remember = remember


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to http(s) URLs (and, hosted, to public addresses only)."""

    max_redirections = hosting.MAX_REDIRECTS

    def __init__(self, hosted_mode: bool) -> None:
        super().__init__()
        self.hosted_mode = hosted_mode

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri")
        if target:
            try:
                hosting.check_url(urljoin(req.full_url, target), hosted_mode=self.hosted_mode)
            except hosting.HostedRefusal as err:
                fp.close()
                raise hosting.HostedRefusal(str(err), f"redirect refused: {err.reason}") from None
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = hosting.guarded_create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = hosting.guarded_create_connection


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)


def build_opener(hosted_mode: bool) -> urllib.request.OpenerDirector:
    """A urllib opener with gapviz's redirect policy; hosted, one that connects only to public
    addresses and ignores proxy settings (a proxy would hide the address connected to)."""
    handlers: list[Any] = [_RedirectPolicy(hosted_mode)]
    if hosted_mode:
        handlers += [urllib.request.ProxyHandler({}), _GuardedHTTPHandler(), _GuardedHTTPSHandler()]
    return urllib.request.build_opener(*handlers)


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
    max_bytes : int, optional
        Larger responses are abandoned (and the URL marked dead). Default: 50 MiB, or the
        hosted limit in hosted mode.
    deadline : float, optional
        Seconds one URL may take in all, attempts and back-off included. Default: 120, or the
        hosted limit in hosted mode.
    total_seconds : float, optional
        Seconds all fetches of this downloader may take together; later URLs fail at once.
        Default: no limit, or the hosted limit in hosted mode.
    retry_dead : bool
        Ask again for URLs that failed permanently on an earlier run.
    progress : callable, optional
        ``progress(done, total, "downloading")`` after each URL of a batch.
    hosted_mode : bool, optional
        Apply hosted mode's address checks and limits; default :func:`gapviz.hosting.hosted`.
    """

    folder: str | os.PathLike
    workers: int = DOWNLOAD_WORKERS
    timeout: float = DOWNLOAD_TIMEOUT
    retries: int = DOWNLOAD_RETRIES
    backoff: float = DOWNLOAD_BACKOFF
    max_bytes: int | None = None
    deadline: float | None = None
    total_seconds: float | None = None
    retry_dead: bool = False
    progress: Progress | None = None
    hosted_mode: bool | None = None
    _started: float | None = field(default=None, init=False, repr=False)
    _start_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.hosted_mode = hosting.hosted(self.hosted_mode)
        limits = hosting.limits() if self.hosted_mode else None
        if self.max_bytes is None:
            self.max_bytes = limits.max_download_bytes if limits else MAX_DOWNLOAD_BYTES
        if self.deadline is None:
            self.deadline = limits.download_seconds if limits else DOWNLOAD_DEADLINE
        if self.total_seconds is None and limits:
            self.total_seconds = limits.total_download_seconds
        self._opener = build_opener(self.hosted_mode)

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
        try:
            hosting.check_url(url, hosted_mode=self.hosted_mode)
        except hosting.HostedRefusal as err:
            raise DownloadError(url, err.reason, permanent=True) from None
        dest = Path(dest) if dest is not None else url_cache_path(url, self.folder)
        if dest.is_file():
            _touch(dest)
            return dest
        end = time.monotonic() + float(self.deadline or DOWNLOAD_DEADLINE)
        if self.total_seconds is not None:
            with self._start_lock:
                if self._started is None:
                    self._started = time.monotonic()
            budget_end = self._started + self.total_seconds
            if time.monotonic() >= budget_end:
                raise DownloadError(url, f"total download time limit ({self.total_seconds:g} s) "
                                    "reached")
            end = min(end, budget_end)
        dead = dest.with_name(dest.name + ".dead")
        if dead.is_file() and not self.retry_dead:
            raise DownloadError(url, dead.read_text(encoding="utf-8", errors="replace").strip() or
                                "failed before", permanent=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(dest.with_name(dest.name + ".lock"), url, end):
            if dest.is_file():  # another process fetched it while we waited
                return dest
            return self._fetch_locked(url, dest, dead, end, on_bytes)

    def _fetch_locked(self, url: str, dest: Path, dead: Path, end: float,
                      on_bytes: Callable[[int, int], None] | None) -> Path:
        part = dest.with_name(dest.name + ".part")
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                self._get(url, part, on_bytes, end)
                os.replace(part, dest)
                return dest
            except DownloadError as err:
                out_of_time = time.monotonic() + delay >= end
                if err.permanent or attempt == self.retries or out_of_time:
                    if err.permanent and err.remember:
                        dead.write_text(err.reason, encoding="utf-8")
                    if err.permanent:
                        part.unlink(missing_ok=True)
                    if out_of_time and not err.permanent and attempt < self.retries:
                        raise DownloadError(url, f"{err.reason}; gave up at the {self.deadline:g} s "
                                            "time limit") from None
                    raise
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _get(self, url: str, part: Path, on_bytes: Callable[[int, int], None] | None,
             end: float) -> None:
        """One attempt: GET ``url`` into ``part``, resuming from what ``part`` already holds."""
        have = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        assert self.max_bytes is not None
        timeout = max(0.05, min(self.timeout, end - time.monotonic()))
        try:  # urllib's errors (HTTPError, URLError) are OSErrors too: they are caught first
            with self._opener.open(request, timeout=timeout) as response:
                if have and response.status != 206:
                    have = 0  # the server ignored the range: start again
                length = response.headers.get("Content-Length")
                expected = have + int(length) if length and length.isdigit() else 0
                if expected > self.max_bytes:
                    raise DownloadError(url, f"larger than {self.max_bytes:,} bytes", permanent=True)
                received = have
                with open(part, "ab" if have else "wb") as out:
                    while chunk := response.read(CHUNK):
                        if time.monotonic() > end:
                            raise DownloadError(url, f"took longer than the {self.deadline:g} s "
                                                "time limit")
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
        except hosting.HostedRefusal as err:  # a redirect, or the address connected to
            raise DownloadError(url, err.reason, permanent=True, remember=False) from None
        except DownloadError:
            raise
        except OSError as err:  # writing the .part file: a full disk, a read-only cache
            raise DownloadError(url, f"cannot write the download here ({err.strerror or err})",
                                permanent=True, remember=False) from None


def _touch(path: Path) -> None:
    """Mark a cached file as recently used (the cache evicts least recently used first)."""
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves its files
        pass


@contextmanager
def _file_lock(path: Path, url: str, end: float) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) until ``end``.

    Other processes (and threads: each opens its own descriptor) wait their turn; one still
    waiting at ``end`` gives up with a :class:`DownloadError`.
    """
    if fcntl is None:
        yield
        return
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise DownloadError(url, "another download of this URL is still running; "
                                        "try again later") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: Largest single file :func:`fetch_file` accepts (annotation archives run to hundreds of MB).
MAX_FILE_BYTES = 50 * 1024**3


def fetch_file(url: str, folder: str | os.PathLike, *, name: str | None = None,
               progress: Progress | None = None, **settings: Any) -> Path:
    """Download one (possibly large) file such as an annotation listing, with byte progress.

    Cached as ``folder/<url hash>/<name>`` where ``name`` defaults to the URL's last path
    part, so the file keeps a recognisable name and extension (see :func:`download_name`).
    """
    name = download_name(name or urlparse(url).path)
    dest = url_cache_path(url, folder) / name
    settings.setdefault("max_bytes", MAX_FILE_BYTES)
    settings.setdefault("deadline", FILE_DEADLINE)
    downloader = Downloader(folder, **settings)
    stage = f"downloading {name}"
    on_bytes = (lambda got, total: progress(got, total, stage)) if progress else None
    return downloader.fetch(url, dest, on_bytes=on_bytes)


def safe_file_name(name: str, default: str = "download") -> str:
    """``name``'s last part as a file name any file system takes.

    ``..``, ``.`` and empty names give ``default``; separators and control characters become
    ``_``; names over 100 bytes are cut, keeping the extension.
    """
    last = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    last = re.sub(r"[\x00-\x1f\x7f/\\:*?\"<>|]", "_", last).strip(" .")
    if not last:
        return default
    if len(last.encode("utf-8", "surrogateescape")) > 100:
        stem, dot, ext = last.rpartition(".")
        ext = ext[:12] if dot and stem else ""
        stem = (stem if ext else last).encode("utf-8", "surrogateescape")[:80].decode("utf-8", "ignore")
        last = f"{stem}.{ext}" if ext else stem
    return last


def download_name(path: str) -> str:
    """A safe local file name from a URL path's last part (percent-decoded), e.g.
    ``"/a/captions.json"`` -> ``"captions.json"``, ``"/a/.."`` or ``"/a/%2e%2e"`` -> ``"download"``."""
    return safe_file_name(unquote(path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]))
