"""``gapviz evaluate SOURCE``: the gap report of the demo or an embeddings file, and with
``--method`` before and after closing the gap."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


from .. import tables
from ..safety import terminal_text
from ..measures import measure_gap, normalize_rows, paired_significance
from .anatomy_options import render_anatomy
from .common import add_demo_arguments, add_format_argument, dataset_info, json_default, load_source

def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the command line."""
    from .method_options import add_method_arguments

    ev = sub.add_parser("evaluate", help="print the gap report of an embeddings file or the demo",
                        description="Gap report of `demo` (simulated) or a .npz/.parquet embeddings "
                                    "file; with --method, before and after closing the gap.")
    ev.add_argument("source", help="'demo' or the path of a .npz / .parquet embeddings file")
    add_format_argument(ev)
    ev.add_argument("--separability", action="store_true",
                    help="also fit a linear classifier telling the modalities apart (slower)")
    add_demo_arguments(ev)
    add_method_arguments(ev)
    from .protocol_options import add_protocol_arguments

    add_protocol_arguments(ev)
    from .anatomy_options import add_anatomy_arguments

    add_anatomy_arguments(ev)
    ev.add_argument("--sweep", choices=["n", "captions"], default=None,
                    help="how the numbers depend on the pool: n = every measure on seeded "
                         "subsamples from 250 pairs (images) up to all, 3 draws each, with the "
                         "mutual-kNN alignment and a flag on measures that drift with N; "
                         "captions = with the first, a random and all captions per image "
                         "(files with several captions per image); with --method, the method's "
                         "embeddings beside the raw ones")
    ev.add_argument("--sweep-draws", type=int, default=3, metavar="K",
                    help="--sweep n: draws per size (default 3)")
    ev.add_argument("--figures", metavar="DIR",
                    help="also write the figures (the pool's PCA raw and after the method, the "
                         "distance histograms) with titles and how they were obtained, into DIR "
                         "(created; an existing file is never replaced)")
    ev.add_argument("--figure-format", choices=["svg", "pdf", "png"], default="svg",
                    help="format of --figures (default svg; needs kaleido and Chrome/Chromium)")
    ev.add_argument("--recipe", metavar="FILE",
                    help="replay a recipe saved on a page of the app (\"Save recipe\"): the same "
                         "run on SOURCE, which must be the page's data (checked by content hash); "
                         "prints the numbers the page showed")
    ev.set_defaults(func=cmd_evaluate)
    return ev


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..protocols import paper_setting, shuffle_pairs
    from ..runs import RunData, Runner
    from .method_options import method_from_args, print_progress
    from .anatomy_options import anatomy_section, check_anatomy_arguments
    from .protocol_options import chance_record, load_fit_pairs, protocol_kwargs

    check_anatomy_arguments(args)
    if getattr(args, "recipe", None):
        return cmd_replay(args)

    pairs, report = load_source(args.source, profile=args.profile, n_pairs=args.n, dim=args.dim,
                                seed=args.demo_seed)
    method = method_from_args(args)
    paper_fit = None
    if getattr(args, "paper_setting", False):
        if method is None or getattr(args, "fit_on", None) or args.protocol not in (None, "fit-on"):
            raise ValueError("--paper-setting fits a method on dedicated pairs: give --method "
                             "NAME, and neither --fit-on nor another --protocol.")
        paper_fit, pairs, how = paper_setting(pairs, seed=args.protocol_seed)
        if "fit_size" in method.get_params() and getattr(args, "method_fit_size", None) is None:
            method.set_params(fit_size=paper_fit.n)  # the paper fits on all 5,000, no subsample
        args.protocol = "fit-on"
        args.fit_on = "paper setting"
    info = dataset_info(pairs, report, args.source)
    X, Y = normalize_rows(pairs.image_embeddings), normalize_rows(pairs.text_embeddings)
    if paper_fit is not None:
        info["paper_setting"] = how
    protocol = protocol_kwargs(args) if method is not None else None
    if protocol is None and (args.protocol or args.shuffled_control or args.allow_pairing_leak):
        raise ValueError("--protocol, --shuffled-control and --allow-pairing-leak apply to a "
                         "method; add --method NAME.")
    groups = pairs.group_ids
    if groups is not None and args.anatomy:
        raise ValueError("--anatomy measures one caption per image for now; these pairs have "
                         f"several per image ({pairs.convention}). Embed them with --caption "
                         "first (or random) for the anatomy.")
    data = RunData.of_arrays(X, Y, label=args.source, groups=groups)
    if protocol is not None and protocol["shuffled"]:
        # ORIG is measured on the same permuted pairs the method is scored on (the runner
        # permutes the pairs it is given with the same seed).
        X, Y, _ = shuffle_pairs(X, Y, seed=protocol["seed"])
    orig_report = measure_gap(X, Y, separability=args.separability, groups=groups)
    orig = orig_report.metrics
    if groups is not None:  # every caption of an image relevant
        from ..anatomy import grouped_ndcg

        orig["NDCG@10"] = grouped_ndcg(X, Y, groups)
    columns = {"ORIG": orig}
    anatomy_inputs: dict[str, Any] = {}
    extra: dict[str, Any] = {"dataset": info}
    if method is not None:
        fit_on = getattr(args, "fit_on", None)
        other = None
        if fit_on:
            fit_pairs = paper_fit if paper_fit is not None else load_fit_pairs(fit_on)
            other = RunData.of_arrays(normalize_rows(fit_pairs.image_embeddings),
                                      normalize_rows(fit_pairs.text_embeddings), label=fit_on)
            extra["fit_on"] = {"source": fit_on}
        spec = method_spec(method, protocol, fit_on=other.key if other is not None else None)
        result = Runner().run(spec, data, fit_on=other, progress=print_progress(sys.stderr))
        prov = result.provenance.to_dict()
        extra["protocol"] = prov
        extra["chance"] = chance_record(pairs.n)
        if result.scores is not None:
            extra["scores"] = (f"ranks on corrected scores ({result.scores.name}; each pair's "
                               "terms from the banks of its own fit); the embeddings and their "
                               "distances are unchanged")
        if prov["warning"]:
            print(f"gapviz evaluate: warning: {prov['warning']}", file=sys.stderr)
        Xt, Yt = result.images, result.texts
        after_report = measure_gap(Xt, Yt, separability=args.separability, scores=result.scores,
                                   groups=result.groups)
        after = after_report.metrics
        if groups is not None:
            from ..anatomy import grouped_ndcg

            after["NDCG@10"] = grouped_ndcg(Xt, Yt, groups)
        anatomy_inputs = {"method": method, "transformed": (Xt, Yt), "after": after_report,
                          "fits": result.fits, "fold_of": result.fold_of, "scores": result.scores}
        label = method.name.upper()
        columns[label] = after
        extra["method"] = method.describe()
        extra["metrics_orig"] = orig
        extra["significance"] = [vars(t) for t in paired_significance(X, Y, Xt, Yt)]
        metrics = after
    else:
        metrics = orig
    if args.anatomy:
        section = anatomy_section(args, pairs, X, Y, orig_report, **anatomy_inputs)
        for name, values in section.pop("columns").items():
            columns[name].update(values)  # the same dicts as metrics / metrics_orig
        extra.update(section)
    if getattr(args, "sweep", None):
        extra["sweep"] = _sweep(args, X, Y, groups, orig_report, method,
                                result if method is not None else None)
    if args.figures:
        after = anatomy_inputs.get("transformed")
        extra["figures"] = write_figures(
            args.figures, args.figure_format, pairs, X, Y, *(after or (None, None)),
            after=_after_title(spec, result.provenance) if method is not None else None)
    print(_render_report(columns, args.format, info, extra, metrics), end="")
    return 0


