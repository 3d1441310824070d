"""The similarity pass of :func:`gapviz.measures.measure_gap` on a torch device (a GPU).

Same measures, same exact ranks: :func:`similarity_pass` returns what the CPU pass of
``gapviz.measures`` returns, value for value, so ``measure_gap(..., device="cuda")`` and
``measure_gap(..., device="cpu")`` give equal reports. Only the float32 panel products and
their sweeps move to the device; everything else stays as on the CPU.

How the results stay exact
--------------------------
The device sees the float32 unit rows ``Xn``, ``Yn`` that ``measure_gap`` made on the CPU
(normalised in float64, rounded once) and the float32 bands ``[lo, hi)`` around each float64
threshold (:func:`gapviz.measures.float32_cosine_bound` ``h`` either side, rounded outwards).
Its float32 products run with TF32 off (``torch.backends.cuda.matmul.allow_tf32 = False``
inside the call, restored after), so each float32 cosine is within ``h / 2`` of the exact one
whatever order cuBLAS sums in. A value at or above ``hi`` is then surely at least as close as
the threshold in float64, a value below ``lo`` surely not, on the device as on the CPU. The
entries inside a band, and the candidates for each query's best other-modality cosine (its
argmax, or every value within ``2 h`` of the maximum when that is not unique), are copied to
the CPU as (query, candidate) index pairs and settled there by the same numba float64 kernels
as the CPU pass reads (``_count_at_least``, ``_max_over``: one fixed-order dot product of the
input rows each). Identical float64 values decide identical comparisons, so the counts equal
the CPU pass's, not only the float64 brute force's. The close calls are few (a few per query
on real embeddings), so the copy and the float64 work are small beside the products; heavily
tied data (many duplicates) makes more of them, never wrong ranks.

Panels
------
The cross block ``X Y^T`` is swept once by row panels: per image row the sure count, the band
entries and the maximum; per text column the same against the column's threshold and a
running top two. Each within-modality block ``A A^T`` is swept once over its upper triangle
(panel ``i0:i1`` against rows ``i0:``, the lower part of the leading square masked out), each
entry serving both of its items. Work is about ``2 N^2 d`` multiply-adds, as on the CPU;
memory is O(N d) on the device plus one panel and its masks (``block_values`` float32 values
per panel; about 8 bytes per value at the peak).

Torch is imported by this module only; ``gapviz.measures`` imports it on demand.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .measures import (
    _BELOW_COSINE as _BELOW,
    TIE_TOL_FLOAT64,
    _band32,
    _count_at_least,
    _max_over,
    _stack,
)
from .threads import SharedSetting

#: float32 values of one device panel: 2^28 is 1 GiB of products (about 2 GiB with the
#: masks of its sweep), large enough to keep a GPU's matrix units busy; capped at a fifth of
#: the device's free memory.
DEVICE_BLOCK_VALUES = 2 ** 28


def default_device() -> torch.device:
    """CUDA when torch sees a GPU, else torch's CPU device."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def similarity_pass(Xn: np.ndarray, Yn: np.ndarray, Xr: np.ndarray, Yr: np.ndarray,
                    ix: np.ndarray, iy: np.ndarray, s_pair: np.ndarray, h: float,
                    block_values: int | None, device: torch.device | str) -> tuple[np.ndarray, ...]:
    """Every mixed-pool count of ``measure_gap`` from float32 panels on ``device``.

    Parameters
    ----------
    Xn, Yn : ndarray of shape (N, d), float32
        Unit rows (``gapviz.measures._unit_rows``).
    Xr, Yr : ndarray of shape (N, d)
        The input rows the float64 rechecks read; ``ix``, ``iy`` (N,) their inverse norms.
    s_pair : ndarray of shape (N,), float64
        cos(x_i, y_i).
    h : float
        ``float32_cosine_bound(d)``.
    block_values : int or None
        float32 values of one panel; None: :data:`DEVICE_BLOCK_VALUES` within free memory.
    device : torch.device or str

    Returns
    -------
    tuple of ndarray
        ``best_text_sim``, ``texts_ge_pair``, ``best_image_sim``, ``images_ge_pair`` (as the
        CPU's ``_cross_stats``), then ``imgs_ge_best_text``, ``imgs_ge_pair``,
        ``txts_ge_best_img``, ``txts_ge_pair`` (as its ``_within_counts`` on X, then Y).
    """
    device = torch.device(device)
    n = Xn.shape[0]
    values = _panel_values(block_values, device)
    with _ieee_float32_products(device), torch.no_grad():
        Xd = torch.from_numpy(np.ascontiguousarray(Xn)).to(device)
        Yd = torch.from_numpy(np.ascontiguousarray(Yn)).to(device)
        lo, hi = _band32(s_pair, h)
        lo_p, hi_p = _to(lo, device), _to(hi, device)
        best_text, texts_ge_pair, best_image, images_ge_pair = _cross(
            Xd, Yd, Xr, Yr, ix, iy, s_pair, lo_p, hi_p, np.float32(2 * h), values)
        imgs_ge_best, imgs_ge_pair = _within(Xd, Xr, ix, best_text, s_pair, lo_p, hi_p, h, values)
        txts_ge_best, txts_ge_pair = _within(Yd, Yr, iy, best_image, s_pair, lo_p, hi_p, h, values)
    assert best_text.shape[0] == n
    return (best_text, texts_ge_pair, best_image, images_ge_pair,
            imgs_ge_best, imgs_ge_pair, txts_ge_best, txts_ge_pair)


