"""Embedding pairs as fast as the device allows: precision, overlap, and a self-check.

Three pieces, used by :mod:`gapviz.encode`:

- :func:`resolve_precision` turns ``auto | fp32 | bf16 | fp16`` into what runs: bf16 on CPUs
  with native bf16 arithmetic (AVX-512 BF16, AMX, Arm BF16), where torch's bf16 matrix
  products run several times faster than fp32; bf16 (else fp16) autocast on CUDA GPUs;
  fp16 autocast on Apple MPS; fp32 otherwise.
- :class:`Encoder` runs one model at one precision: batches in, L2-normalised float32 rows
  out. On CPU a bf16 copy of the weights is made once and kept with the loaded model
  (autocast would convert every weight on every call), its patch embedding run as a matrix
  product (:func:`patches_as_products`); on GPUs the fp32 weights run under autocast.
- :func:`embed_stream` is the pipeline: worker threads read, decode and resize images
  straight into the next batches' buffers as uint8 pixels, and a lane normalises a whole
  batch at once (:class:`PixelSteps`; Pillow releases the GIL for decoding and resizing;
  on CUDA the buffers are in pinned memory, copied asynchronously) while model lanes run:
  on a CPU one lane per core, each running whole batches on one thread (no per-operation
  barrier across cores), on a GPU one. A lane takes the next image batch once it is decoded,
  a caption batch while it is not. Before a reduced-precision run the pipeline checks itself
  on a small sample against fp32 (:func:`check_precision`) and falls back to fp32 below
  :data:`CHECK_THRESHOLD`. Each image holds the shared decode budget for its decode and its
  resize together; one the resize would blow up (a thin strip) is skipped with its reason.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Queue
from typing import Any

import numpy as np

from .data.defaults import MAX_IMAGE_PIXELS
from .data.images import ImageError, open_rgb, reserve_for_model
from .data.pairs import Progress

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Below this cosine to the fp32 embedding (on any sampled row) a run falls back to fp32.
CHECK_THRESHOLD = 0.999
#: Images and captions embedded twice (fp32 and the run's precision) by the self-check.
CHECK_SAMPLE = 8
#: Batch sizes per device kind: (images, captions). On CPU, larger image batches gain little
#: (ViT-B-32 in bf16: 78 images/s at 32, 84 at 64) and delay the first results; GPUs need
#: large batches to fill their units.
BATCH_SIZES = {"cpu": (32, 64), "mps": (64, 128), "cuda": (256, 512)}

#: At most this many model lanes on a CPU (each runs whole batches on its share of the cores).
MAX_CPU_LANES = 4

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class PrecisionError(ValueError):
    """A precision that does not exist, or that this device cannot run usefully."""


# ------------------------------------------------------------------------------ precision

def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX-512 BF16 or AMX, Arm BF16).

    Without such units bf16 is not expected to be faster than fp32, so ``auto`` keeps fp32.
    """
    try:  # Linux names the flags in /proc/cpuinfo; elsewhere (macOS, Windows) assume none
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: str) -> str:
    """The precision a run on ``device`` uses for ``precision`` (``auto`` resolved).

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
    device : str
        ``cpu``, ``cuda``, ``cuda:1``, ``mps``.

    Raises
    ------
    PrecisionError
        Unknown precision, or fp16 on a CPU (torch's fp16 products there run at under 2% of
        fp32's rate: use bf16 or fp32).
    """
    import torch

    value = str(precision).strip().lower()
    if value not in PRECISIONS:
        raise PrecisionError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
    kind = device.split(":")[0]
    if kind == "cpu" and value == "fp16":
        raise PrecisionError("fp16 is for GPUs: torch's fp16 matrix products on a CPU run ~60x "
                             "slower than fp32 (measured on an AVX-512 machine). Use --precision "
                             "bf16 (fast on CPUs with native bf16) or fp32.")
    if value != "auto":
        return value
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "mps":
        return "fp16"
    if kind == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def default_batch_sizes(device: str) -> tuple[int, int]:
    """(image batch, caption batch) for ``device``; on CUDA, halved for GPUs under 16 GB."""
    kind = device.split(":")[0]
    images, texts = BATCH_SIZES.get(kind, BATCH_SIZES["cpu"])
    if kind == "cuda":
        import torch

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        if torch.cuda.get_device_properties(index).total_memory < 16 * 2**30:
            images, texts = images // 2, texts // 2
    return images, texts


