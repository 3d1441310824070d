"""What every subcommand shares: its input sources, its output formats and its one error rule.

Errors in what a user gives (a bad file, a bad option) end a command with one line on stderr,
``gapviz COMMAND: error: what is wrong and how to fix it``, and exit status 2; never a stack
trace. What the machine could not do (out of memory, a full disk) ends it the same way with
status 1. Text from files in those lines shows control characters as visible escapes.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import numpy as np

from ..config import DEMO_DIM, DEMO_N_PAIRS, DEMO_SEED
from ..embeddings import LoadReport, PairedEmbeddings, load_embeddings
from ..safety import terminal_text
from ..simulate import PROFILES, profile_statistics, simulate_pairs

#: Exit status of a command the machine could not carry out (out of memory, a full disk).
EXIT_FAILURE = 1
#: Exit status of a command stopped by the user's input (argparse uses the same).
EXIT_USER_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input; its message is printed as is."""


def error_line(command: str, err: BaseException | str) -> str:
    """The one error line of a command: ``gapviz evaluate: error: ...`` (a line break or a
    terminal escape in the message, from a file name, shows as a visible escape)."""
    return f"gapviz {command}: error: {terminal_text(err)}"


#: Bytes the demo's simulation holds at its peak per number of its matrices (N x d float64):
#: measured 5.5-7.4 matrices at the peak, and the report's measures need their own copies.
DEMO_PEAK_MATRICES = 10
#: Bytes per simulated pair outside the matrices (id, caption, cluster, Python objects).
DEMO_BYTES_PER_PAIR = 1024


def demo_bytes(n_pairs: int, dim: int) -> int:
    """About how much memory simulating and measuring a demo of ``n_pairs`` x ``dim`` takes."""
    return DEMO_PEAK_MATRICES * 8 * n_pairs * dim + DEMO_BYTES_PER_PAIR * n_pairs


def available_memory() -> int | None:
    """Bytes this process can still allocate: the kernel's estimate of available memory,
    lowered to what a cgroup limit (a container) leaves; None where neither is known."""
    known = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    known.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if limit.isdigit():
            known.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    if not known:
        try:
            known.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (AttributeError, OSError, ValueError):
            return None
    return min(known)


def _human_bytes(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:,.1f} PiB"


def check_demo_size(n_pairs: int, dim: int) -> None:
    """Refuse, before allocating anything, a demo size that is not valid or cannot fit in memory.

    Raises
    ------
    UserError
        ``--n`` or ``--dim`` below 2, or a simulation needing more than the available memory
        (:func:`demo_bytes` against :func:`available_memory`).
    """
    if n_pairs < 2 or dim < 2:
        raise UserError(f"the demo needs --n and --dim of at least 2, got --n {n_pairs} and "
                        f"--dim {dim}.")
    need, have = demo_bytes(n_pairs, dim), available_memory()
    if have is not None and need > have:
        raise UserError(
            f"a demo of {n_pairs:,} pairs x {dim:,} dimensions needs about {_human_bytes(need)} "
            f"of memory, more than the {_human_bytes(have)} available; lower --n or --dim "
            f"(the default is {DEMO_N_PAIRS:,} x {DEMO_DIM}).")


def load_source(source: str, *, profile: str = "clip", n_pairs: int = DEMO_N_PAIRS,
                dim: int = DEMO_DIM, seed: int = DEMO_SEED) -> tuple[PairedEmbeddings, LoadReport]:
    """``demo`` (the simulated set, its size checked first: :func:`check_demo_size`) or the
    path of a .npz / .parquet embeddings file."""
    if source == "demo":
        check_demo_size(n_pairs, dim)
        pairs = simulate_pairs(n_pairs, dim, profile=profile, seed=seed)
        return pairs, LoadReport(n_read=pairs.n, n_kept=pairs.n)
    return load_embeddings(source)


def dataset_info(pairs: PairedEmbeddings, report: LoadReport, source: str) -> dict[str, Any]:
    """What the reports say about the data: source, model, N, d, simulated, load summary."""
    info = {"source": source, "model": pairs.model, "n_pairs": pairs.n, "dim": pairs.dim,
            "images": pairs.n_images, "captions": pairs.convention,
            "simulated": pairs.is_simulated, "load": report.summary()}
    if pairs.is_simulated:
        info["imitates"] = pairs.meta.get("imitates", "")
        profile = PROFILES.get(pairs.meta.get("profile"))
        if profile is not None:
            info["statistics"] = {
                "matched_to": profile.reference.sentence,
                "measured": profile_statistics(pairs.image_embeddings, pairs.text_embeddings),
                "target": dict(profile.reference.figures)}
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
