"""What every subcommand shares: its input sources, its output formats and its one error rule.

Errors in what a user gives (a bad file, a bad option) end a command with one line on stderr,
``gapviz COMMAND: error: what is wrong and how to fix it``, and exit status 2; never a stack
trace.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np

from ..config import DEMO_DIM, DEMO_N_PAIRS, DEMO_SEED
from ..embeddings import LoadReport, PairedEmbeddings, load_embeddings
from ..simulate import PROFILES, simulate_pairs

#: Exit status of a command stopped by the user's input (argparse uses the same).
EXIT_USER_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input; its message is printed as is."""


def error_line(command: str, err: BaseException | str) -> str:
    """The one error line of a command: ``gapviz evaluate: error: ...``."""
    return f"gapviz {command}: error: {err}"


def load_source(source: str, *, profile: str = "clip", n_pairs: int = DEMO_N_PAIRS,
                dim: int = DEMO_DIM, seed: int = DEMO_SEED) -> tuple[PairedEmbeddings, LoadReport]:
    """``demo`` (the simulated set) or the path of a .npz / .parquet embeddings file."""
    if source == "demo":
        pairs = simulate_pairs(n_pairs, dim, profile=profile, seed=seed)
        return pairs, LoadReport(n_read=pairs.n, n_kept=pairs.n)
    return load_embeddings(source)


def dataset_info(pairs: PairedEmbeddings, report: LoadReport, source: str) -> dict[str, Any]:
    """What the reports say about the data: source, model, N, d, simulated, load summary."""
    info = {"source": source, "model": pairs.model, "n_pairs": pairs.n, "dim": pairs.dim,
            "simulated": pairs.is_simulated, "load": report.summary()}
    if pairs.is_simulated:
        info["imitates"] = pairs.meta.get("imitates", "")
    if report.warnings:
        info["warnings"] = list(report.warnings)
    return info


def add_demo_arguments(p: argparse.ArgumentParser, *, profile: bool = True) -> None:
    """Options of the simulated demo source (``--profile``, ``--n``, ``--dim``, ``--demo-seed``)."""
    if profile:
        p.add_argument("--profile", choices=sorted(PROFILES), default="clip",
                       help="simulated model profile of the demo (default: clip)")
    p.add_argument("--n", type=int, default=DEMO_N_PAIRS,
                   help=f"demo: number of pairs (default {DEMO_N_PAIRS})")
    p.add_argument("--dim", type=int, default=DEMO_DIM,
                   help=f"demo: embedding dimension (default {DEMO_DIM})")
    p.add_argument("--demo-seed", type=int, default=DEMO_SEED,
                   help=f"demo: seed (default {DEMO_SEED})")


def add_format_argument(p: argparse.ArgumentParser,
                        choices: Sequence[str] = ("table", "json", "csv", "markdown")) -> None:
    p.add_argument("--format", choices=list(choices), default="table",
                   help="output format (default: table). JSON writes infinite ratios as Infinity.")


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays (anything else as text)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
