"""Embedding image-caption pairs with an open_clip model.

Three steps, kept apart so the app can hold a loaded model across runs:

1. :class:`ModelSpec` names the model: an open_clip architecture (``ViT-B-32``, a model config
   ``.json`` file of one's own, or ``hf-hub:org/repo``, ``local-dir:/path``) and its weights:
   a pretrained tag (``openai``), a local checkpoint file, or ``none`` for random weights
   (seeded, so reproducible; random encoders already show a cone-effect gap, Liang et al.
   2022). Its :meth:`~ModelSpec.identity` keys the cache without importing torch.
2. :func:`load_model` builds it on the best device (CUDA, Apple MPS, else CPU). When weights
   must be downloaded and cannot be, it fails fast with a message saying which model, where
   open_clip looks, and how to point gapviz at a local checkpoint.
3. :func:`embed_pairs` embeds pairs in batches (with a progress callback) into L2-normalised
   float32 rows, through the disk cache when one is given: the same data and model a second
   time costs only hashing. Only a complete result is cached (never one missing pairs that
   failed mid-run), and a cache that cannot be written is a warning, not a failure. Decoding
   overlaps the model, and the precision (``auto`` picks bf16 on CPUs with native bf16, mixed
   precision on GPUs) checks itself against fp32 on a sample: see :mod:`gapviz.embed_pipeline`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .cache import EmbeddingCache, describe_os_error
from .data.defaults import MAX_IMAGE_PIXELS
from .data.images import IMAGE_PIPELINE
from .data.pairs import Pair, Progress, with_groups
from .embed_pipeline import (CHECK_SAMPLE, CHECK_THRESHOLD, PRECISIONS, PrecisionCheck,
                             PrecisionError, embed_stream, resolve_precision)
from .embeddings import PairedEmbeddings

__all__ = ["KNOWN_MODELS", "PRECISIONS", "EmbedResult", "LoadedModel", "ModelChoice",
           "ModelLoadError", "ModelSpec", "PrecisionCheck", "PrecisionError", "cache_identity",
           "embed_images", "embed_pairs", "embed_texts", "load_model",
           "pick_device", "resolve_precision"]

RANDOM_WEIGHTS = ("none", "random")


@dataclass(frozen=True)
class ModelChoice:
    """A well-known model offered by name in the CLI and the app."""

    name: str
    pretrained: str
    label: str


#: Short list of well-known choices; any other open_clip name and tag works too. The OpenAI
#: CLIP weights were trained with QuickGELU, hence the ``-quickgelu`` architectures.
KNOWN_MODELS: tuple[ModelChoice, ...] = (
    ModelChoice("ViT-B-32-quickgelu", "openai", "CLIP ViT-B/32 (OpenAI), as in the paper"),
    ModelChoice("ViT-L-14-quickgelu", "openai", "CLIP ViT-L/14 (OpenAI), as in the paper"),
    ModelChoice("ViT-B-16-SigLIP", "webli", "SigLIP ViT-B/16 (Google; tokenizer needs `transformers`)"),
    ModelChoice("MobileCLIP-S1", "datacompdr", "MobileCLIP-S1 (Apple), small and fast on CPU"),
)

DEFAULT_IMAGE_BATCH = 32
DEFAULT_TEXT_BATCH = 64
#: Seconds allowed to reach the weights' host before declaring the machine offline.
PROBE_TIMEOUT = 3.0


class ModelLoadError(RuntimeError):
    """A model that cannot be built or whose weights cannot be had; the message says what to do
    on the command line (its flags), ``in_app`` the same with the app's Data page controls."""

    def __init__(self, message: str, in_app: str | None = None) -> None:
        super().__init__(message)
        self.in_app = in_app or message


