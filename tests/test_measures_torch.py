"""The torch similarity pass (gapviz.measures_torch) equals the CPU pass and the float64 brute force.

The torch code runs on torch's CPU device here, so its logic (panels, masks, bands, the
running column top two, the float64 settling) is tested on any machine; the same checks on a
CUDA GPU run when torch sees one and are skipped with a message otherwise.
"""

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from reference import assert_report_is_float64, near_tie_pairs, planted_ties

from gapviz import measures, measures_torch
from gapviz.measures import measure_gap

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU visible to torch: the GPU "
                                "checks run only on a machine with one")



@pytest.fixture(autouse=True)
def one_torch_thread():
    """Torch's CPU kernels on one thread: its OpenMP pool otherwise spins against other
    processes on a shared machine (ten times slower here); results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torch_cpu(monkeypatch):
    """device="torch" runs on torch's CPU device, even where a GPU is present."""
    monkeypatch.setattr(measures_torch, "default_device", lambda: torch.device("cpu"))
    return "torch"


def assert_same_report(a, b):
    """Every field of two GapReports equal (NaN equal to NaN)."""
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb, err_msg=f.name)
            assert va.dtype == vb.dtype, f.name
        elif isinstance(va, dict):
            assert va.keys() == vb.keys()
            for k in va:
                assert va[k] == vb[k] or (math.isnan(va[k]) and math.isnan(vb[k])), k
        else:
            assert va == vb, f.name


def assert_device_equals_cpu_and_float64(X, Y, device, block_values=None):
    cpu = measure_gap(X, Y, device="cpu")
    dev = measure_gap(X, Y, device=device, block_values=block_values)
    assert_same_report(dev, cpu)
    assert_report_is_float64(dev, X, Y)
    return dev


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def tied_pairs(n, d, seed):
    """Rounded coordinates (exact ties), a duplicated image, a caption equal to its image."""
    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(size=(n, d)) + 0.8, 1)
    Y = np.round(rng.normal(size=(n, d)) - 0.3, 1)
    X[3] = X[5]
    Y[7] = X[7]
    return X, Y


