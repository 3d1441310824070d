"""Command-line options for the gap-closing methods (``gapviz evaluate --method``).

>>> parser = argparse.ArgumentParser()
>>> add_method_arguments(parser)
>>> args = parser.parse_args(["--method", "spectral", "--k", "20"])
>>> method = method_from_args(args)                         # SpectralGap(n_components=20)
>>> X_t, Y_t = apply_method(method, X, Y, fit_on=args.fit_on)  # doctest: +SKIP

Every option defaults to ``None`` (not given): a method then runs with its own defaults, and an
option that the chosen method does not take is an error rather than silently ignored.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from ..methods import METHODS, make_method
from ..methods.base import GapMethod, ProgressCallback


@dataclass(frozen=True)
class _Option:
    flag: str
    type: Callable[[str], Any] | None
    help: str
    params: dict[str, str]          # method name -> parameter name
    choices: tuple[str, ...] | None = None
    store_const: Any = None         # for flags without a value: the parameter value they set

    @property
    def dest(self) -> str:
        return "method_" + self.flag.lstrip("-").replace("-", "_")


_OPTIONS: tuple[_Option, ...] = (
    _Option("--k", int, "components: spectral k (default 60; 2..200 typical) or PCA dimensions",
            {"spectral": "n_components", "pca": "n_components"}),
    _Option("--max-k", int, "spectral: eigenvectors computed once, any k up to it is a slice (default 200)",
            {"spectral": "max_components"}),
    _Option("--graph", str, "spectral graph: cross-modal only (default) or with within-modality edges",
            {"spectral": "graph"}, choices=("bipartite", "joint")),
    _Option("--affinity", str, "spectral: rule making cosines non-negative: (1+c)/2 (default), max(c,0), "
            "exp((c-1)/heat-scale)", {"spectral": "affinity"}, choices=("shift", "clip", "heat")),
    _Option("--knn", int, "spectral: keep each item's KNN most similar edges (default: dense graph)",
            {"spectral": "knn"}),
    _Option("--approximate-knn", None, "spectral: search the kNN graph with pynndescent",
            {"spectral": "approximate_knn"}, store_const=True),
    _Option("--heat-scale", float, "spectral: heat-kernel bandwidth in units of 1 - cos (default 0.1)",
            {"spectral": "heat_scale"}),
    _Option("--within-weight", float, "spectral, joint graph: weight of within-modality edges (default 1)",
            {"spectral": "within_weight"}),
    _Option("--laplacian", str, "spectral: random-walk (D-W)f = lambda D f (default) or (D-W)f = lambda f",
            {"spectral": "laplacian"}, choices=("normalized", "unnormalized")),
    _Option("--reg-lap", float, "ot: Laplacian regularisation weight (POT reg_lap; default 100)",
            {"ot": "reg_lap"}),
    _Option("--reg-src", float, "ot: share of the image graph in the regulariser, 0..1 (default 1)",
            {"ot": "reg_src"}),
    _Option("--reg-type", str, "ot: regularise positions (default) or displacements",
            {"ot": "reg_type"}, choices=("pos", "disp")),
    _Option("--similarity", str, "ot: similarity graph of each modality (default knn)",
            {"ot": "similarity"}, choices=("knn", "gauss")),
    _Option("--similarity-param", float, "ot: neighbours (knn, default 3) or Gaussian sigma",
            {"ot": "similarity_param"}),
    _Option("--max-iter", int, "ot: conditional-gradient iterations (default 10); sinkhorn: iterations "
            "(default 1000)", {"ot": "max_iter", "sinkhorn": "max_iter"}),
    _Option("--tol", float, "ot / sinkhorn: stopping tolerance", {"ot": "tol", "sinkhorn": "tol"}),
    _Option("--reg", float, "sinkhorn: entropic regularisation in units of 2 - 2 cos (default 0.05)",
            {"sinkhorn": "reg"}),
    _Option("--sinkhorn-method", str, "sinkhorn: POT solver (default sinkhorn)", {"sinkhorn": "method"},
            choices=("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized")),
    _Option("--anchors", int, "vlap: number of anchors (k-means centroids of the texts; default 256)",
            {"vlap": "n_anchors"}),
    _Option("--epochs", int, "vlap: training epochs (default 20)", {"vlap": "epochs"}),
    _Option("--lr", float, "vlap: Adam learning rate (default 1e-3)", {"vlap": "lr"}),
    _Option("--temperature", float, "vlap: softmax temperature (default 0.1)", {"vlap": "temperature"}),
    _Option("--no-center", None, "procrustes: do not remove each modality's mean",
            {"procrustes": "center"}, store_const=False),
    _Option("--seed", int, "spectral / vlap: random seed (default 0)",
            {"spectral": "random_state", "vlap": "random_state"}),
)


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--method``, ``--fit-on`` and every method parameter to ``parser`` (one group)."""
    group = parser.add_argument_group(
        "gap-closing method", "close the gap, then measure again (every option is optional; "
        "each applies to the methods named in its help)")
    group.add_argument("--method", choices=list(METHODS), default=None,
                       help="method to apply: " + "; ".join(f"{n}: {c.summary}" for n, c in METHODS.items()))
    group.add_argument("--fit-on", metavar="OTHER", default=None,
                       help="fit the method on the pairs of this embeddings file (.npz or .parquet) and "
                            "transform FILE's pairs out of sample, as the paper fits OT on separate pairs")
    for opt in _OPTIONS:
        if opt.store_const is not None:
            group.add_argument(opt.flag, dest=opt.dest, action="store_const", const=opt.store_const,
                               default=None, help=opt.help)
        else:
            group.add_argument(opt.flag, dest=opt.dest, type=opt.type, choices=opt.choices,
                               default=None, help=opt.help)