def _after_title(spec: Any, provenance: Any) -> str:
    from ..methods import describe_run

    return f"{describe_run(spec.method, spec.param_dict)} · {provenance.summary()}"


def write_figures(folder: str, fmt: str, pairs: Any, X: Any, Y: Any, Xt: Any = None, Yt: Any = None,
                  *, after: str | None = None) -> list[str]:
    """The report's figures as files in ``folder`` (created): the pool's PCA raw and after the
    method, and the distance histograms; titles carry how each was obtained. An existing file
    is never replaced (an error says which)."""
    import os

    from .. import exports, figures
    from ..views import view_of

    source = f"{pairs.model or 'embeddings'} · {pairs.n:,} pairs"
    raw = view_of(X, Y)
    shown = [("pool-raw", figures.gap_scatter(raw.projection, ids=pairs.ids, captions=pairs.captions,
                                              title=f"Raw embeddings (PCA) · {source}"))]
    panels = [("Raw: true pairs vs all combinations", raw.paired, raw.all_pairs)]
    if Xt is not None and after is not None:
        closed = view_of(Xt, Yt)
        shown.append(("pool-after", figures.gap_scatter(closed.projection, ids=pairs.ids,
                                                        captions=pairs.captions,
                                                        title=f"After: {after}")))
        panels.append(("After the method: true pairs vs all", closed.paired, closed.all_pairs))
    hist = figures.distance_histogram(panels)
    hist.update_layout(title=f"Cosine distances · {source}")
    shown.append(("distances", hist))
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, fig in shown:
        path = os.path.join(folder, f"{name}.{fmt}")
        data = exports.figure_image(fig, fmt)
        try:
            with open(path, "xb") as fh:  # never replace a file that is there
                fh.write(data)
        except FileExistsError:
            raise FileExistsError(f"{path} exists; give --figures an empty folder (nothing was "
                                  "replaced).") from None
        written.append(path)
    return written