def crowded_pairs(n=240, d=256, seed=11):
    """Texts that are slight moves (1e-7 .. 1e-4 in cosine) of images, exact duplicates of
    images and of texts, a near-duplicate image: many comparisons inside the float32 band."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.integers(0, n, size=n)
    scale = 10.0 ** rng.uniform(-7, -3.5, size=(n, 1))
    Y = (X[src] + scale * rng.normal(size=(n, d))).astype(np.float32)
    X[10:20] = X[0]
    Y[30:35] = Y[29]
    X[40] = X[41] + np.float32(1e-6) * rng.normal(size=d).astype(np.float32)
    return X, Y


# ---------------------------------------------------------------------------------------------
# torch's CPU device: the logic, on any machine
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d,block", [(40, 6, 10 ** 6), (97, 5, 300), (64, 12, 64), (50, 3, 1)])
def test_tied_data_across_panel_edges(n, d, block, torch_cpu):
    # block = 1: one row per panel (no column top two inside a panel); 300 / 97: 3-row panels
    # and ragged last panels; 10 ** 6: one panel
    X, Y = tied_pairs(n, d, seed=n)
    assert_device_equals_cpu_and_float64(X, Y, torch_cpu, block_values=block)


@pytest.mark.parametrize("gap", [1.5e-6, -1.5e-6, 2e-7, -2e-7, 3e-5, -3e-5])
def test_near_ties_are_ordered_as_float64_orders_them(gap, torch_cpu):
    X, Y = near_tie_pairs(gap, d=256)
    r = assert_device_equals_cpu_and_float64(X, Y, torch_cpu, block_values=40 * 7)
    assert r.best_text_rank[0] == (1 if gap > 0 else 2)


@pytest.mark.parametrize("block", [5_000, 50_000])
def test_crowded_near_duplicates(block, torch_cpu):
    X, Y = crowded_pairs()
    assert_device_equals_cpu_and_float64(X, Y, torch_cpu, block_values=block)


def test_random_embeddings_with_a_gap(torch_cpu):
    rng = np.random.default_rng(3)
    n, d = 400, 64
    X = (rng.normal(size=(n, d)) + 1.5).astype(np.float32)
    Y = (X + 2.0 * rng.normal(size=(n, d)) - 1.5).astype(np.float32)
    r = assert_device_equals_cpu_and_float64(X, Y, torch_cpu, block_values=7_000)
    assert r.metrics["ITR"] > 1  # a real gap: images come first for most image queries


def test_everything_tied(torch_cpu):
    X = np.tile(np.float32([0.3, -1.2, 0.5, 2.0]), (120, 1))
    r = assert_device_equals_cpu_and_float64(X, X.copy(), torch_cpu, block_values=1_000)
    assert r.best_text_rank.tolist() == [120] * 120
    assert r.i2t_rank.tolist() == [239] * 120


def test_two_pairs(torch_cpu):
    r = assert_device_equals_cpu_and_float64(np.eye(2), np.eye(2), torch_cpu)
    assert r.i2t_rank.tolist() == [1, 1] and r.metrics["ITR"] == 0.0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), d=st.integers(1, 24), seed=st.integers(0, 10 ** 6),
       log_eps=st.floats(-9, -3), n_dup=st.integers(0, 4), f64=st.booleans(),
       block=st.integers(1, 400))
def test_equals_cpu_and_float64_on_planted_ties(n, d, seed, log_eps, n_dup, f64, block):
    pairs = planted_ties(n, d, seed, log_eps, n_dup, f64)
    if pairs is None:
        return
    X, Y = pairs
    torch_cpu_device = torch.device("cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(measures_torch, "default_device", lambda: torch_cpu_device)
        assert_device_equals_cpu_and_float64(X, Y, "torch", block_values=block)


# ---------------------------------------------------------------------------------------------
# choosing the device, and leaving torch's settings as they were
# ---------------------------------------------------------------------------------------------
def test_importing_the_measures_does_not_import_torch():
    code = ("import sys, numpy as np, gapviz.measures as m; "
            "m.measure_gap(np.eye(3) + 0.1, np.eye(3)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux") or any(
    os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")),
    reason="a GPU driver is present (or not Linux): auto has to ask torch")
def test_auto_without_a_gpu_driver_does_not_import_torch():
    code = ("import sys, gapviz.measures as m; "
            "print(m._torch_device('auto', 10 ** 6), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None False"


def test_auto_picks_the_gpu_only_for_large_pools(monkeypatch):
    n_big = measures.DEVICE_MIN_PAIRS
    assert measures._torch_device("auto", n_big - 1) is None
    assert measures._torch_device("cpu", 10 ** 7) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert measures._torch_device("auto", n_big) is None
    assert measures._torch_device("torch", 10) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        measures._torch_device("cuda", 10)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert measures._torch_device("auto", n_big) == torch.device("cuda")
    assert measures._torch_device("cuda:1", 10) == torch.device("cuda:1")
    with pytest.raises(ValueError, match="not one of"):
        measure_gap(np.eye(2), np.eye(2), device="tpu")


def test_tf32_is_off_inside_a_cuda_pass_and_restored_after():
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = True
        guard = measures_torch._ieee_float32_products
        with guard(torch.device("cuda")):
            assert matmul.allow_tf32 is False
            with guard(torch.device("cuda")):  # a concurrent pass: the first one restores
                assert matmul.allow_tf32 is False
            assert matmul.allow_tf32 is False
        assert matmul.allow_tf32 is True
        with guard(torch.device("cpu")):  # no cuBLAS on the CPU: nothing touched
            assert matmul.allow_tf32 is True
    finally:
        matmul.allow_tf32 = before


def test_panel_size():
    assert measures_torch._panel_values(123, torch.device("cpu")) == 123
    assert measures_torch._panel_values(0, torch.device("cpu")) == 1
    assert measures_torch._panel_values(None, torch.device("cpu")) == 1 << 24


# ---------------------------------------------------------------------------------------------
# CUDA: the same checks on the GPU (skipped without one)
# ---------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("n,d,block", [(40, 6, None), (97, 5, 300), (64, 12, 1)])
def test_cuda_tied_data_across_panel_edges(n, d, block):
    X, Y = tied_pairs(n, d, seed=n)
    assert_device_equals_cpu_and_float64(X, Y, "cuda", block_values=block)


@needs_cuda
@pytest.mark.parametrize("gap", [1.5e-6, -1.5e-6, 2e-7, -2e-7])
def test_cuda_near_ties(gap):
    X, Y = near_tie_pairs(gap, d=512)
    assert_device_equals_cpu_and_float64(X, Y, "cuda")


@needs_cuda
def test_cuda_crowded_near_duplicates_and_tf32_left_on():
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = True  # the pass must switch it off for itself and restore it
        X, Y = crowded_pairs(n=400, d=512)
        assert_device_equals_cpu_and_float64(X, Y, "cuda", block_values=20_000)
        assert matmul.allow_tf32 is True
    finally:
        matmul.allow_tf32 = before


@needs_cuda
def test_cuda_auto_on_a_larger_pool(monkeypatch):
    # "auto" takes the GPU from DEVICE_MIN_PAIRS on; lowered so that the CPU check stays quick
    monkeypatch.setattr(measures, "DEVICE_MIN_PAIRS", 1_000)
    rng = np.random.default_rng(8)
    X = (rng.normal(size=(3_000, 256)) + 0.5).astype(np.float32)
    Y = (X + rng.normal(size=X.shape)).astype(np.float32)
    Y[::50] = X[::50]
    assert measures._torch_device("auto", 3_000) == torch.device("cuda")
    assert_same_report(measure_gap(X, Y), measure_gap(X, Y, device="cpu"))