@dataclass(frozen=True)
class ModelSpec:
    """Which model and weights to embed with.

    Parameters
    ----------
    name : str
        open_clip architecture (``ViT-B-32``; ``ViT-B/32`` is accepted), the path of a model
        config ``.json`` (open_clip's format: ``embed_dim``, ``vision_cfg``, ``text_cfg``; the
        architecture of a checkpoint trained from a config of one's own; it is registered with
        open_clip under its file stem, which then names that architecture in this process), or
        ``hf-hub:org/repo`` or ``local-dir:/path`` (then ``pretrained`` is ignored, as in
        open_clip).
    pretrained : str or None
        A pretrained tag (``openai``, ``webli``, ...), a local checkpoint file, or None /
        ``"none"`` for random weights.
    seed : int
        Seed of the random weights (ignored otherwise).
    tokenizer : str, optional
        A local folder holding a Hugging Face tokenizer (``tokenizer.json``, ...), for models
        whose tokenizer comes from the hub (SigLIP's) on a machine that cannot reach it.
    """

    name: str
    pretrained: str | None = None
    seed: int = 0
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        tag = self.pretrained
        if tag is not None and (not str(tag).strip() or str(tag).strip().lower() in RANDOM_WEIGHTS):
            tag = None
        object.__setattr__(self, "pretrained", None if tag is None else str(tag).strip())
        object.__setattr__(self, "name", str(self.name).strip())
        if self.tokenizer is not None:
            object.__setattr__(self, "tokenizer", str(Path(self.tokenizer).expanduser()))

    @property
    def has_schema(self) -> bool:
        return self.name.startswith(("hf-hub:", "local-dir:"))

    @property
    def config_file(self) -> Path | None:
        """The model config ``.json`` named by ``name``, if it names an existing one."""
        if self.has_schema or not self.name.lower().endswith(".json"):
            return None
        path = Path(self.name).expanduser()
        return path if path.is_file() else None

    @property
    def architecture(self) -> str:
        """The open_clip name of the architecture. A config file is registered as its stem
        and the start of its content hash, so that no file replaces a built-in architecture
        or another file of the same name within the process."""
        config = self.config_file
        return _config_name(config) if config is not None else self.name

    @property
    def random_weights(self) -> bool:
        return self.pretrained is None and not self.has_schema

    @property
    def checkpoint(self) -> Path | None:
        """The local checkpoint file named by ``pretrained``, if it names one."""
        if self.pretrained is None or self.has_schema:
            return None
        path = Path(self.pretrained).expanduser()
        return path if path.is_file() else None

    def label(self) -> str:
        """How the model is named in files and reports."""
        if self.has_schema:
            return self.name
        if self.random_weights:
            return f"{self.architecture} (random weights, seed {self.seed})"
        arch = self.config_file.stem if self.config_file is not None else self.architecture
        if self.checkpoint is not None:
            return f"{arch} ({self.checkpoint.name})"
        return f"{arch} ({self.pretrained})"

    def identity(self) -> dict[str, Any]:
        """What determines this model's output, for cache keys; imports no torch.

        A checkpoint file counts by path, size and modification time (hashing gigabytes of
        weights on every run would cost more than it saves).
        """
        out: dict[str, Any] = {"name": self.name.replace("/", "-"), "open_clip": _open_clip_version(),
                               "image_pipeline": IMAGE_PIPELINE}
        config = self.config_file
        if config is not None:  # a config counts by content: the same file moved still hits
            out["name"] = config.stem
            out["config"] = hashlib.sha256(config.read_bytes()).hexdigest()
        ckpt = self.checkpoint
        if self.name.startswith("local-dir:"):
            folder = Path(self.name.split(":", 1)[1]).expanduser()
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            out["weights"] = [f"{f.name} {f.stat().st_size} {f.stat().st_mtime_ns}" for f in files
                              if f.is_file()]
        elif self.has_schema:
            out["weights"] = self.name  # the hub repo's default revision
        elif self.random_weights:
            out["weights"] = f"random seed {self.seed}"
            out["torch"] = _version("torch")  # random init can change between torch versions
        elif ckpt is not None:
            st = ckpt.stat()
            out["weights"] = f"file {ckpt.resolve()} {st.st_size} {st.st_mtime_ns}"
        else:
            out["weights"] = self.pretrained
        if self.tokenizer is not None:
            folder = Path(self.tokenizer)
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            out["tokenizer"] = [f"{f.name} {f.stat().st_size} {f.stat().st_mtime_ns}" for f in files
                                if f.is_file()]
        return out