def cmd_replay(args: argparse.Namespace) -> int:
    """``--recipe FILE``: the run of a page's recipe on SOURCE, as the page computed it (the
    same runner, on the pairs as loaded), after checking SOURCE is the page's data."""
    from ..recipes import replay

    if args.method or args.protocol or args.shuffled_control or args.allow_pairing_leak:
        raise ValueError("--recipe says the method and protocol itself; drop --method, "
                         "--protocol, --shuffled-control and --allow-pairing-leak.")
    recipe = _read_recipe(args.recipe)
    if recipe.page == "compare":
        raise ValueError("this is a Compare recipe: replay it with `gapviz compare SOURCE ... "
                         "--recipe FILE`.")
    demo = recipe.demo or {}
    pairs, report = load_source(args.source, profile=demo.get("profile", args.profile),
                                n_pairs=demo.get("n", args.n), dim=demo.get("dim", args.dim),
                                seed=demo.get("seed", args.demo_seed))
    fit_on = None
    if recipe.run is not None and recipe.run.fit_on is not None:
        if not getattr(args, "fit_on", None):
            raise ValueError("the recipe's run is fitted on other pairs: give them with --fit-on FILE.")
        from .protocol_options import load_fit_pairs

        fit_on = load_fit_pairs(args.fit_on)
    out = replay(recipe, pairs, fit_on=fit_on)
    info = dataset_info(pairs, report, args.source)
    columns = {"ORIG": out["raw"]}
    extra: dict[str, Any] = {"dataset": info, "recipe": {"page": recipe.page, "data": recipe.data}}
    metrics = out["raw"]
    if "after" in out:
        from ..methods import make_method

        columns[recipe.run.method.upper()] = metrics = out["after"]
        extra["protocol"] = out["provenance"]
        extra["method"] = make_method(recipe.run.method, **recipe.run.param_dict).describe()
        extra["metrics_orig"] = out["raw"]
        extra["run"] = out["run"]
    if args.figures:
        after = out.get("run_object")
        extra["figures"] = write_figures(
            args.figures, args.figure_format, pairs, pairs.image_embeddings, pairs.text_embeddings,
            after.images if after is not None else None, after.texts if after is not None else None,
            after=_after_title(recipe.run, after.provenance) if after is not None else None)
    print(_render_report(columns, args.format, info, extra, metrics), end="")
    return 0


def _read_recipe(path: str):
    from ..recipes import Recipe

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1_000_001)
    except OSError as err:
        raise ValueError(f"cannot read the recipe {path!r}: {err.strerror}.") from None
    if len(text) > 1_000_000:
        raise ValueError(f"{path!r} is not a recipe (over 1 MB); save one with a page's "
                         "\"Save recipe\" button.")
    return Recipe.from_json(text)


def method_spec(method: Any, protocol: dict[str, Any], *, fit_on: str | None = None):
    """The run of a method built from the options (its parameters that differ from the
    defaults) under the protocol options (:func:`protocol_options.protocol_kwargs`)."""
    from ..methods import method_params
    from ..runs import RunSpec

    defaults = method_params(method.name)
    params = {k: v for k, v in method.get_params().items() if defaults.get(k, object()) != v}
    return RunSpec.make(method.name, params, protocol["protocol"], folds=protocol["folds"],
                        seed=protocol["seed"], fit_on=fit_on,
                        allow_leak=protocol["allow_pairing_leak"], shuffled=protocol["shuffled"],
                        max_fit=protocol["max_fit"])


def _render_report(columns: dict[str, dict[str, float]], fmt: str, info: dict[str, Any],
                   extra: dict[str, Any], metrics: dict[str, float]) -> str:
    if fmt == "json":
        payload = {**extra, "metrics": metrics}
        return json.dumps(payload, indent=2, default=json_default) + "\n"
    if fmt in ("csv", "markdown"):
        return tables.render(columns, fmt) + _protocol_rows(extra, fmt) + render_anatomy(extra, fmt, metrics)
    # the model name and the load report come from the file: one line each, escapes visible
    lines = [f"gapviz report: {terminal_text(info['model'] or info['source'])}   "
             f"N = {info['n_pairs']} pairs"
             + (f" of {info['images']} images" if info["images"] != info["n_pairs"] else "")
             + f", d = {info['dim']}; {info['captions']}"]
    if info["simulated"]:
        lines.append(f"SIMULATED DATA (imitates {info.get('imitates', 'a real model')}; "
                     "not that model's output)")
    lines.append(terminal_text(info["load"]))
    lines += [f"warning: {terminal_text(w)}" for w in info.get("warnings", [])]
    if "method" in extra:
        params = ", ".join(f"{k}={v}" for k, v in extra["method"]["params"].items())
        lines.append(f"method: {extra['method']['method']}({params})")
        if "fit_on" in extra:
            lines.append(f"fitted on the pairs of {extra['fit_on']['source']}, applied out of sample")
        lines += _protocol_lines(extra)
    lines.append("")
    body = tables.render(columns, "table")
    if "significance" in extra:
        body += "\npaired distances, ORIG vs after (paired t-test; Wilcoxon signed-rank):\n"
        for t in extra["significance"]:
            body += (f"  {t['distance']:<6} mean {t['mean_before']:.4f} -> {t['mean_after']:.4f}   "
                     f"t p = {t['t_pvalue']:.3g}   Wilcoxon p = {t['wilcoxon_pvalue']:.3g}\n")
    body += render_anatomy(extra, "table", metrics)
    if "sweep" in extra:
        body += render_sweep(extra["sweep"])
    if extra.get("figures"):
        body += "figures written: " + ", ".join(extra["figures"]) + "\n"
    return "\n".join(lines) + "\n" + body


