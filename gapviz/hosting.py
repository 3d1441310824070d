"""Hosted mode: the app served to visitors, who must not be able to turn it against the server.

One setting turns it on: the environment variable ``GAPVIZ_HOSTED=1`` (or ``true``/``yes``/
``on``). The app may also pass its own setting (a Streamlit secret) to :func:`hosted`. When a
person runs gapviz on their own machine, nothing here applies. When hosted:

- **paths**: visitors only upload files; any server path they name is refused
  (:func:`check_server_path`), and an uploaded embeddings file's ``image_paths`` are shown only
  for images that came inside the upload itself (:func:`visible_image_path`,
  :func:`restrict_image_paths`);
- **URLs**: only ``http``/``https``; a URL whose host resolves to a private, loopback,
  link-local, multicast or reserved address is refused (:func:`check_url`), and the check is
  made again on the address actually connected to (so a DNS answer that changes between check
  and connection does not get through) and on every redirect;
- **models**: only the listed models with their listed weights (:func:`check_model`); no
  ``hf-hub:`` or ``local-dir:`` names, no checkpoint files on the server;
- **limits**: uploads, each download and the total download time are bounded
  (:func:`limits`, each overridable by an environment variable below).

Redirects to anything but ``http``/``https`` (``ftp://``, ``file://``) are refused in every
mode: the downloader has no use for them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

#: The setting that turns hosted mode on.
HOSTED_ENV = "GAPVIZ_HOSTED"
#: Overrides of the hosted limits (numbers; MiB and seconds).
MAX_UPLOAD_MB_ENV = "GAPVIZ_MAX_UPLOAD_MB"
MAX_DOWNLOAD_MB_ENV = "GAPVIZ_MAX_DOWNLOAD_MB"
DOWNLOAD_SECONDS_ENV = "GAPVIZ_DOWNLOAD_SECONDS"
TOTAL_DOWNLOAD_SECONDS_ENV = "GAPVIZ_TOTAL_DOWNLOAD_SECONDS"
MAX_POOL_PAIRS_ENV = "GAPVIZ_MAX_POOL_PAIRS"
#: The dimension at which ``max_pool_pairs`` is counted; at dimension d a hosted session
#: measures at most ``max_pool_pairs * sqrt(POOL_REFERENCE_DIM / d)`` pairs (the mixed-pool
#: measures and methods cost about N^2 d).
POOL_REFERENCE_DIM = 512

#: Redirects followed per URL (browsers allow about 20; images need 1 or 2).
MAX_REDIRECTS = 5
#: URL schemes fetched and followed in redirects.
URL_SCHEMES = ("http", "https")

_TRUE = ("1", "true", "yes", "on")


class HostedRefusal(ValueError):
    """Something gapviz will not fetch or read; the message says what to do instead.

    ``reason`` is short and report-ready ("loopback address 127.0.0.1 refused in a hosted demo").
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def hosted(setting: bool | str | None = None) -> bool:
    """Whether gapviz runs as a hosted demo.

    ``setting`` (e.g. the app's Streamlit secret) wins when given; else ``$GAPVIZ_HOSTED``.
    """
    if setting is None:
        setting = os.environ.get(HOSTED_ENV, "")
    if isinstance(setting, str):
        return setting.strip().lower() in _TRUE
    return bool(setting)


@dataclass(frozen=True)
class HostingLimits:
    """Size and time limits of a hosted demo.

    Attributes
    ----------
    max_upload_bytes : int
        All files of one upload together.
    max_download_bytes : int
        One downloaded file (an image, a listing).
    download_seconds : float
        Total time for one URL, all attempts and redirects included.
    total_download_seconds : float
        Total time of all downloads made for one load (a COCO sample, a CC sample).
    max_pool_pairs : int
        Pairs of dimension :data:`POOL_REFERENCE_DIM` a hosted session measures or closes
        (the mixed pool's cost grows as N^2 d; 10,000 pairs take seconds on 2 cores); the
        picture of a larger pool (Explore: PCA and a sample) is still drawn.
    """

    max_upload_bytes: int = 200 * 1024**2
    max_download_bytes: int = 50 * 1024**2
    download_seconds: float = 60.0
    total_download_seconds: float = 600.0
    max_pool_pairs: int = 10_000


def _env_number(name: str, default: float, unit: str) -> float:
    """The limit in ``$name`` by gapviz's one rule for limit variables (a positive finite
    number; see :func:`gapviz.data.defaults.env_limit`), refused as a :class:`HostedRefusal`."""
    from .data.defaults import LimitSettingError, env_limit  # the data package imports this module

    try:
        return env_limit(name, default, unit)
    except LimitSettingError as err:
        raise HostedRefusal(str(err)) from None