class Encoder:
    """One loaded model at one precision: batches in, L2-normalised float32 rows out.

    Parameters
    ----------
    loaded : gapviz.encode.LoadedModel
    precision : {"fp32", "bf16", "fp16"}
        Already resolved (:func:`resolve_precision`).
    """

    def __init__(self, loaded: Any, precision: str) -> None:
        import torch

        if precision not in _DTYPES:
            raise PrecisionError(f"Encoder needs a resolved precision (fp32, bf16, fp16), got "
                                 f"'{precision}'.")
        self.loaded = loaded
        self.precision = precision
        self.device = loaded.device
        self.kind = self.device.split(":")[0]
        self.dtype = getattr(torch, _DTYPES[precision])
        self.autocast = precision != "fp32" and self.kind != "cpu"
        if precision == "fp32" or self.autocast:
            self.model = loaded.model
        else:
            self.model = _cpu_cast(loaded, self.dtype)
        #: The model's input dtype: fp32 batches are cast on the way in (a few ms a batch, and
        #: a fallback to fp32 can reuse batches already decoded).
        self.input_dtype = self.dtype if self.model is not loaded.model else torch.float32
        #: Pinned host buffers and asynchronous copies, on CUDA only.
        self.pin = self.kind == "cuda"

    def _context(self) -> Any:
        import contextlib

        import torch

        if self.autocast:
            return torch.autocast(self.kind, dtype=self.dtype)
        return contextlib.nullcontext()

    def images(self, batch: Any) -> np.ndarray:
        """Image rows of shape (B, d), float32, for a preprocessed batch (B, 3, H, W)."""
        import torch

        batch = batch.to(self.device, dtype=self.input_dtype, non_blocking=self.pin)
        with torch.inference_mode(), self._context():
            features = self.model.encode_image(batch)
        return _rows(features)

    def texts(self, tokens: Any) -> np.ndarray:
        """Caption rows of shape (B, d), float32, for token ids (B, context_length)."""
        import torch

        from .encode import _encode_text

        with torch.inference_mode(), self._context():
            features = _encode_text(self.model, tokens.to(self.device, non_blocking=self.pin))
        return _rows(features)


def _rows(features: Any) -> np.ndarray:
    import torch

    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _cpu_cast(loaded: Any, dtype: Any) -> Any:
    """A copy of the model's weights in ``dtype``, made once and kept with ``loaded``.

    The fp32 model stays as it is: it is the self-check's reference and the fallback. The copy
    costs half the fp32 weights' memory (bf16) for as long as the loaded model lives.
    """
    import copy

    key = str(dtype)
    if key not in loaded.casts:
        loaded.casts[key] = patches_as_products(copy.deepcopy(loaded.model).to(dtype).eval())
    return loaded.casts[key]


# ------------------------------------------------------------------------------ CPU kernels

def patches_as_products(model: Any) -> Any:
    """Run ``model``'s patch embeddings as matrix products, in place; returns ``model``.

    A convolution whose kernel equals its stride (a ViT's patch embedding: 32 x 32 pixels,
    stride 32, for ViT-B-32) runs in oneDNN's bf16 convolution at half the rate of the same
    arithmetic as one matrix product of the image's patches with the flattened kernel (batch of
    32 at 224 px, one core with AMX: 22 ms against 11 ms). Other convolutions are
    left as they are. For the CPU copy of the weights (:func:`_cpu_cast`) only: the fp32
    model, the self-check's reference, keeps torch's own convolution.
    """
    import functools

    import torch

    for module in model.modules():
        if (type(module) is torch.nn.Conv2d and module.kernel_size == module.stride
                and module.padding in (0, (0, 0)) and module.dilation == (1, 1)
                and module.groups == 1):
            module.forward = functools.partial(_patch_product, module)
    return model


