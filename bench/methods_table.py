"""Before/after table of every gap-closing method on the simulated demo (markdown, for the README).

    python bench/methods_table.py                          # sim-CLIP, all three protocols
    python bench/methods_table.py --profiles clip siglip llm2clip
    python bench/methods_table.py --protocol held-out --methods orig spectral ot
    python bench/methods_table.py --protocol held-out --methods ot:direction=image_to_text

A method may carry parameters, ``name:key=value,key=value`` (the variants the README shows:
the paper's spectral graph, each OT direction, Sinkhorn's continuous map for new rows, and the
grid search inside each fit are run by default under held-out).

Protocols (``gapviz.protocols``)
--------------------------------
``held-out``: 5-fold cross-fitting on the demo's N pairs (seed 0): every pair is transformed by
a fit on the other folds (its out-of-sample path) and all N are scored in the one mixed pool.
``fit-on``: every method is fitted on N other pairs of the same simulated model
(``simulate_pairs(..., pair_seed=0)``) and the table scores the demo's N pairs.
``paper``: the paper's setting (``gapviz.protocols.paper_setting``): fitted on 5,000 other
pairs of the same simulated model, OT and Sinkhorn on all of them (no ``fit_size`` subsample).
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
from gapviz.protocols import paper_setting  # noqa: E402
from gapviz.runs import RunData, Runner, planned_spec  # noqa: E402
from gapviz.simulate import PROFILES, simulate_pairs  # noqa: E402

COLUMNS = ("ITR", "TIR", "IMR", "TMR", "R@5", "R@10", "R@20", "paired_cosine_distance", "frechet")


def run(profile: str, protocol: str, methods: list[str], n: int, dim: int, seed: int,
        verbose: bool = True) -> list[dict]:
    """Measure each method on one profile under one protocol; rows of metrics and fit seconds."""
    fit_on = None
    scored = simulate_pairs(n, dim, profile=profile, seed=seed)
    data = RunData.of(scored)
    if protocol in ("fit-on", "paper"):
        fit = (paper_setting(scored)[0] if protocol == "paper" else
               simulate_pairs(n, dim, profile=profile, seed=seed, pair_seed=0))
        fit_on = RunData.of(fit)
    rows = []
    runner = Runner()  # the app's and the command line's path to a run
    for entry in methods:
        name, chosen = parse_method(entry)
        if protocol == "paper" and "fit_size" in METHODS[name]().get_params():
            chosen = {"fit_size": fit_on.n, **chosen}
        t0 = time.perf_counter()
        spec, _ = planned_spec(name, chosen or None, data.n, data.dim,
                               protocol="fit-on" if protocol == "paper" else protocol,
                               n_fit_pairs=None if fit_on is None else fit_on.n,
                               fit_on=None if fit_on is None else fit_on.key, allow_leak=True)
        result = runner.run(spec, data, fit_on=fit_on)
        metrics = result.metrics
        fit_s = time.perf_counter() - t0
        rows.append({"method": entry, "fit_s": fit_s, "leak": bool(result.provenance.warning),
                     **metrics})
        if verbose:
            itr, r5 = (format_value(metrics[k], "readme") for k in ("ITR", "R@5"))
            print(f"  {profile:9s} {protocol:12s} {entry:12s} fit+score {fit_s:6.1f} s  ITR {itr}  "
                  f"R@5 {r5}", file=sys.stderr, flush=True)
    return rows


#: Variants shown beside the defaults under held-out (``name:key=value,...``).
VARIANTS = ("spectral:affinity=cosine", "ot:direction=image_to_text",
            "ot:direction=text_to_image", "ot:tune=true", "sinkhorn:direction=image_to_text",
            "sinkhorn:out_of_sample=continuous", "sinkhorn:tune=true")


def parse_method(entry: str) -> tuple[str, dict]:
    """``"ot:direction=both,tune=true"`` -> ``("ot", {"direction": "both", "tune": True})``."""
    name, _, rest = entry.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = {"true": True, "false": False}.get(value, value)
        for kind in (int, float):
            try:
                params[key] = kind(value)
                break
            except ValueError:
                pass
    return name, params


def markdown(rows: list[dict], protocol: str) -> str:
    head = "| method | " + " | ".join(label(key) for key in COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        base, params = parse_method(r["method"])
        name = f"`{base}`" + (" (" + ", ".join(f"{k} = {v}" for k, v in params.items()) + ")"
                              if params else "")
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
    ap.add_argument("--protocol", choices=("held-out", "fit-on", "transductive", "paper", "all"),
                    default="all")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="registry names, each optionally name:key=value,... (default: every "
                         "method; under held-out also the variants)")
    args = ap.parse_args(argv)
    protocols = (("held-out", "fit-on", "transductive", "paper") if args.protocol == "all"
                 else (args.protocol,))
    for profile in args.profiles:
        for protocol in protocols:
            methods = args.methods or (
                ["orig", "ot", "sinkhorn"] if protocol == "paper" else
                list(METHODS) + (list(VARIANTS) if protocol == "held-out" else []))
            bad = [m for m in methods if parse_method(m)[0] not in METHODS]
            if bad:
                ap.error(f"unknown method(s) {bad}; choose from {list(METHODS)}")
            rows = run(profile, protocol, methods, args.n, args.dim, args.seed)
            prof = PROFILES[profile]
            where = {
                "held-out": f"5-fold cross-fit on the demo's {args.n:,} pairs (seed 0), every pair "
                            "scored by a fit that never saw it",
                "fit-on": f"fitted on {args.n:,} other pairs of the same simulated model, "
                          f"the demo's {args.n:,} pairs scored",
                "paper": "the paper's setting: fitted on 5,000 other pairs of the same simulated "
                         f"model (OT and Sinkhorn on all 5,000), the demo's {args.n:,} pairs scored",
                "transductive": f"fitted on and scored on the demo's {args.n:,} pairs",
            }[protocol]
            print(f"\n**{prof.name}** (simulated; imitates {prof.imitates}; "
                  f"{prof.reference.sentence.removeprefix('simulated; ')}), d = {args.dim}, "
                  f"{protocol}: {where}.\n")
            print(markdown(rows, protocol))
            if any(r["leak"] for r in rows):
                print("\n† reads the pairing, here of the very pairs it is scored on (asked for "
                      "explicitly; the app and the command line refuse it otherwise).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