def limits() -> HostingLimits:
    """The hosted limits: :class:`HostingLimits` defaults, overridden by the environment."""
    base = HostingLimits()
    mib = 1024**2
    return HostingLimits(
        max_upload_bytes=int(_env_number(MAX_UPLOAD_MB_ENV, base.max_upload_bytes / mib, "MiB") * mib),
        max_download_bytes=int(_env_number(MAX_DOWNLOAD_MB_ENV, base.max_download_bytes / mib, "MiB")
                               * mib),
        download_seconds=_env_number(DOWNLOAD_SECONDS_ENV, base.download_seconds, "seconds"),
        total_download_seconds=_env_number(TOTAL_DOWNLOAD_SECONDS_ENV, base.total_download_seconds,
                                           "seconds"),
        max_pool_pairs=int(_env_number(MAX_POOL_PAIRS_ENV, base.max_pool_pairs, "pairs")),
    )


def check_pool_work(n_pairs: int, dim: int, *, hosted_mode: bool | None = None) -> None:
    """Refuse, in a hosted demo, measuring or closing a pool past the session's compute budget
    (:attr:`HostingLimits.max_pool_pairs`, scaled to the dimension): a :class:`HostedRefusal` saying how many pairs of
    this dimension fit and what to do. Nothing outside a hosted demo."""
    if not hosted(hosted_mode):
        return
    allowed = int(limits().max_pool_pairs * math.sqrt(POOL_REFERENCE_DIM / max(int(dim), 1)))
    if n_pairs > allowed:
        raise HostedRefusal(
            f"this hosted demo measures at most {allowed:,} pairs of dimension {dim} (the "
            f"mixed pool's measures and methods cost about N² d, and these data have "
            f"{n_pairs:,} pairs): upload a sample of them, or run gapviz on your own machine "
            "(pip install -r requirements.txt; no such limit there). Explore still shows the "
            "whole pool.", reason="past the hosted compute budget")


# ---------------------------------------------------------------------------------------------
# URLs and addresses
# ---------------------------------------------------------------------------------------------
def address_problem(address: str) -> str | None:
    """Why a visitor's URL may not reach the IP ``address``, or None when it may.

    Private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local (169.254/16, where
    cloud metadata services answer), multicast, reserved and unspecified addresses are refused;
    IPv4 addresses written as IPv6 (``::ffff:127.0.0.1``) are judged as IPv4.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"not an IP address ({address!r})"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("private", ip.is_private), ("multicast", ip.is_multicast),
                       ("reserved", ip.is_reserved), ("unspecified", ip.is_unspecified)):
        if flag:
            return f"{kind} address {ip}"
    if not ip.is_global:
        return f"non-public address {ip}"
    return None


def check_scheme(url: str) -> None:
    """Raise :class:`HostedRefusal` unless ``url`` is ``http`` or ``https`` with a host."""
    parts = urlparse(url)
    if parts.scheme.lower() not in URL_SCHEMES:
        scheme = parts.scheme or "a bare path"
        raise HostedRefusal(f"{url}: only http and https URLs are fetched (not {scheme!r}); give an "
                            "http(s) URL.", f"{scheme} URL refused (only http and https)")
    if not parts.hostname:
        raise HostedRefusal(f"{url}: the URL has no host; give a full http(s) URL.", "URL without a host")


def resolve(host: str, port: int | None = None) -> list[str]:
    """Every IP address ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port or 80, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