def _patch_product(conv: Any, x: Any) -> Any:
    """``conv(x)`` for a convolution whose kernel equals its stride, as one matrix product.

    Each output position sees one patch of the input: (B, C, H, W) -> patches of shape
    (B * H/p * W/p, C * p * p) times the kernel flattened to (C * p * p, out). The result has
    ``conv``'s shape, (B, out, H/p, W/p), laid out channels-last (the view a ViT flattens next).
    """
    import torch

    b, c, h, w = x.shape
    ph, pw = conv.kernel_size
    gh, gw = h // ph, w // pw  # as the convolution: a remainder narrower than a patch is dropped
    patches = (x[:, :, :gh * ph, :gw * pw].reshape(b, c, gh, ph, gw, pw)
               .permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * ph * pw))
    out = torch.nn.functional.linear(patches, conv.weight.reshape(conv.out_channels, -1), conv.bias)
    return out.view(b, gh, gw, conv.out_channels).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ self-check

@dataclass(frozen=True)
class PrecisionCheck:
    """How close a reduced-precision run is to fp32, on a small sample of its own data.

    Cosines are between the run's and fp32's L2-normalised embeddings of the same rows.
    """

    requested: str
    tried: str
    n_images: int
    n_texts: int
    image_min: float
    image_mean: float
    text_min: float
    text_mean: float
    threshold: float = CHECK_THRESHOLD

    @property
    def min(self) -> float:
        return float(np.nanmin([self.image_min, self.text_min]))

    @property
    def mean(self) -> float:
        n = self.n_images + self.n_texts
        total = (self.image_mean * self.n_images if self.n_images else 0.0) + (
            self.text_mean * self.n_texts if self.n_texts else 0.0)
        return total / n if n else float("nan")

    @property
    def passed(self) -> bool:
        return bool(self.min >= self.threshold)

    @property
    def used(self) -> str:
        return self.tried if self.passed else "fp32"

    def summary(self) -> str:
        head = (f"precision {self.tried}: cosine to fp32 on {self.n_images} images and "
                f"{self.n_texts} captions: min {self.min:.5f}, mean {self.mean:.5f}")
        if self.passed:
            return f"{head} (>= {self.threshold}: kept)"
        return f"{head}, below {self.threshold}: fell back to fp32"

    def as_meta(self) -> dict[str, Any]:
        return {"requested": self.requested, "tried": self.tried, "used": self.used,
                "passed": self.passed, "threshold": self.threshold, "min_cosine": self.min,
                "mean_cosine": self.mean, "n_images": self.n_images, "n_texts": self.n_texts,
                "image_min_cosine": self.image_min, "image_mean_cosine": self.image_mean,
                "text_min_cosine": self.text_min, "text_mean_cosine": self.text_mean}


