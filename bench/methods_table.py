"""Before/after table of every gap-closing method on the simulated demo (markdown, for the README).

    python bench/methods_table.py                          # sim-CLIP, both protocols (~3 min)
    python bench/methods_table.py --profiles clip siglip llm2clip
    python bench/methods_table.py --protocol heldout --methods orig spectral ot

Protocols
---------
``heldout`` (the paper's protocol for OT): 2 x N pairs are simulated from one profile (one
simulated model); every method is fitted on the first N pairs and the table measures the other
N, which the method never saw (its out-of-sample path: Nystrom for spectral, nearest fitted
image plus displacement for OT).
``transductive``: each method is fitted on the demo's N pairs themselves and measured on them
(``fit_transform``): the exact spectral embedding, OT's barycentric mapping. No method uses the
pairing here except ``procrustes`` and ``vlap``, which are then fitted on the very pairs they
are scored on (marked).

Each method runs with its defaults (spectral and PCA: k = 60; OT: reg_lap = 100, reg_src = 1;
Sinkhorn: reg = 0.05). Columns: measures of ``gapviz.measures.measure_gap``, titled and
printed by ``gapviz.measure_info`` (its "readme" cell style: fewer digits, ∞). Fit times go to
stderr only (the machine is shared, so they drift; see bench/bench_methods.py for timings
against targets).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gapviz.measure_info import format_value, label  # noqa: E402
from gapviz.measures import measure_gap  # noqa: E402
from gapviz.methods import METHODS, make_method  # noqa: E402
from gapviz.simulate import PROFILES, simulate_pairs  # noqa: E402

COLUMNS = ("ITR", "TIR", "IMR", "TMR", "R@5", "R@10", "R@20", "paired_cosine_distance", "frechet")
#: Methods that learn from the pairing (row i of X with row i of Y).
USES_PAIRS = {"procrustes", "vlap"}


def run(profile: str, protocol: str, methods: list[str], n: int, dim: int, seed: int,
        verbose: bool = True) -> list[dict]:
    """Measure each method on one profile under one protocol; rows of metrics and fit seconds."""
    if protocol == "heldout":
        pairs = simulate_pairs(2 * n, dim, profile=profile, seed=seed)
        Xf, Yf = pairs.image_embeddings[:n], pairs.text_embeddings[:n]
        Xe, Ye = pairs.image_embeddings[n:], pairs.text_embeddings[n:]
    else:
        pairs = simulate_pairs(n, dim, profile=profile, seed=seed)
        Xf = Xe = pairs.image_embeddings
        Yf = Ye = pairs.text_embeddings
    rows = []
    for name in methods:
        method = make_method(name)
        t0 = time.perf_counter()
        if protocol == "heldout":
            method.fit(Xf, Yf)
            fit_s = time.perf_counter() - t0
            Xt, Yt = method.transform(Xe, Ye)
        else:
            Xt, Yt = method.fit_transform(Xf, Yf)
            fit_s = time.perf_counter() - t0
        metrics = measure_gap(Xt, Yt).metrics
        rows.append({"method": name, "fit_s": fit_s, **metrics})
        if verbose:
            itr, r5 = (format_value(metrics[k], "readme") for k in ("ITR", "R@5"))
            print(f"  {profile:9s} {protocol:12s} {name:12s} fit {fit_s:6.1f} s  ITR {itr}  R@5 {r5}",
                  file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], protocol: str) -> str:
    head = "| method | " + " | ".join(label(key) for key in COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        name = f"`{r['method']}`"
        if protocol == "transductive" and r["method"] in USES_PAIRS:
            name += " †"
        cells = " | ".join(format_value(r[key], "readme") for key in COLUMNS)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2500, help="pairs measured (default 2500, the demo)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profiles", nargs="+", default=["clip"], choices=sorted(PROFILES))
    ap.add_argument("--protocol", choices=("heldout", "transductive", "both"), default="both")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args(argv)
    protocols = ("heldout", "transductive") if args.protocol == "both" else (args.protocol,)
    for profile in args.profiles:
        for protocol in protocols:
            rows = run(profile, protocol, args.methods, args.n, args.dim, args.seed)
            prof = PROFILES[profile]
            where = (f"fitted on {args.n:,} other pairs of the same simulated model, measured on "
                     f"{args.n:,} unseen pairs" if protocol == "heldout" else
                     f"fitted on and measured on the demo's {args.n:,} pairs")
            print(f"\n**{prof.name}** (simulated; imitates {prof.imitates}), d = {args.dim}, "
                  f"{protocol}: {where}.\n")
            print(markdown(rows, protocol))
            if protocol == "transductive" and USES_PAIRS & set(args.methods):
                print("\n† uses the pairing, here of the very pairs it is scored on.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