@dataclass
class LoadedModel:
    """A built model with its image transform and tokenizer, on ``device``."""

    spec: ModelSpec
    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[list[str]], Any]
    device: str
    #: Reduced-precision copies of ``model`` made for CPU runs, by dtype name (see
    #: :class:`gapviz.embed_pipeline.Encoder`).
    casts: dict[str, Any] = field(default_factory=dict, repr=False)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _open_clip_version() -> str:
    return _version("open_clip_torch")


def pick_device(preferred: str | None = None) -> str:
    """``preferred`` if given, else ``"cuda"`` when available, else ``"mps"`` (Apple), else ``"cpu"``."""
    import torch

    if preferred:
        if preferred.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"device '{preferred}' asked for but CUDA is not available here; "
                                 "leave --device out to pick automatically.")
        return preferred
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def load_model(spec: ModelSpec | str, pretrained: str | None = None, *, device: str | None = None,
               weights_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Build the model of ``spec`` (or of ``spec`` as a name with ``pretrained``) for inference.

    Parameters
    ----------
    spec : ModelSpec or str
    pretrained : str, optional
        Used when ``spec`` is a name.
    device : str, optional
        Default: :func:`pick_device`.
    weights_dir : path, optional
        Where open_clip downloads weights (default: its own, the Hugging Face cache).

    Raises
    ------
    ModelLoadError
        Unknown name or tag, unreachable weights, a checkpoint that does not fit.
    """
    import open_clip
    import torch

    if isinstance(spec, str):
        spec = ModelSpec(spec, pretrained)
    device = pick_device(device)
    if spec.name.lower().endswith(".json") and not spec.has_schema:
        if spec.config_file is None:
            raise ModelLoadError(f"model config file '{spec.name}' not found; give the path of an "
                                 "open_clip model config .json (embed_dim, vision_cfg, text_cfg).")
        _register_config(spec.config_file)
    name = spec.name if spec.has_schema else spec.architecture.replace("/", "-")
    kwargs: dict[str, Any] = {"device": device, "cache_dir": str(weights_dir) if weights_dir else None}
    if not spec.has_schema:
        if name not in open_clip.list_models():
            close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ModelLoadError(
                f"unknown open_clip model '{spec.name}'.{hint} See the names with "
                "`python -c \"import open_clip; print(open_clip.list_models())\"`, or give "
                "'hf-hub:org/repo' or 'local-dir:/path'.")
        pretrained_arg, extra = _resolve_weights(spec, name, weights_dir)
        kwargs.update(extra)
    else:
        pretrained_arg = None
    try:
        # The tokenizer first: it is cheap, and a missing package should not cost a download.
        tokenizer = _load_tokenizer(spec, name, weights_dir)
        # Random weights are seeded so that "none" names one reproducible model (the cache key
        # relies on it); fork_rng leaves the caller's random state as it was.
        with torch.random.fork_rng(devices=[]), _no_random_init_warning(spec):
            torch.manual_seed(spec.seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained_arg, **kwargs)
    except ModelLoadError:
        raise
    except ImportError as err:
        raise ModelLoadError(f"model '{spec.name}' needs a package that is not installed ({err}); "
                             "install it, or pick another model.") from None
    except Exception as err:  # open_clip raises RuntimeError, ValueError, OSError, KeyError...
        raise ModelLoadError(_load_failure_message(spec, err),
                             _load_failure_message(spec, err, in_app=True)) from None
    model.eval()
    return LoadedModel(spec, model, preprocess, tokenizer, device)


def _config_name(path: Path) -> str:
    """The name a model config file is registered under: its stem and 8 hex digits of its
    content's SHA-256."""
    return f"{path.stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"


def _register_config(path: Path) -> None:
    """Make open_clip know the architecture of the config file ``path``, under
    :func:`_config_name` (never replacing another architecture)."""
    import json
    import tempfile

    import open_clip

    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelLoadError(f"cannot read model config {path}: {err}") from None
    if not (isinstance(cfg, dict) and all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg"))):
        raise ModelLoadError(f"{path} is not an open_clip model config: it needs the keys "
                             "embed_dim, vision_cfg and text_cfg.")
    name = _config_name(path)
    if open_clip.get_model_config(name) != cfg:
        with tempfile.TemporaryDirectory() as folder:  # open_clip registers a file by its stem
            copy = Path(folder) / f"{name}.json"
            copy.write_text(json.dumps(cfg), encoding="utf-8")
            open_clip.add_model_config(copy)


def _hf_tokenizer_config(spec: ModelSpec, name: str) -> tuple[str, dict[str, Any]]:
    """The Hugging Face tokenizer a model's config names ('' if it uses open_clip's own) and
    its text config."""
    import open_clip

    if spec.has_schema:
        return "", {}
    text_cfg = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
    return text_cfg.get("hf_tokenizer_name", "") or "", text_cfg


def _load_tokenizer(spec: ModelSpec, name: str, weights_dir: str | os.PathLike | None) -> Any:
    """open_clip's tokenizer for ``name``; for tokenizers from the Hugging Face hub (SigLIP's),
    the local folder ``spec.tokenizer`` or the cached copy, and a clear error when neither
    exists and the hub cannot be reached."""
    import open_clip

    repo, text_cfg = _hf_tokenizer_config(spec, name)
    if not repo and spec.tokenizer is None:
        return open_clip.get_tokenizer(name)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ModelLoadError(
            f"model '{spec.name}' needs the `transformers` package for its tokenizer "
            f"({repo or spec.tokenizer}); install it with `pip install transformers` (it is in "
            "requirements.txt), or pick another model.") from None
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    context = text_cfg.get("context_length")
    if spec.tokenizer is not None:
        folder = Path(spec.tokenizer)
        if not folder.is_dir():
            raise ModelLoadError(f"tokenizer folder '{folder}' not found; give a folder written by "
                                 "a Hugging Face tokenizer's save_pretrained (tokenizer.json, "
                                 "tokenizer_config.json).")
        from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

        return HFTokenizer(str(folder), context_length=context or DEFAULT_CONTEXT_LENGTH, **kwargs)
    if _tokenizer_cached(repo, weights_dir):
        return open_clip.get_tokenizer(name, cache_dir=weights_dir, local_files_only=True)
    host = _weights_host({"hf_hub": repo})
    if not _reachable(host):
        raise ModelLoadError(_tokenizer_offline_message(spec, repo, host),
                             _tokenizer_offline_message(spec, repo, host, in_app=True))
    return open_clip.get_tokenizer(name, cache_dir=weights_dir)


def _tokenizer_cached(repo: str, weights_dir: str | os.PathLike | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo, "tokenizer_config.json", cache_dir=weights_dir)
    return isinstance(found, str) and os.path.isfile(found)


def _tokenizer_offline_message(spec: ModelSpec, repo: str, host: str, *,
                               in_app: bool = False) -> str:
    give = ("give the folder as *Tokenizer folder* on the Data page" if in_app else
            "pass it: `gapviz embed ... --tokenizer DIR`, or ModelSpec(..., tokenizer='DIR')")
    return (
        f"cannot get the tokenizer of model {spec.name}: it comes from the Hugging Face hub "
        f"(repo {repo}), {host} cannot be reached (offline?) and no copy is in the Hugging Face "
        f"cache. On a connected machine run `hf download {repo}` (or "
        f"`huggingface-cli download {repo}`) and copy the cache (~/.cache/huggingface, or set "
        "HF_HOME), or save the tokenizer to a folder (`transformers.AutoTokenizer.from_pretrained"
        f"('{repo}').save_pretrained('DIR')`) and {give}.")


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _no_random_init_warning(spec: ModelSpec) -> Iterator[None]:
    """Silence open_clip's "initialized randomly" warning when random weights were asked for."""
    if not spec.random_weights:
        yield
        return
    root = logging.getLogger()
    quiet = _DropRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _resolve_weights(spec: ModelSpec, name: str,
                     weights_dir: str | os.PathLike | None) -> tuple[str | None, dict[str, Any]]:
    """What to pass open_clip as ``pretrained``, and extra keyword arguments.

    For a tag, a copy already on disk is used directly (open_clip would otherwise ask the hub
    first and, offline, retry for a long time); when none is, the host is probed for a few
    seconds so that an offline machine gets :class:`ModelLoadError` at once.
    """
    import open_clip

    if spec.random_weights:
        return None, {}
    if spec.checkpoint is not None:
        return str(spec.checkpoint), {}
    assert spec.pretrained is not None
    if any(sep in spec.pretrained for sep in ("/", os.sep)) or spec.pretrained.endswith(
            (".pt", ".pth", ".bin", ".safetensors", ".npz")):
        raise ModelLoadError(f"checkpoint file '{spec.pretrained}' not found; give the path of an "
                             "existing open_clip checkpoint (.pt, .bin, .safetensors).")
    cfg = open_clip.get_pretrained_cfg(name, spec.pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelLoadError(
            f"'{spec.pretrained}' is not a pretrained tag of {name}; its tags are "
            f"{', '.join(tags) or '(none)'}. Or give a checkpoint file, or 'none' for random weights.")
    extra: dict[str, Any] = {}
    model_cfg = open_clip.get_model_config(name) or {}
    if cfg.get("quick_gelu") and not model_cfg.get("quick_gelu"):
        # These weights were trained with QuickGELU; building the plain-GELU variant would
        # silently change every embedding.
        extra["force_quick_gelu"] = True
    local = _local_weights(cfg, weights_dir)
    if local is not None:
        preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        if preprocess:
            extra["image_mean"] = preprocess.get("mean")
            extra["image_std"] = preprocess.get("std")
            extra["image_interpolation"] = preprocess.get("interpolation")
            extra["image_resize_mode"] = preprocess.get("resize_mode")
        return str(local), extra
    host = _weights_host(cfg)
    if host and not _reachable(host):
        raise ModelLoadError(_offline_message(spec, name, cfg, host),
                             _offline_message(spec, name, cfg, host, in_app=True))
    return spec.pretrained, extra


def _local_weights(cfg: dict[str, Any], weights_dir: str | os.PathLike | None) -> Path | None:
    """A complete copy of a tag's weights already on disk (HF cache or open_clip's URL cache)."""
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            # open_clip's convention: "org/repo/" means the repo's default weights file,
            # "org/repo/file.bin" names the file.
            repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
            names = [filename] if filename else ["open_clip_model.safetensors",
                                                 "open_clip_pytorch_model.bin"]
            for fname in names:
                found = try_to_load_from_cache(repo, fname, cache_dir=weights_dir)
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
    url = cfg.get("url", "")
    if url:
        candidate = Path(weights_dir or "~/.cache/clip").expanduser() / os.path.basename(url)
        if candidate.is_file():
            return candidate
    return None


def _weights_host(cfg: dict[str, Any]) -> str:
    if cfg.get("hf_hub"):
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return urlparse(endpoint).hostname or "huggingface.co"
    return urlparse(cfg.get("url", "")).hostname or ""


def _reachable(host: str, port: int = 443) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _where_open_clip_looks(cfg: dict[str, Any]) -> str:
    hub = cfg.get("hf_hub", "").rstrip("/")
    places = []
    if hub:
        hf_home = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
        places.append(f"the Hugging Face cache {hf_home} (repo {hub}; set HF_HOME or HF_HUB_CACHE "
                      "to move it)")
    if cfg.get("url"):
        places.append(f"~/.cache/clip/{os.path.basename(cfg['url'])} (downloaded from {cfg['url']})")
    return " and ".join(places) or "the locations open_clip's pretrained config names"


def _offline_message(spec: ModelSpec, name: str, cfg: dict[str, Any], host: str, *,
                     in_app: bool = False) -> str:
    hub = cfg.get("hf_hub", "").rstrip("/")
    fetch = f"https://huggingface.co/{hub}" if hub else cfg.get("url", "")
    if in_app:
        give = ("or, where the Data page offers *Another open_clip model…*, choose it with "
                f"architecture {name} and give the file's path as *Weights*. To try gapviz without "
                "weights: turn on *Random weights*.")
    else:
        give = (f"or pass its path: --model {name} --pretrained /path/to/open_clip_pytorch_model.bin "
                "(or open_clip_model.safetensors). To try gapviz without weights: --pretrained none "
                "(random weights).")
    return (
        f"cannot get the weights of model {name} (pretrained '{spec.pretrained}'): {host} cannot "
        f"be reached (offline?) and no copy is on disk. open_clip looks in {_where_open_clip_looks(cfg)}. "
        f"To work offline, download the checkpoint on a connected machine ({fetch}) and either copy "
        f"it there {give}")


def _load_failure_message(spec: ModelSpec, err: Exception, *, in_app: bool = False) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if spec.checkpoint is not None:
        return (f"cannot load checkpoint {spec.checkpoint} into {spec.name}: {text}. Check that the "
                "checkpoint was trained with this architecture ("
                + ("*open_clip architecture*" if in_app else "--model") + ").")
    if spec.has_schema:
        return f"cannot load {spec.name}: {text}"
    return f"cannot build {spec.label()}: {text}"


def embed_images(loaded: LoadedModel, paths: Sequence[str], *, batch_size: int = DEFAULT_IMAGE_BATCH,
                 workers: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
                 progress: Progress | None = None,
                 precision: str = "fp32") -> tuple[np.ndarray, dict[int, str]]:
    """L2-normalised image embeddings.

    ``workers`` threads (default: one per CPU core, at most 8) read, decode and transform the
    next batch's images while the model runs on the current one; Pillow and torchvision release
    the GIL for that work.

    Parameters
    ----------
    precision : {"fp32", "auto", "bf16", "fp16"}
        fp32 by default here (exact, batch-independent numbers); :func:`embed_pairs` defaults
        to ``auto`` with its self-check.

    Returns
    -------
    embeddings : ndarray of shape (N, d), float32
        Rows of images that failed are NaN.
    failures : dict of int to str
        Row -> skip reason, for images that could not be opened.
    """
    result = embed_stream(loaded, paths, [], precision=precision, image_batch=batch_size,
                          workers=workers, max_pixels=max_pixels, progress=progress)
    return result.images, result.failures


def embed_texts(loaded: LoadedModel, texts: Sequence[str], *, batch_size: int = DEFAULT_TEXT_BATCH,
                progress: Progress | None = None, precision: str = "fp32") -> np.ndarray:
    """L2-normalised text embeddings, ndarray of shape (N, d), float32.

    Captions are batched by token length, which lets CLIP-style text towers skip padding
    (see :func:`_encode_text`); the output is in input order. ``precision`` as in
    :func:`embed_images`.
    """
    result = embed_stream(loaded, [], texts, precision=precision, text_batch=batch_size,
                          progress=progress)
    return result.texts if len(texts) else np.empty((0, 0), dtype=np.float32)


def _last_token(tokens: Any) -> Any:
    """Index of the last non-padding token of each row (padding is token id 0)."""
    import torch

    positions = torch.arange(tokens.shape[1]).expand_as(tokens)
    return torch.where(tokens != 0, positions, torch.zeros_like(positions)).max(dim=1).values


def _encode_text(model: Any, tokens: Any) -> Any:
    """``model.encode_text(tokens)``, without the padding columns when that is exact.

    In open_clip's CLIP text tower (causal attention mask, features read at the end-of-text
    token), position j sees only positions <= j, so columns after the batch's last end-of-text
    token cannot change the output; dropping them makes captions of ~15 tokens several times
    cheaper than the full 77. Any other tower gets the plain call: SigLIP's, for one, attends
    without a mask and reads the last position, so its padding changes the output.
    """
    import open_clip
    import torch

    exact = (type(model) is open_clip.model.CLIP and getattr(model, "attn_mask", None) is not None
             and model.text_pool_type in ("argmax", "eos"))
    if not exact:
        return model.encode_text(tokens)
    end = int(_last_token(tokens).max()) + 1
    tokens = tokens[:, :end]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:end].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:end, :end])
    x = model.ln_final(x)
    x = open_clip.transformer.text_global_pool(x, tokens, model.text_pool_type,
                                               eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, torch.nn.Linear):
        x = model.text_projection(x)
    elif model.text_projection is not None:
        x = x @ model.text_projection
    return x