def check_precision(loaded: Any, precision: str, images: Any | None, tokens: Any | None, *,
                    requested: str | None = None, threshold: float = CHECK_THRESHOLD,
                    lanes: int = 1, lane_threads: int | None = None) -> PrecisionCheck:
    """Embed a sample at fp32 and at ``precision`` and compare them row by row.

    Parameters
    ----------
    loaded : gapviz.encode.LoadedModel
    precision : {"bf16", "fp16"}
    images : tensor of shape (k, 3, H, W), or None
        Preprocessed images.
    tokens : tensor of shape (m, context_length), or None
    lanes, lane_threads : int
        The sample's pieces run on ``lanes`` threads of ``lane_threads`` torch threads each
        (as the pipeline's model lanes do; the fp32 half costs most).
    """
    reference, trial = Encoder(loaded, "fp32"), Encoder(loaded, precision)
    has_images = images is not None and len(images) > 0
    has_texts = tokens is not None and len(tokens) > 0
    half = (len(images) + 1) // 2 if has_images else 0
    jobs: list[tuple[str, Callable[[], np.ndarray]]] = []
    if has_images:  # longest first: fp32 images, in two halves
        jobs += [("ref_images", lambda: reference.images(images[:half])),
                 ("ref_images", lambda: reference.images(images[half:])),
                 ("images", lambda: trial.images(images))]
    if has_texts:
        jobs += [("ref_texts", lambda: reference.texts(tokens)), ("texts", lambda: trial.texts(tokens))]
    threads = lane_threads or _current_torch_threads()
    with ThreadPoolExecutor(max_workers=max(1, lanes), thread_name_prefix="gapviz-check",
                            initializer=_torch_threads, initargs=(threads,)) as pool:
        done = list(pool.map(lambda job: (job[0], job[1]()), jobs))
    parts: dict[str, list[np.ndarray]] = {}
    for name, rows in done:
        parts.setdefault(name, []).append(rows)

    def stats(name: str) -> tuple[float, float]:
        if name not in parts:
            return float("nan"), float("nan")
        cos = np.sum(np.concatenate(parts[f"ref_{name}"]) * np.concatenate(parts[name]), axis=1)
        return float(cos.min()), float(cos.mean())

    (image_min, image_mean), (text_min, text_mean) = stats("images"), stats("texts")
    return PrecisionCheck(requested or precision, precision, len(images) if has_images else 0,
                          len(tokens) if has_texts else 0, image_min, image_mean, text_min,
                          text_mean, threshold)


def _current_torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------ the pipeline

@dataclass
class StreamResult:
    """What :func:`embed_stream` produced.

    Attributes
    ----------
    images : ndarray of shape (N_images, d), float32
        Rows of images that failed are NaN.
    texts : ndarray of shape (N_texts, d), float32
    failures : dict of int to str
        Image row -> skip reason.
    precision : str
        What ran: ``fp32``, ``bf16`` or ``fp16``.
    check : PrecisionCheck or None
        None when fp32 was asked for (or auto chose it): fp32 is the reference.
    notes : list of str
        What a user should be told (the check's outcome, a fallback).
    """

    images: np.ndarray
    texts: np.ndarray
    failures: dict[int, str]
    precision: str
    check: PrecisionCheck | None = None
    notes: list[str] = field(default_factory=list)


