"""Command-line options and output lines for fit/score protocols (``evaluate --method``, ``compare``).

``--protocol transductive|held-out|fit-on`` (default: each method's own), ``--folds``,
``--protocol-seed``, ``--max-fit``, ``--shuffled-control`` and ``--allow-pairing-leak``; ``--fit-on FILE``
implies ``--protocol fit-on``. Every output format says which protocol a number came from and
how many pairs were fitted and scored (:mod:`gapviz.protocols`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from ..config import RECALL_KS
from ..protocols import DEFAULT_FOLDS, DEFAULT_SEED, PROTOCOLS, chance_recall

#: Columns a comparison table gains for the protocol of each run (after the measures).


def add_protocol_arguments(parser: argparse.ArgumentParser, *, fit_on: bool = False,
                           seed_alias: bool = False) -> None:
    """Add the protocol options to ``parser`` (one group).

    Parameters
    ----------
    fit_on : bool
        Also add ``--fit-on FILE`` (``evaluate`` has it among its method options already).
    seed_alias : bool
        Also accept ``--seed`` for ``--protocol-seed`` (``compare``, which has no method seed).
    """
    group = parser.add_argument_group(
        "fit/score protocol",
        "how a method is fitted and scored: transductive (fitted on the scored pairs), held-out "
        "(K-fold cross-fitting: each pair scored by a fit that never saw it, all N pairs scored "
        "in the full pool) or fit-on (fitted on another file's pairs). Default: each method's "
        "own (held-out for methods that read the pairing and for OT/Sinkhorn, transductive for "
        "the others)")
    group.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                       help="one protocol for every method (default: each method's own)")
    group.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                       help=f"held-out: number of cross-fitting folds (default {DEFAULT_FOLDS})")
    seed_flags = ["--protocol-seed", "--seed"] if seed_alias else ["--protocol-seed"]
    group.add_argument(*seed_flags, dest="protocol_seed", type=int, default=DEFAULT_SEED,
                       help=f"seed of the held-out folds and of the shuffled control (default {DEFAULT_SEED})")
    group.add_argument("--max-fit", type=int, default=None, metavar="M",
                       help="held-out and fit-on: fit on at most M pairs (a seeded sample), e.g. to "
                            "keep OT fast; transductive fits use every scored pair")
    group.add_argument("--shuffled-control", action="store_true",
                       help="permute the captions first (seeded): every honest protocol must then "
                            "score at chance")
    group.add_argument("--allow-pairing-leak", action="store_true",
                       help="let a method that reads the pairing (procrustes, vlap) be scored on its "
                            "own fit pairs; its numbers are then marked with a warning")
    if fit_on:
        group.add_argument("--fit-on", metavar="OTHER", default=None,
                           help="fit on the pairs of this embeddings file (.npz or .parquet) and "
                                "score SOURCE's pairs out of sample (implies --protocol fit-on)")


def protocol_from_args(args: argparse.Namespace) -> str | None:
    """The protocol asked for (None: each method's own); ``--fit-on`` implies "fit-on".

    Raises
    ------
    ValueError
        ``--protocol fit-on`` without ``--fit-on FILE``, or ``--fit-on`` with another protocol.
    """
    protocol = getattr(args, "protocol", None)
    fit_on = getattr(args, "fit_on", None)
    if protocol == "fit-on" and not fit_on:
        raise ValueError("--protocol fit-on needs --fit-on FILE: the pairs to fit on.")
    if fit_on and protocol not in (None, "fit-on"):
        raise ValueError(f"--fit-on {fit_on} fits on another file's pairs, which is protocol "
                         f"fit-on, not {protocol}; drop one of the two.")
    return "fit-on" if fit_on else protocol


def load_fit_pairs(path: str):
    """The pairs of ``--fit-on FILE`` (skipped rows reported on stderr)."""
    from ..embeddings import load_embeddings

    pairs, report = load_embeddings(path)
    if report.n_skipped:
        print(f"--fit-on {path}: {report.summary()}", file=sys.stderr)
    return pairs


def protocol_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`gapviz.protocols.fit_and_score` / :func:`gapviz.compare.compare`
    from the parsed options (the fit pairs excepted)."""
    return {"protocol": protocol_from_args(args), "folds": args.folds, "seed": args.protocol_seed,
            "allow_pairing_leak": args.allow_pairing_leak,
            "shuffled": args.shuffled_control, "max_fit": args.max_fit}


def chance_line(n_scored: int, ks: Sequence[int] = RECALL_KS) -> str:
    """``chance in a pool of 2N = 300 items: R@5 0.017 (SE 0.010), ...``."""
    parts = []
    for k in ks:
        c = chance_recall(n_scored, k)
        parts.append(f"R@{k} {c.level:.3f} (SE {c.se:.3f})")
    return f"chance in a mixed pool of 2N = {2 * n_scored} items: " + ", ".join(parts)


def chance_record(n_scored: int, ks: Sequence[int] = RECALL_KS) -> dict[str, dict[str, float]]:
    """JSON form of the mixed-pool chance levels: ``{"R@5": {"level": ..., "se": ...}, ...}``."""
    out = {}
    for k in ks:
        c = chance_recall(n_scored, k)
        out[f"R@{k}"] = {"level": c.level, "se": c.se}
    return out


