"""Command-line options of the methods: parsing, validation, --fit-on."""

import argparse
import io

import numpy as np
import pytest

from gapviz.embeddings import PairedEmbeddings, save_embeddings
from gapviz.methods import OTGap, SpectralGap
from gapviz.cli.method_options import add_method_arguments, apply_method, method_from_args, print_progress
from methods_helpers import gap_pairs


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


def test_fit_on_other_pairs_transforms_out_of_sample(tmp_path, parser):
    X, Y = gap_pairs(n=80, d=10)
    other = save_embeddings(PairedEmbeddings(X[:50], Y[:50]), tmp_path / "fit.npz")
    args = parser.parse_args([str(tmp_path / "eval.npz"), "--method", "spectral", "--k", "4",
                              "--fit-on", str(other)])
    method = method_from_args(args)
    Xt, Yt = apply_method(method, X[50:], Y[50:], fit_on=args.fit_on)
    assert Xt.shape == (30, 4) and method.X_fit_.shape == (50, 10)
    np.testing.assert_allclose(Xt, method.transform_images(X[50:]), atol=1e-6)
    with pytest.raises(ValueError, match="has d=10 but the evaluated pairs have d=6"):
        apply_method(SpectralGap(n_components=2), X[:, :6], Y[:, :6], fit_on=other)
    # without --fit-on: the exact transductive embedding
    Xt, _ = apply_method(SpectralGap(n_components=4), X, Y)
    np.testing.assert_allclose(Xt, SpectralGap(n_components=4).fit(X, Y).training_embedding()[0], atol=1e-6)


def test_print_progress_writes_lines():
    out = io.StringIO()
    report = print_progress(out, every=0.5)
    for f in (0.0, 0.1, 0.6, 1.0):
        report(f, f"step {f}")
    assert out.getvalue().splitlines() == ["  [  0%] step 0.0", "  [ 60%] step 0.6", "  [100%] step 1.0"]
