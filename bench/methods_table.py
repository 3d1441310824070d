"""Before/after table of every gap-closing method on the simulated demo (markdown, for the README).

    python bench/methods_table.py                          # sim-CLIP, all three protocols
    python bench/methods_table.py --profiles clip siglip llm2clip
    python bench/methods_table.py --protocol held-out --methods orig spectral ot

Protocols (``gapviz.protocols``)
--------------------------------
``held-out``: 5-fold cross-fitting on the demo's N pairs (seed 0): every pair is transformed by
a fit on the other folds (its out-of-sample path) and all N are scored in the one mixed pool.
``fit-on``: 2 x N pairs are simulated from one profile; every method is fitted on the first N
and the table scores the other N (the paper's protocol for OT).
``transductive``: fitted on the scored pairs themselves (``fit_transform``). Procrustes and
VLAP read the pairing, so here they are scored on pairs they were fitted on (marked †, and
asked for explicitly: ``allow_pairing_leak``).

Each method runs with its defaults (spectral and PCA: k = 60; OT: reg_lap = 100, reg_src = 1,
fitted on a seeded subsample of 500 pairs; Sinkhorn: reg = 0.05 on 1,000). Columns: measures
of ``gapviz.measures.measure_gap``, titled and printed by ``gapviz.measure_info`` (its "readme"
cell style: fewer digits, ∞). Fit times go to stderr only (the machine is shared, so they
drift; see bench/bench_methods.py for timings against targets).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gapviz.measure_info import format_value, label  # noqa: E402
from gapviz.methods import METHODS  # noqa: E402
from gapviz.runs import RunData, Runner, planned_spec  # noqa: E402
from gapviz.simulate import PROFILES, simulate_pairs  # noqa: E402

COLUMNS = ("ITR", "TIR", "IMR", "TMR", "R@5", "R@10", "R@20", "paired_cosine_distance", "frechet")


def run(profile: str, protocol: str, methods: list[str], n: int, dim: int, seed: int,
        verbose: bool = True) -> list[dict]:
    """Measure each method on one profile under one protocol; rows of metrics and fit seconds."""
    fit_on = None
    if protocol == "fit-on":
        pairs = simulate_pairs(2 * n, dim, profile=profile, seed=seed)
        fit_on = RunData.of_arrays(pairs.image_embeddings[:n], pairs.text_embeddings[:n],
                                   label=f"{n:,} other pairs")
        data = RunData.of_arrays(pairs.image_embeddings[n:], pairs.text_embeddings[n:])
    else:
        data = RunData.of(simulate_pairs(n, dim, profile=profile, seed=seed))
    rows = []
    runner = Runner()  # the app's and the command line's path to a run
    for name in methods:
        t0 = time.perf_counter()
        spec, _ = planned_spec(name, None, data.n, data.dim, protocol=protocol,
                               n_fit_pairs=None if fit_on is None else fit_on.n,
                               fit_on=None if fit_on is None else fit_on.key, allow_leak=True)
        result = runner.run(spec, data, fit_on=fit_on)
        metrics = result.metrics
        fit_s = time.perf_counter() - t0
        rows.append({"method": name, "fit_s": fit_s, "leak": bool(result.provenance.warning),
                     **metrics})
        if verbose:
            itr, r5 = (format_value(metrics[k], "readme") for k in ("ITR", "R@5"))
            print(f"  {profile:9s} {protocol:12s} {name:12s} fit+score {fit_s:6.1f} s  ITR {itr}  "
                  f"R@5 {r5}", file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], protocol: str) -> str:
    head = "| method | " + " | ".join(label(key) for key in COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        name = f"`{r['method']}`"
        if r["leak"]:
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
    ap.add_argument("--protocol", choices=("held-out", "fit-on", "transductive", "all"),
                    default="all")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args(argv)
    protocols = (("held-out", "fit-on", "transductive") if args.protocol == "all"
                 else (args.protocol,))
    for profile in args.profiles:
        for protocol in protocols:
            rows = run(profile, protocol, args.methods, args.n, args.dim, args.seed)
            prof = PROFILES[profile]
            where = {
                "held-out": f"5-fold cross-fit on the demo's {args.n:,} pairs (seed 0), every pair "
                            "scored by a fit that never saw it",
                "fit-on": f"fitted on {args.n:,} other pairs of the same simulated model, "
                          f"{args.n:,} unseen pairs scored",
                "transductive": f"fitted on and scored on the demo's {args.n:,} pairs",
            }[protocol]
            print(f"\n**{prof.name}** (simulated; imitates {prof.imitates}), d = {args.dim}, "
                  f"{protocol}: {where}.\n")
            print(markdown(rows, protocol))
            if any(r["leak"] for r in rows):
                print("\n† reads the pairing, here of the very pairs it is scored on (asked for "
                      "explicitly; the app and the command line refuse it otherwise).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