@dataclass
class EmbedResult:
    """What :func:`embed_pairs` produced.

    Attributes
    ----------
    embeddings : PairedEmbeddings
        One row per embedded pair; ``ids``, ``captions`` and ``image_paths`` filled in. Its
        ``meta`` records ``precision`` (what ran), ``precision_requested`` and
        ``precision_check`` (:meth:`PrecisionCheck.as_meta`, None for fp32).
    from_cache : bool
        True when the disk cache answered and no model ran.
    cache_key : str or None
    skipped : dict of str to list of str
        Reason -> ids of pairs whose image failed while embedding (rare: they passed the
        loader's checks, but a file can change in between).
    seconds : float
    precision_check : PrecisionCheck or None
        This run's self-check (None for fp32 runs and cache hits).
    notes : list of str
        What to tell the user: the self-check's outcome, a fallback to fp32, a result left
        out of the cache because some pairs failed.
    warnings : list of str
        What went wrong without stopping the run: the cache could not be written, or an image
        could not be read to make the cache key.
    """

    embeddings: PairedEmbeddings
    from_cache: bool = False
    cache_key: str | None = None
    skipped: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    precision_check: PrecisionCheck | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def cache_identity(spec: ModelSpec, precision: str = "auto", device: str | None = None) -> dict[str, Any]:
    """What keys :func:`embed_pairs`'s cache entry: the model's identity, plus the precision
    when it is not fp32 (so fp32 entries keep their key, and a bf16 run never answers a request
    for fp32)."""
    resolved = resolve_precision(precision, pick_device(device))
    identity = spec.identity()
    return identity if resolved == "fp32" else {**identity, "precision": resolved}