def check_url(url: str, *, hosted_mode: bool | None = None) -> None:
    """Raise :class:`HostedRefusal` if ``url`` may not be fetched.

    Always: the scheme must be ``http``/``https``. In hosted mode (``hosted_mode``, default
    :func:`hosted`) also: the host must resolve, and to public addresses only (see
    :func:`address_problem`), so a visitor cannot reach the server's own services or its network.
    """
    check_scheme(url)
    if not hosted(hosted_mode):
        return
    parts = urlparse(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise HostedRefusal(f"{url}: the port is not a number; fix the URL.", "bad port") from None
    addresses = resolve(host, port)
    if not addresses:
        raise HostedRefusal(f"{url}: host {host!r} does not resolve; check the URL.",
                            "host does not resolve")
    for address in addresses:
        problem = address_problem(address)
        if problem:
            raise HostedRefusal(f"{url}: refused in a hosted demo, {host!r} is a {problem}; "
                                "only public web addresses can be fetched.",
                                f"{problem} refused in a hosted demo")


def guarded_create_connection(address: tuple[str, int], timeout: float | object = socket._GLOBAL_DEFAULT_TIMEOUT,
                              source_address: tuple[str, int] | None = None) -> socket.socket:
    """``socket.create_connection`` that connects only to public addresses (hosted mode).

    The host is resolved here and every address is checked before it is connected to, so the
    address checked is the address used (no DNS rebinding between a check and the connection).
    """
    host, port = address[0], address[1]
    addresses = resolve(host, port)
    if not addresses:
        raise OSError(f"host {host!r} does not resolve")
    refused = [p for p in map(address_problem, addresses) if p]
    if refused:
        raise HostedRefusal(f"refused in a hosted demo: {host!r} is a {refused[0]}; only public web "
                            "addresses can be fetched.", f"{refused[0]} refused in a hosted demo")
    last: OSError | None = None
    for ip in addresses:
        try:
            return socket.create_connection((ip, port), timeout, source_address)  # type: ignore[arg-type]
        except OSError as err:
            last = err
    raise last or OSError(f"cannot connect to {host!r}")


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def check_model(name: str, pretrained: str | None, listed: Iterable[tuple[str, str]], *,
                hosted_mode: bool | None = None) -> None:
    """Raise :class:`HostedRefusal` if a visitor may not load model ``name`` with ``pretrained``.

    Outside hosted mode anything goes (open_clip names, ``hf-hub:``, checkpoint files). Hosted,
    only a ``(name, pretrained)`` pair of ``listed`` (e.g. ``(m.name, m.pretrained) for m in
    gapviz.encode.KNOWN_MODELS``) is allowed.
    """
    if not hosted(hosted_mode):
        return
    allowed = {(str(n), str(p)) for n, p in listed}
    if (str(name), str(pretrained)) not in allowed:
        choices = ", ".join(f"{n} ({p})" for n, p in sorted(allowed)) or "none"
        raise HostedRefusal(f"this hosted demo offers only its listed models: {choices}; "
                            "choose one of them.", "model not offered in this hosted demo")


# ---------------------------------------------------------------------------------------------
# server paths
# ---------------------------------------------------------------------------------------------
def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_server_path(path: str | os.PathLike, allowed_roots: Sequence[str | os.PathLike], *,
                      hosted_mode: bool | None = None) -> Path:
    """``path`` resolved, if a visitor may have it read; else :class:`HostedRefusal`.

    Outside hosted mode every path is allowed. In hosted mode only paths inside
    ``allowed_roots`` (the folders uploads are saved and extracted in, e.g.
    ``cache_root() / "uploads"``) are: a visitor uploads files and cannot name the server's.
    The message is the same whether or not the path exists.
    """
    resolved = Path(path).expanduser().resolve()
    if not hosted(hosted_mode):
        return resolved
    roots = [Path(r).expanduser().resolve() for r in allowed_roots]
    if not _inside(resolved, roots):
        raise HostedRefusal("a hosted demo reads only uploaded files, not paths on the server; "
                            "upload the files instead.")
    return resolved


def visible_image_path(path: str | os.PathLike | None, roots: Sequence[str | os.PathLike], *,
                       hosted_mode: bool | None = None) -> Path | None:
    """The image file at ``path`` if it may be shown to the user, else None.

    Outside hosted mode: the file, when it exists (a relative path is tried against each of
    ``roots``, then as given). In hosted mode: only a file inside one of ``roots`` (the folder an
    upload was saved or extracted to), after resolving ``..`` and symbolic links; an uploaded
    embeddings file that names ``/home/someone/private.jpg`` gets None, exactly as for a
    missing file, so nothing tells the visitor whether a server file exists.

    Parameters
    ----------
    path : path or None
        An ``image_paths`` entry (absolute, or relative to the upload's folder).
    roots : sequence of path
        Folders whose images may be shown; empty when the upload brought no images.
    """
    if path is None or str(path).strip() == "":
        return None
    raw = Path(str(path)).expanduser()
    root_paths = [Path(r).expanduser().resolve() for r in roots]
    candidates = [raw] if raw.is_absolute() else [r / raw for r in root_paths]
    if not raw.is_absolute() and not hosted(hosted_mode):
        candidates.append(raw)
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            continue
        if hosted(hosted_mode) and not _inside(resolved, root_paths):
            continue
        if resolved.is_file():
            return resolved
    return None


def restrict_image_paths(pairs: Any, roots: Sequence[str | os.PathLike], *,
                         hosted_mode: bool | None = None) -> Any:
    """``pairs`` (a :class:`~gapviz.embeddings.PairedEmbeddings`) with each ``image_paths`` entry
    replaced by :func:`visible_image_path` (``""`` where nothing may be shown).

    Call it once when an uploaded embeddings file is loaded: every later preview, thumbnail and
    report then sees only images that came with the upload. Outside hosted mode the paths are
    resolved the same way, so missing files become ``""`` there too. Pairs without image paths
    are returned as they are.
    """
    if not getattr(pairs, "image_paths", None):
        return pairs
    shown = [visible_image_path(p, roots, hosted_mode=hosted_mode) for p in pairs.image_paths]
    # replace() keeps every other field (ids, captions, labels, model, meta) as it is.
    return dataclasses.replace(pairs, image_paths=[str(p) if p is not None else "" for p in shown])