def default_lanes(device: str) -> tuple[int, int]:
    """(model lanes, torch threads per lane) for ``device``.

    On a CPU, several lanes each running whole batches on few threads beat one lane running
    each operation on every core: every torch operation that fans out to all cores ends in a
    barrier, and a barrier waits for the slowest core, which on a shared machine is often
    busy elsewhere. Measured here (ViT-B-32, bf16, 2 cores, load ~7): one lane of 2 threads
    8.5-12.8 images/s, two lanes of 1 thread 22.7-27.8 images/s; per CPU-second 16-19 vs 41.
    GPUs run one lane: the device orders the work anyway.
    """
    import torch

    if device.split(":")[0] != "cpu":
        return 1, torch.get_num_threads()
    cores = max(1, torch.get_num_threads())
    lanes = min(cores, MAX_CPU_LANES)
    return lanes, max(1, cores // lanes)


def embed_stream(loaded: Any, image_paths: Sequence[str], captions: Sequence[str], *,
                 precision: str = "auto", image_batch: int | None = None,
                 text_batch: int | None = None, workers: int | None = None,
                 lanes: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
                 progress: Progress | None = None, check_sample: int = CHECK_SAMPLE,
                 threshold: float = CHECK_THRESHOLD) -> StreamResult:
    """Embed images and captions with reading, decoding and preprocessing overlapping the model.

    Decode workers fill the buffers of the next image batches; ``lanes`` model threads take
    work in order: the next image batch once it is decoded, a caption batch while it is not.
    Rows are written by index, so the output is in input order whatever finishes first.
    ``progress`` is called from the calling thread (Streamlit needs that).

    Parameters
    ----------
    loaded : gapviz.encode.LoadedModel
    image_paths, captions : sequences of str
        Independent lists (a pair's image and caption share a row index in the callers).
    precision : {"auto", "fp32", "bf16", "fp16"}
    image_batch, text_batch : int, optional
        Default: :func:`default_batch_sizes` for the device. The last image batches are
        evened out over the lanes (:func:`batch_bounds`).
    workers : int, optional
        Threads that read, decode and preprocess images (default: one per CPU core, at most 8).
    lanes : int, optional
        Model threads (default: :func:`default_lanes`); the torch threads are shared out
        between them.
    check_sample : int
        Images and captions in the precision self-check.

    Returns
    -------
    StreamResult
    """
    import torch

    requested = str(precision).strip().lower()
    tried = resolve_precision(requested, loaded.device)
    default_images, default_texts = default_batch_sizes(loaded.device)
    image_batch, text_batch = image_batch or default_images, text_batch or default_texts
    if image_batch < 1 or text_batch < 1:
        raise ValueError(f"batch sizes must be at least 1, got {image_batch} and {text_batch}.")
    if check_sample < 1:
        raise ValueError(f"check_sample must be at least 1 (every reduced-precision run checks "
                         f"itself), got {check_sample}.")
    n_lanes, lane_threads = default_lanes(loaded.device)
    if lanes is not None:
        n_lanes, lane_threads = max(1, lanes), max(1, torch.get_num_threads() // max(1, lanes))
    n_images, n_texts = len(image_paths), len(captions)
    stage = ("embedding pairs" if n_images and n_texts else
             "embedding images" if n_images else "embedding captions")

    tokens = loaded.tokenizer(list(captions)) if n_texts else None
    text_batches: deque[Any] = deque()
    if tokens is not None:
        from .encode import _last_token

        # Captions of similar length share a batch, so CLIP-style towers skip more padding.
        order = torch.argsort(_last_token(tokens), stable=True)
        text_batches.extend(order[s:s + text_batch] for s in range(0, n_texts, text_batch))

    encoder = Encoder(loaded, tried)
    shape = tuple(loaded.preprocess(_blank_image()).shape) if n_images else ()
    # Workers make uint8 pixels and the lanes normalise whole batches, when the model's
    # preprocessing splits that way (open_clip's does); else workers run all of it.
    pixels = PixelSteps.split(loaded.preprocess) if n_images else None
    # The model's input side: CLIP-style preprocessing scales an image's short side to it
    # before cropping, so the resize's cost (and whether to refuse a thin strip) follows.
    side = max(shape[-2:]) if len(shape) >= 2 else 0
    workers = max(1, workers or min(8, os.cpu_count() or 1))
    failures: dict[int, str] = {}
    out: dict[str, np.ndarray] = {}
    check: PrecisionCheck | None = None
    notes: list[str] = []
    lock = threading.Lock()

    def prepare(i: int, buffer: Any, slot: int) -> str | None:
        # One reservation of the decode budget covers the decode and the resize; an image the
        # resize would blow up (a 1 x 40,000,000 strip) is skipped before it is decoded.
        try:
            with reserve_for_model(image_paths[i], side, max_pixels):
                image = open_rgb(image_paths[i], max_pixels)
                buffer[slot].copy_(pixels.pixels(image) if pixels else loaded.preprocess(image))
        except ImageError as err:
            return err.reason
        return None

    def store(kind: str, rows: Any, features: np.ndarray) -> None:
        with lock:
            if kind not in out:
                n = n_images if kind == "images" else n_texts
                out[kind] = np.full((n, features.shape[1]), np.nan, np.float32)
        out[kind][rows] = features  # each row belongs to one batch: no two lanes write it

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gapviz-decode",
                            initializer=_torch_threads, initargs=(1,)) as pool:
        starts = deque(batch_bounds(n_images, image_batch, n_lanes))
        queue: deque[tuple[list[int], Any, list[Future]]] = deque()

        def refill() -> None:
            # One batch per lane in flight plus one: decoded while the lanes run the ones
            # before. The workers write each image straight into its batch's buffer (pinned
            # memory on CUDA, for asynchronous copies).
            while len(queue) < n_lanes + 1 and starts:
                rows = list(range(*starts.popleft()))
                buffer = torch.empty((len(rows), *shape), pin_memory=encoder.pin,
                                     dtype=torch.uint8 if pixels else torch.float32)
                queue.append((rows, buffer, [pool.submit(prepare, i, buffer, j)
                                             for j, i in enumerate(rows)]))

        def collect(batch: tuple[list[int], Any, list[Future]]) -> tuple[int, list[int], Any]:
            rows, buffer, futures = batch
            reasons = [future.result() for future in futures]
            ok = [j for j, reason in enumerate(reasons) if reason is None]
            with lock:
                failures.update((rows[j], r) for j, r in enumerate(reasons) if r is not None)
            batch = buffer if len(ok) == len(rows) else buffer[ok]
            if pixels:  # on the model's device: on a GPU a quarter of the bytes cross the bus
                batch = pixels.normalise(batch.to(encoder.device, non_blocking=encoder.pin))
            return len(rows), [rows[j] for j in ok], batch

        refill()
        first = None
        if tried != "fp32":
            first = collect(queue.popleft()) if queue else None
            refill()
            check = check_precision(loaded, tried, first[2][:check_sample] if first else None,
                                    tokens[:check_sample] if tokens is not None else None,
                                    requested=requested, threshold=threshold,
                                    lanes=n_lanes, lane_threads=lane_threads)
            notes.append(check.summary())
            if not check.passed:
                log.warning("%s", check.summary())
                encoder = Encoder(loaded, "fp32")

        def next_task() -> tuple[str, Any] | None:
            nonlocal first
            with lock:
                if first is not None:
                    task, first = ("decoded", first), None
                    return task
                # Images once decoded; captions meanwhile, so no lane waits on the decoders
                # while there is other work.
                if queue and (not text_batches or all(f.done() for f in queue[0][2])):
                    batch = queue.popleft()
                    refill()
                    return "images", batch
                if text_batches:
                    return "texts", text_batches.popleft()
                return None

        events: Queue = Queue()

        def lane() -> None:
            _torch_threads(lane_threads)
            try:
                while (task := next_task()) is not None:
                    kind, work = task
                    if kind == "texts":
                        store("texts", work.numpy(), encoder.texts(tokens[work]))
                        events.put(len(work))
                        continue
                    size, rows, buffer = work if kind == "decoded" else collect(work)
                    if rows:
                        store("images", rows, encoder.images(buffer))
                    events.put(size)
            except BaseException as err:  # re-raised by the calling thread
                events.put(err)
            finally:
                events.put(None)

        threads = [threading.Thread(target=lane, name=f"gapviz-lane-{k}", daemon=True)
                   for k in range(n_lanes)]
        for thread in threads:
            thread.start()
        done, finished, error = 0, 0, None
        while finished < len(threads):
            event = events.get()
            if event is None:
                finished += 1
            elif isinstance(event, BaseException):
                error = error or event
                with lock:  # the other lanes stop after their current batch
                    queue.clear()
                    starts.clear()
                    text_batches.clear()
            else:
                done += event
                if progress is not None and error is None:
                    progress(done, n_images + n_texts, stage)
        for thread in threads:
            thread.join()
        if error is not None:
            raise error
    images = out.get("images", np.full((n_images, 0), np.nan, np.float32))
    texts = out.get("texts", np.empty((n_texts, 0), np.float32))
    return StreamResult(images, texts, failures, encoder.precision, check, notes)


def batch_bounds(n: int, size: int, lanes: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of ``n`` rows cut into batches of ``size`` rows, the last ``lanes`` of
    them (never the first) evened out.

    Lanes take the batches in turn, so the last ``lanes`` batches run side by side; of equal
    size, they end together: 400 images in batches of 32 on 2 lanes end in batches of 24 and
    24, not 32 and 16, where one lane would run alone for half a batch. The number of batches,
    and the first (the precision self-check's sample), are as without evening out.
    """
    edges = [*range(0, n, size), n] if n > 0 else []
    first = max(1, len(edges) - 1 - lanes)  # the first of the batches evened out
    if first < len(edges) - 1:
        start, count = edges[first], len(edges) - 1 - first
        edges[first:] = [start + round(k * (n - start) / count) for k in range(count + 1)]
    return list(zip(edges, edges[1:]))


@dataclass(frozen=True)
class PixelSteps:
    """A model's image preprocessing cut in two: per image, the steps on the PIL image (resize,
    crop, mode) down to uint8 pixels; per batch, to-tensor and normalise.

    Per image, torchvision's to-tensor and normalise of a 224 x 224 image cost ~0.85 ms of a
    core; on a batch of uint8 pixels the same operations cost ~0.15 ms an image and give the
    same floats bit for bit (the same float32 operations in the same order: / 255, - mean,
    / std). The decode buffers hold uint8, a quarter of the memory.

    Attributes
    ----------
    resize : callable
        PIL image -> PIL image of the model's size, RGB.
    mean, std : tensor of shape (3,), float32
    """

    resize: Callable[[Any], Any]
    mean: Any
    std: Any

    @classmethod
    def split(cls, preprocess: Any) -> PixelSteps | None:
        """The two halves of ``preprocess``, when it is a torchvision ``Compose`` ending in
        to-tensor and normalise (as open_clip's transforms do) and the halves give exactly
        what it gives on a probe image; else None."""
        try:
            import torch
            from torchvision import transforms
        except ImportError:
            return None
        steps = getattr(preprocess, "transforms", None)
        if not (isinstance(preprocess, transforms.Compose) and len(steps) >= 2
                and isinstance(steps[-2], transforms.ToTensor)
                and type(steps[-1]) is transforms.Normalize):
            return None
        normalize = steps[-1]
        halves = cls(transforms.Compose(steps[:-2]),
                     torch.as_tensor(normalize.mean, dtype=torch.float32),
                     torch.as_tensor(normalize.std, dtype=torch.float32))
        probe = _probe_image()
        try:
            same = torch.equal(halves.normalise(halves.pixels(probe)[None])[0], preprocess(probe))
        except (RuntimeError, ValueError, TypeError):
            return None
        return halves if same else None

    def pixels(self, image: Any) -> Any:
        """uint8 tensor of shape (3, H, W) for an RGB PIL image."""
        import torch

        return torch.from_numpy(np.array(self.resize(image), dtype=np.uint8)).permute(2, 0, 1)

    def normalise(self, batch: Any) -> Any:
        """float32 tensor of shape (B, 3, H, W), the model's input, for uint8 pixels of that
        shape (on any device)."""
        import torch

        mean = self.mean.to(batch.device).view(1, -1, 1, 1)
        std = self.std.to(batch.device).view(1, -1, 1, 1)
        return batch.to(torch.float32).div_(255).sub_(mean).div_(std)


def _probe_image() -> Any:
    """A 61 x 47 RGB image of noise: odd sizes and every pixel different, so a split of the
    preprocessing that resizes, crops or rounds differently shows."""
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (47, 61, 3), dtype=np.uint8), "RGB")


def _torch_threads(n: int) -> None:
    """Set torch's thread count for the calling thread (it is per thread).

    Decode workers run their per-image ops (to-tensor and normalise, for a preprocessing that
    :class:`PixelSteps` cannot split) on one thread: left at the core count, each worker's tiny
    ops fan out to every core and wait on the model's threads (to-tensor of one 224x224 image
    took 21 ms instead of 0.2 ms on a busy 2-core machine).
    """
    import torch

    torch.set_num_threads(n)


def _blank_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (64, 64))