def _protocol_lines(extra: dict[str, Any]) -> list[str]:
    """Text table: how the method's column was fitted and scored, and chance in its pool."""
    from ..protocols import Provenance
    from .protocol_options import chance_line

    prov = {k: v for k, v in extra["protocol"].items() if k != "pool_size"}
    lines = [f"protocol: {Provenance(**prov).summary()}", chance_line(prov["n_scored"])]
    if extra.get("scores"):
        lines.append(f"scores: {extra['scores']}")
    return lines


def _protocol_rows(extra: dict[str, Any], fmt: str) -> str:
    """CSV / markdown: rows for the protocol, n_fit, n_scored (ORIG: no fit) and R@K chance."""
    if "protocol" not in extra:
        return ""
    from ..tables import provenance_cells

    protocol, n_fit, n_scored = provenance_cells(extra["protocol"])
    rows = [["protocol", "none (no fit)", protocol], ["n_fit", "0", n_fit],
            ["n_scored", n_scored, n_scored]]
    rows += [[f"chance {k}", f"{c['level']:.6g}", f"{c['level']:.6g}"] for k, c in extra["chance"].items()]
    if fmt == "csv":
        import csv
        import io

        from ..safety import csv_rows

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(csv_rows(rows))
        return buf.getvalue()
    return "".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |\n" for r in rows)


def _sweep(args: argparse.Namespace, X, Y, groups, orig_report, method, run) -> dict[str, Any]:
    """``--sweep``: the pool-size or caption sweep of the raw pairs (and the method's run)."""
    from ..sensitivity import caption_sweep, pool_size_sweep
    from .method_options import print_progress

    embeddings = [("raw", X, Y, None)]
    reports = {"raw": orig_report}
    if run is not None:
        label = method.name
        embeddings.append((label, run.images, run.texts, run.scores))
        reports[label] = run.report
    if args.sweep == "captions":
        if groups is None:
            raise ValueError("--sweep captions needs several captions per image (embed with "
                             "--caption all); these pairs have one each.")
        result = caption_sweep(embeddings, groups, progress=print_progress(sys.stderr))
    else:
        if args.sweep_draws < 1:
            raise ValueError(f"--sweep-draws must be at least 1, got {args.sweep_draws}.")
        result = pool_size_sweep(embeddings, groups=groups, draws=args.sweep_draws,
                                 reports=reports, progress=print_progress(sys.stderr))
    return result.to_json()


def render_sweep(sweep: dict[str, Any]) -> str:
    """Text table of a sweep: per label and size (or caption choice), each measure's mean and
    its range over the draws; then the measures that drift with N."""
    from ..measure_info import format_value, label as measure_label
    from ..sensitivity import SWEEP_KEYS

    by = "size" if sweep["kind"] == "size" else "captions"
    lines = [f"\nsweep over {'pool size' if by == 'size' else 'captions per image'} "
             f"({sweep['seconds']:.1f} s): mean [min, max] over the draws"]
    cells: dict[tuple[str, Any], dict[str, str]] = {}
    for s in sweep["summary"]:
        rng = ("" if s["draws"] == 1 else
               f" [{format_value(s['lo'])}, {format_value(s['hi'])}]")
        cells.setdefault((s["label"], s[by]), {})[s["measure"]] = format_value(s["mean"]) + rng
    for (label, x), values in cells.items():
        lines.append(f"{label} · {x}{' pairs/images' if by == 'size' else ''}: "
                     + "; ".join(f"{measure_label(k)} {values[k]}" for k in SWEEP_KEYS
                                 if k in values))
    for label, keys in sweep.get("drifting", {}).items():
        lines.append(f"{label}: drifting with N (smallest size vs all pairs, t-test p < 0.05): "
                     + (", ".join(measure_label(k) for k in keys) or "none"))
    return "\n".join(lines) + "\n"