# ---------------------------------------------------------------------------------------------
# the two sweeps
# ---------------------------------------------------------------------------------------------
def _cross(Xd, Yd, Xr, Yr, ix, iy, s_pair, lo, hi, near, values):
    """One pass over ``X Y^T`` by row panels; the CPU's ``_cross_stats`` on the device."""
    n = Xd.shape[0]
    dev = Xd.device
    rows = max(1, values // n)
    row_sure = torch.zeros(n, dtype=torch.int64, device=dev)
    row_m1 = torch.empty(n, dtype=torch.float32, device=dev)
    row_arg = torch.empty(n, dtype=torch.int64, device=dev)
    row_near = torch.empty(n, dtype=torch.int64, device=dev)
    col_sure = torch.zeros(n, dtype=torch.int64, device=dev)
    col_m1 = torch.full((n,), float(_BELOW), dtype=torch.float32, device=dev)
    col_m2 = torch.full((n,), float(_BELOW), dtype=torch.float32, device=dev)
    col_arg = torch.zeros(n, dtype=torch.int64, device=dev)
    near_t = torch.tensor(near, device=dev)
    band_rows, band_cols, tied = [], [], []
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        r = i1 - i0
        S = Xd[i0:i1] @ Yd.T                                   # (r, n) float32
        diag = (torch.arange(r, device=dev), torch.arange(i0, i1, device=dev))
        partner = S[diag]                                      # cos(x_i, y_i), float32
        # image queries (rows) against their partner's cosine
        ge = S >= hi[i0:i1, None]
        row_sure[i0:i1] = ge.sum(1) - (partner >= hi[i0:i1]).long()
        band = (S >= lo[i0:i1, None]) ^ ge
        band[diag] = False                                     # the partner is no competitor
        band_rows.append(_entries(band, i0, 0))
        # text queries (columns) against theirs
        ge = S >= hi[None, :]
        col_sure += ge.sum(0)
        col_sure[i0:i1] -= (partner >= hi[i0:i1]).long()
        band = (S >= lo[None, :]) ^ ge
        band[diag] = False
        band_cols.append(_entries(band.T, 0, i0))
        del ge, band
        # best text per image: the maximum and how many values lie within `near` of it
        m1, arg = S.max(1)
        top = m1 - near_t
        row_m1[i0:i1], row_arg[i0:i1] = m1, arg
        row_near[i0:i1] = (S >= top[:, None]).sum(1)
        several = torch.nonzero(row_near[i0:i1] > 1).flatten()
        if several.numel():
            tied.append(_entries(S[several] >= top[several, None], 0, 0, several + i0))
        # best image per text: a running top two of each column
        p1, parg = S.max(0)
        if r > 1:
            S[parg, torch.arange(n, device=dev)] = float(_BELOW)
            p2 = S.max(0).values
        else:
            p2 = torch.full_like(p1, float(_BELOW))
        col_m2 = torch.maximum(torch.minimum(col_m1, p1), torch.maximum(col_m2, p2))
        col_arg = torch.where(p1 > col_m1, parg + i0, col_arg)
        col_m1 = torch.maximum(col_m1, p1)
        del S

    # Partner ranks: the sure counts plus the band entries that float64 puts at least as close.
    texts_ge_pair = 1 + row_sure.cpu().numpy()
    images_ge_pair = 1 + col_sure.cpu().numpy()
    _count_at_least(Xr, Yr, ix, iy, _stack(band_rows), s_pair, TIE_TOL_FLOAT64, texts_ge_pair,
                    *_no_shift(n))
    _count_at_least(Yr, Xr, iy, ix, _stack(band_cols), s_pair, TIE_TOL_FLOAT64, images_ge_pair,
                    *_no_shift(n))

    # Best text per image: the argmax when no other text is within `near` of it, else every
    # near-maximum text, in float64.
    idx = np.arange(n, dtype=np.int32)
    unique = (row_near == 1).cpu().numpy()
    arg = row_arg.cpu().numpy().astype(np.int32)
    entries = np.concatenate([np.c_[idx[unique], arg[unique]], _stack(tied)])
    best_text = np.full(n, -np.inf)
    _max_over(Xr, Yr, ix, iy, np.ascontiguousarray(entries, dtype=np.int32), best_text,
              *_no_shift(n))

    # Best image per text: the argmax when the column's second value is below m1 - near, else
    # those texts' columns again, as rows, every near-maximum image.
    unique_t = col_m2 < col_m1 - near_t
    unique = unique_t.cpu().numpy()
    arg = col_arg.cpu().numpy().astype(np.int32)
    parts = [np.c_[idx[unique], arg[unique]]]
    again = torch.nonzero(~unique_t).flatten()
    step = max(1, values // n)
    for j0 in range(0, again.numel(), step):
        cols = again[j0:j0 + step]
        S = Yd[cols] @ Xd.T
        parts.append(_entries(S >= (S.max(1).values - near_t)[:, None], 0, 0, cols))
    best_image = np.full(n, -np.inf)
    _max_over(Yr, Xr, iy, ix, np.ascontiguousarray(np.concatenate(parts), dtype=np.int32),
              best_image, *_no_shift(n))
    return best_text, texts_ge_pair, best_image, images_ge_pair


def _within(Ad, Ar, ia, thr_a, thr_b, lo_b, hi_b, h, values):
    """For each row i: #{j != i : cos64(a_i, a_j) >= thr_a[i]} and the same for ``thr_b``
    (whose float32 band ``lo_b``, ``hi_b`` is given); the CPU's ``_within_counts``.

    Walks the upper triangle of ``A A^T`` by row panels (panel i0:i1 against rows i0:), the
    leading square's diagonal and lower part set below every threshold, so each entry is
    counted once for each of its two items and no item meets itself.
    """
    n = Ad.shape[0]
    dev = Ad.device
    lo_a, hi_a = (_to(t, dev) for t in _band32(thr_a, h))
    bands = ((lo_a, hi_a), (lo_b, hi_b))
    sure = [torch.zeros(n, dtype=torch.int64, device=dev) for _ in bands]
    found: list[list[np.ndarray]] = [[], []]
    i0 = 0
    while i0 < n:
        rows = max(1, values // (n - i0))                     # square panels near the end
        i1 = min(n, i0 + rows)
        r = i1 - i0
        S = Ad[i0:i1] @ Ad[i0:].T                              # (r, n - i0): item i0 + c
        lower = torch.ones(r, r, dtype=torch.bool, device=dev).tril_()
        S[:, :r].masked_fill_(lower, float(_BELOW))          # c <= r: not above the diagonal
        del lower
        for (lo, hi), cnt, out in zip(bands, sure, found):
            ge = S >= hi[i0:i1, None]                          # row item i0 + r as the query
            cnt[i0:i1] += ge.sum(1)
            out.append(_entries((S >= lo[i0:i1, None]) ^ ge, i0, i0))
            ge = S >= hi[None, i0:]                            # column item i0 + c as the query
            cnt[i0:] += ge.sum(0)
            out.append(_entries(((S >= lo[None, i0:]) ^ ge).T, i0, i0))
            del ge
        del S
        i0 = i1
    counts = [c.cpu().numpy() for c in sure]
    for thr, cnt, out in zip((thr_a, thr_b), counts, found):
        _count_at_least(Ar, Ar, ia, ia, _stack(out), thr, TIE_TOL_FLOAT64, cnt, *_no_shift(n))
    return counts[0], counts[1]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _no_shift(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The float64 rechecks' zero shift terms: they compare the cosine itself."""
    zeros = np.zeros(n)
    return zeros, zeros


def _entries(mask: torch.Tensor, q0: int, c0: int, queries: torch.Tensor | None = None) -> np.ndarray:
    """(query, candidate) int32 pairs of the true entries of ``mask`` (queries by row), on
    the CPU: row r is query ``q0 + r`` (or ``queries[r]``), column c candidate ``c0 + c``."""
    nz = torch.nonzero(mask)
    if queries is not None:
        nz[:, 0] = queries[nz[:, 0]]
    else:
        nz[:, 0] += q0
    nz[:, 1] += c0
    return nz.to(torch.int32).cpu().numpy()


def _to(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _panel_values(block_values: int | None, device: torch.device) -> int:
    """float32 values of one panel: as asked, else :data:`DEVICE_BLOCK_VALUES` within a fifth
    of the device's free memory (a panel and its masks take about 8 bytes a value)."""
    if block_values is not None:
        return max(1, int(block_values))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, min(DEVICE_BLOCK_VALUES, free // (5 * 8)))
    return 1 << 24  # torch's CPU device: the CPU pass's 64 MiB


def _tf32_off():
    """TF32 off for cuBLAS; returns the function that puts the setting back. The legacy flag
    ``torch.backends.cuda.matmul.allow_tf32`` is used unless the process set precision through
    torch's newer ``fp32_precision`` API (reading the legacy flag then raises), in which case
    that one is saved and set instead."""
    matmul = torch.backends.cuda.matmul
    try:
        saved = matmul.allow_tf32
    except RuntimeError:  # the newer API is in use: keep to it
        saved = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        return lambda: setattr(matmul, "fp32_precision", saved)
    matmul.allow_tf32 = False
    return lambda: setattr(matmul, "allow_tf32", saved)


_tf32_held_off = SharedSetting(_tf32_off)


@contextlib.contextmanager
def _ieee_float32_products(device: torch.device):
    """TF32 off for cuBLAS while any pass runs on a CUDA device (a
    :class:`gapviz.threads.SharedSetting`).

    TF32 rounds the factors of a float32 product to 10 mantissa bits, far outside the float32
    error bound the exact rank rule relies on."""
    if device.type != "cuda":
        yield
        return
    with _tf32_held_off.held():
        yield