def method_from_args(args: argparse.Namespace) -> GapMethod | None:
    """The method ``args`` ask for (unfitted), or ``None`` when no ``--method`` was given.

    Raises
    ------
    ValueError
        A method option was given without ``--method``, or one that the chosen method does not
        take (the message names the methods it applies to), or a parameter value the method
        rejects at construction.
    """
    given = [opt for opt in _OPTIONS if getattr(args, opt.dest, None) is not None]
    name = getattr(args, "method", None)
    if name is None:
        if given or getattr(args, "fit_on", None):
            flags = ", ".join([o.flag for o in given] + (["--fit-on"] if getattr(args, "fit_on", None) else []))
            raise ValueError(f"{flags} given without --method; choose one of: {', '.join(METHODS)}.")
        return None
    params: dict[str, Any] = {}
    for opt in given:
        if name not in opt.params:
            raise ValueError(f"{opt.flag} does not apply to --method {name}; it applies to "
                             f"{', '.join(opt.params)}.")
        value = getattr(args, opt.dest)
        if opt.flag == "--similarity-param" and float(value).is_integer():
            value = int(value)  # a neighbour count for similarity='knn'
        params[opt.params[name]] = value
    return make_method(name, **params)


def apply_method(method: GapMethod, X: np.ndarray, Y: np.ndarray, *, fit_on: str | Path | None = None,
                 progress: ProgressCallback | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``method`` and return the transformed ``(X_t, Y_t)`` of the pairs ``X, Y``.

    Without ``fit_on`` the method is fitted on these pairs (``fit_transform``: the exact
    transductive embedding for spectral). With ``fit_on`` it is fitted on that file's pairs and
    ``X, Y`` go through the out-of-sample path, as the paper evaluates OT.
    """
    if fit_on is None:
        return method.fit_transform(X, Y, progress=progress)
    from ..embeddings import load_embeddings

    other, report = load_embeddings(fit_on)
    if report.n_skipped:
        print(f"--fit-on {fit_on}: {report.summary()}", file=sys.stderr)
    if other.dim != np.shape(X)[1]:
        raise ValueError(f"--fit-on {fit_on} has d={other.dim} but the evaluated pairs have "
                         f"d={np.shape(X)[1]}: embed both with the same model.")
    method.fit(other.image_embeddings, other.text_embeddings, progress=progress)
    return method.transform(X, Y)


def print_progress(stream: TextIO = sys.stderr, every: float = 0.1) -> ProgressCallback:
    """A progress callback for terminals: one line per ``every`` of the fit, and at its end."""
    last = [-1.0]

    def report(fraction: float, message: str) -> None:
        if fraction >= 1.0 or fraction - last[0] >= every:
            last[0] = fraction
            print(f"  [{fraction:4.0%}] {message}", file=stream, flush=True)

    return report