def embed_pairs(pairs: Sequence[Pair], model: ModelSpec | LoadedModel, *,
                cache: EmbeddingCache | None = None, device: str | None = None,
                image_batch: int | None = None, text_batch: int | None = None,
                workers: int | None = None, meta: dict[str, Any] | None = None,
                progress: Progress | None = None, precision: str = "auto",
                check_sample: int = CHECK_SAMPLE, check_threshold: float = CHECK_THRESHOLD) -> EmbedResult:
    """Embed ``pairs`` with ``model``, through ``cache`` when given.

    Images are read, decoded and preprocessed by worker threads while the model runs, and
    captions fill the model's time while an image batch is still decoding
    (:func:`gapviz.embed_pipeline.embed_stream`).

    Parameters
    ----------
    pairs : sequence of Pair
    model : ModelSpec or LoadedModel
        A spec is loaded only on a cache miss, so a hit costs no model load.
    cache : EmbeddingCache, optional
    image_batch, text_batch : int, optional
        Default: sized for the device (:func:`gapviz.embed_pipeline.default_batch_sizes`).
    meta : dict, optional
        Extra provenance for the output's ``meta`` (data source, sample size, ...).
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``auto``: bf16 on CPUs with native bf16, bf16/fp16 autocast on GPUs, else fp32. A
        reduced precision is checked against fp32 on ``check_sample`` images and captions;
        below ``check_threshold`` cosine the run falls back to fp32 (and says so in ``notes``).

    Returns
    -------
    EmbedResult
        Image and text rows L2-normalised, float32, shape (N_kept, d).

    Raises
    ------
    PrecisionError
        Unknown precision, or fp16 on a CPU.
    """
    started = time.perf_counter()
    spec = model.spec if isinstance(model, LoadedModel) else model
    device = model.device if isinstance(model, LoadedModel) else device
    requested = str(precision).strip().lower()
    resolve_precision(requested, pick_device(device))  # a bad precision fails before any work
    base_meta = {"simulated": False, "model_name": spec.name, "pretrained": spec.pretrained or "none",
                 "random_weights": spec.random_weights, "normalized": True, **(meta or {})}
    warnings: list[str] = []
    key = None
    if cache is not None:
        try:
            key = cache.key(pairs, cache_identity(spec, requested, device))
        except OSError as err:  # an image went away since it was loaded: embed, do not cache
            warnings.append(f"embeddings not cached: an image could not be read "
                            f"({describe_os_error(err)})")
    if key is not None:
        hit = cache.load(key, ids=[p.id for p in pairs])
        if hit is not None:
            result = _attach(hit, pairs, spec, base_meta)
            return EmbedResult(result, True, key, {}, time.perf_counter() - started)
    loaded = model if isinstance(model, LoadedModel) else load_model(spec, device=device)
    stream = embed_stream(loaded, [p.image_path for p in pairs], [p.caption for p in pairs],
                          precision=requested, image_batch=image_batch, text_batch=text_batch,
                          workers=workers, progress=progress, check_sample=check_sample,
                          threshold=check_threshold)
    failures = stream.failures
    keep = [i for i in range(len(pairs)) if i not in failures]
    skipped: dict[str, list[str]] = {}
    for i, reason in failures.items():
        skipped.setdefault(reason, []).append(pairs[i].id)
    kept_pairs = [pairs[i] for i in keep]
    images = stream.images if stream.images.shape[1] else np.full(
        (len(pairs), stream.texts.shape[1]), np.nan, np.float32)
    embeddings = PairedEmbeddings(
        images[keep], stream.texts[keep], [p.id for p in kept_pairs],
        [p.caption for p in kept_pairs], [p.image_path for p in kept_pairs], spec.label(),
        {**base_meta, "device": loaded.device, "precision": stream.precision,
         "precision_requested": requested,
         "precision_check": stream.check.as_meta() if stream.check is not None else None})
    embeddings = with_groups(embeddings, kept_pairs)
    notes = list(stream.notes)
    if key is not None and (skipped or embeddings.n != len(pairs)):
        # The key names every pair; a result missing some (an image that changed or vanished
        # mid-run, e.g. a cache cleared under it) must never answer for the whole set.
        notes.append(f"not cached: {len(pairs) - embeddings.n} of {len(pairs)} pairs failed while "
                     "embedding, so the next run embeds them again")
    elif key is not None:
        try:
            cache.save(key, embeddings)
        except OSError as err:  # a full or read-only cache: the result is still returned
            warnings.append(f"embeddings not cached: {err}")
    return EmbedResult(embeddings, False, key, skipped, time.perf_counter() - started,
                       stream.check, notes, warnings)


