"""Command-line options of the methods: parsing and validation."""

import argparse
import io

import pytest

from gapviz.methods import OTGap, SpectralGap
from gapviz.cli.method_options import add_method_arguments, method_from_args, print_progress


@pytest.fixture()
def parser():
    p = argparse.ArgumentParser()
    p.add_argument("file")
    add_method_arguments(p)
    return p


def test_no_method_means_none(parser):
    assert method_from_args(parser.parse_args(["f.npz"])) is None


def test_options_map_to_each_methods_parameters(parser):
    m = method_from_args(parser.parse_args(["f.npz", "--method", "spectral", "--k", "20", "--knn", "10",
                                            "--graph", "joint", "--max-k", "50"]))
    assert isinstance(m, SpectralGap)
    assert (m.n_components, m.knn, m.graph, m.max_components) == (20, 10, "joint", 50)
    m = method_from_args(parser.parse_args(["f.npz", "--method", "ot", "--reg-lap", "5", "--reg-src", "0.5",
                                            "--similarity-param", "4", "--max-iter", "3"]))
    assert isinstance(m, OTGap)
    assert (m.reg_lap, m.reg_src, m.similarity_param, m.max_iter) == (5.0, 0.5, 4, 3)
    assert isinstance(m.similarity_param, int)
    assert method_from_args(parser.parse_args(["f.npz", "--method", "pca", "--k", "7"])).n_components == 7
    assert method_from_args(parser.parse_args(["f.npz", "--method", "sinkhorn", "--reg", "0.2"])).reg == 0.2
    assert method_from_args(parser.parse_args(["f.npz", "--method", "procrustes", "--no-center"])).center is False
    assert method_from_args(parser.parse_args(["f.npz", "--method", "vlap", "--anchors", "32"])).n_anchors == 32


def test_options_that_do_not_apply_are_errors(parser):
    with pytest.raises(ValueError, match="--reg-lap does not apply to --method spectral; it applies to ot"):
        method_from_args(parser.parse_args(["f.npz", "--method", "spectral", "--reg-lap", "1"]))
    with pytest.raises(ValueError, match="--k given without --method"):
        method_from_args(parser.parse_args(["f.npz", "--k", "3"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["f.npz", "--method", "umap"])


def test_print_progress_writes_lines():
    out = io.StringIO()
    report = print_progress(out, every=0.5)
    for f in (0.0, 0.1, 0.6, 1.0):
        report(f, f"step {f}")
    assert out.getvalue().splitlines() == ["  [  0%] step 0.0", "  [ 60%] step 0.6", "  [100%] step 1.0"]