def _attach(cached: PairedEmbeddings, pairs: Sequence[Pair], spec: ModelSpec,
            meta: dict[str, Any]) -> PairedEmbeddings:
    """A cache entry with this run's captions, paths and metadata (the key and the entry's check
    on reading guarantee the ids and captions match; image paths may differ when the same bytes
    moved)."""
    by_id = {p.id: p for p in pairs}
    rows = [by_id[i] for i in cached.ids or []]
    return with_groups(
        PairedEmbeddings(cached.image_embeddings, cached.text_embeddings, [p.id for p in rows],
                         [p.caption for p in rows], [p.image_path for p in rows], spec.label(),
                         {**cached.meta, **meta}), rows)


def embed_loaded_pairs(pairs: list[Any], report: Any, model: Any, *, cache: Any = None,
                       meta: dict[str, Any] | None = None,
                       progress: Callable[[int, int, str], None] | None = None) -> tuple[Any, Any]:
    """Embed loaded pairs and fold the embedding step's skips into the loader's report.

    Parameters
    ----------
    pairs : list of gapviz.data.Pair
        What a loader kept.
    report : gapviz.data.DataReport
        The loader's report; updated in place (images that failed while embedding are
        subtracted from the kept count and named in a warning).
    model : gapviz.encode.ModelSpec or LoadedModel
    cache : gapviz.cache.EmbeddingCache, optional

    Returns
    -------
    (PairedEmbeddings, DataReport)

    Raises
    ------
    gapviz.data.DataError
        Fewer than 2 pairs left to embed.
    """
    from .data import DataError

    if len(pairs) < 2:
        detail = " ".join(line.strip() for line in report.lines()[1:])
        raise DataError(f"only {len(pairs)} usable pair(s) found, at least 2 are needed. "
                        f"{report.summary()}. {detail}".strip())
    result = embed_pairs(pairs, model, cache=cache, meta=meta, progress=progress)
    for reason, ids in result.skipped.items():
        report.n_kept -= len(ids)
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        report.warnings.append(f"{len(ids)} image(s) failed while embedding: {reason} ({shown})")
    if result.from_cache:
        report.notes.append("embeddings read from the cache (same images, captions and model)")
    report.notes.extend(getattr(result, "notes", None) or [])  # precision and its self-check
    report.warnings.extend(getattr(result, "warnings", None) or [])  # a cache it could not write
    if result.embeddings.n < 2:
        raise DataError("fewer than 2 pairs could be embedded; " + "; ".join(report.warnings))
    return result.embeddings, report
