"""``gapviz trajectory SOURCE --models ...``: the gap over training, one row per checkpoint.

SOURCE is image-caption pairs as ``gapviz embed`` takes them (a folder or .zip of images with
captions, COCO or CC files, a webdataset .tar). ``--models`` lists the series in order: local
checkpoint files of an open_clip training run (``epoch_*.pt``) or pretrained tags, all of one
``--arch``; or embeddings files (.npz/.parquet) of the same pairs (then SOURCE may be left out).
Each checkpoint is embedded once through the cache; a rerun embeds nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from contextlib import ExitStack
from typing import Any

from ..data.defaults import (CAPTION_CHOICES, DOWNLOAD_RETRIES, DOWNLOAD_TIMEOUT, DOWNLOAD_WORKERS,
                             MAX_IMAGE_PIXELS, SAMPLE_SEED)
from ..encode import PRECISIONS
from ..safety import csv_rows, terminal_text
from ..trajectory import HEADLINE, LEVEL, N_RESAMPLES, Trajectory
from .common import UserError, add_format_argument, json_default

EXAMPLES = """\
examples:
  gapviz trajectory assets/sample_pairs.zip --arch ViT-B-32 \\
      --models run/checkpoints/epoch_1.pt run/checkpoints/epoch_2.pt run/checkpoints/epoch_3.pt
  gapviz trajectory photos/ --arch tiny.json --models epoch_*.pt --format json
  gapviz trajectory coco --n 1000 --arch ViT-B-32 --models laion400m_e31 laion400m_e32
  gapviz trajectory --models step1.npz step2.npz step3.npz --format csv
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "trajectory", help="the gap over training: every measure per checkpoint of a series",
        description="Measure the same pairs with each model of a series (checkpoints of one "
                    "training run, pretrained tags, or embeddings files), in the order given: "
                    "every measure with its bootstrap interval, the learned logit scale and bias "
                    "read from the weights, and the margin they imply.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", metavar="SOURCE",
                   help="image-caption pairs, as `gapviz embed` takes them (a folder, a .zip, "
                        "coco, cc, a COCO/CC/webdataset file); not needed with embeddings files")
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="the series, in training order: checkpoint files or pretrained tags "
                        "of --arch, hf-hub:org/repo names, or embeddings files (.npz/.parquet). "
                        "A shell glob sorts epoch_10.pt before epoch_2.pt: list them in order")
    p.add_argument("--arch", help="the series' architecture: an open_clip name (ViT-B-32) or a "
                                  "model config .json (needed for checkpoints and tags)")
    add_format_argument(p, ("table", "json", "csv"))
    p.add_argument("--all-measures", action="store_true",
                   help="table and csv: every measure, not only the headline ones")
    p.add_argument("--method", metavar="NAME",
                   help="also the series after this gap-closing method (e.g. spectral, center, "
                        "procrustes), each step under the method's own protocol")
    p.add_argument("--resamples", type=int, default=N_RESAMPLES,
                   help=f"bootstrap resamples per step (default {N_RESAMPLES})")
    p.add_argument("--level", type=float, default=LEVEL,
                   help=f"interval level (default {LEVEL})")
    p.add_argument("--interval-seed", type=int, default=0, help="bootstrap seed (default 0)")
    g = p.add_argument_group("model")
    g.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default: steps are compared with each other, and a reduced "
                        "precision would add its own differences), auto, bf16 or fp16")
    g.add_argument("--weights-seed", type=int, default=0, help="seed of random weights (default 0)")
    g.add_argument("--tokenizer", metavar="DIR", help="a local Hugging Face tokenizer folder")
    d = p.add_argument_group("data")
    d.add_argument("--n", type=int, help="number of pairs to sample (default: all for uploads)")
    d.add_argument("--seed", type=int, default=SAMPLE_SEED, help="sampling seed (default 0)")
    d.add_argument("--captions", help="uploads: captions file to use (.csv, .tsv, .jsonl)")
    d.add_argument("--caption", choices=CAPTION_CHOICES, default="first",
                   help="COCO: which caption of each image (default first)")
    d.add_argument("--images", help="COCO: local image folder")
    d.add_argument("--tsv", help="CC: path or URL of the TSV")
    d.add_argument("--cache-dir", help="cache root (default $GAPVIZ_CACHE_DIR or ~/.cache/gapviz)")
    d.add_argument("--no-cache", action="store_true",
                   help="no cached embeddings read or written (every checkpoint embedded again)")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_trajectory, split=None, annotations_url=None, images_url=None,
                   max_pixels=MAX_IMAGE_PIXELS, workers=DOWNLOAD_WORKERS,
                   timeout=DOWNLOAD_TIMEOUT, retries=DOWNLOAD_RETRIES)


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.quiet:
        print(terminal_text(line), file=sys.stderr)


def cmd_trajectory(args: argparse.Namespace) -> int:
    from ..trajectory import embed_series, measure_trajectory, series_from_models

    if args.resamples < 2:
        raise UserError(f"--resamples must be at least 2, got {args.resamples}.")
    if not 0.0 < args.level < 1.0:
        raise UserError(f"--level must be between 0 and 1, got {args.level}.")
    items = series_from_models(args.models, arch=args.arch, seed=args.weights_seed,
                               tokenizer=args.tokenizer)
    files_only = all(i.spec is None for i in items)
    if not files_only and not args.source:
        raise UserError("give SOURCE, the image-caption pairs each checkpoint embeds (a folder, "
                        "a .zip, coco, cc, ...).")

    def progress(done: int, total: int, stage: str) -> None:
        if done < total:
            _say(args, f"  {stage}")

    with ExitStack() as stack:
        pairs, cache = (None, None) if files_only else _pairs_and_cache(args, stack)
        steps = embed_series(items, pairs, cache=cache, device=args.device,
                             precision=args.precision, progress=progress)
        result = measure_trajectory(steps, n_resamples=args.resamples, level=args.level,
                                    seed=args.interval_seed)
    if args.method and args.method != "orig":
        from ..methods import METHODS
        from ..trajectory import close_series

        if args.method not in METHODS:
            raise UserError(f"unknown method {args.method!r}; choose from {', '.join(METHODS)}.")
        close_series(result, args.method)
    for step in result.steps:
        for note in step.notes:
            _say(args, f"  note: {step.label}: {note}")
    for note in result.notes:
        _say(args, f"  note: {note}")
    if args.format == "json":
        payload = {"source": args.source, "models": list(args.models), "arch": args.arch,
                   "precision": args.precision, "method": args.method, **result.to_dict()}
        print(json.dumps(payload, indent=2, default=json_default))
    elif args.format == "csv":
        print(render_csv(result, _keys(result, args.all_measures)), end="")
    else:
        print(render_table(result, _keys(result, args.all_measures), args.source), end="")
        if result.closed is not None:
            print(f"\nafter {args.method} ({result.closed_runs[0]['provenance']}):")
            print(render_table(result.closed, _keys(result.closed, args.all_measures),
                               args.source), end="")
    return 0


def _pairs_and_cache(args: argparse.Namespace, stack: ExitStack) -> tuple[list, Any]:
    """The SOURCE's pairs (as ``gapviz embed`` loads them) and the embedding cache."""
    from ..data import DataError, require_pairs
    from .embed import _load, _Workspace, detect_kind

    kind = detect_kind(args.source)
    if kind == "embeddings":
        raise DataError(f"{args.source} holds embeddings; SOURCE is the image-caption pairs the "
                        "checkpoints embed (or pass embeddings files to --models).")
    work = _Workspace(args, sys.stderr, stack)
    pairs, report = _load(args, kind, None, work.folder)
    for line in report.lines():
        _say(args, line)
    require_pairs(pairs, report, args.source)
    return pairs, work.cache


def _keys(result: Trajectory, every: bool) -> list[str]:
    if not every:
        return [k for k in HEADLINE if k in result.steps[0].metrics]
    return [k for k in result.steps[0].metrics if k != "N"]


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    value = float(value)
    if math.isinf(value):
        return "inf"
    if math.isnan(value):
        return "nan"
    return f"{value:.{digits}g}"


def _with_interval(value: Any, interval: Any) -> str:
    if interval is None or value is None:
        return _number(value)
    return f"{_number(value)} [{_number(interval[0])}, {_number(interval[1])}]"


def render_table(result: Trajectory, keys: list[str], source: str | None) -> str:
    """A plain-text table: one block per step (measures with intervals), then provenance."""
    n = len(result.ids)
    lines = [terminal_text(f"gapviz trajectory: {source or 'embeddings files'}, N = {n} pairs, "
                           f"{len(result.steps)} steps; {int(result.level * 100)}% percentile "
                           f"bootstrap intervals ({result.n_resamples} resamples, seed "
                           f"{result.seed})")]
    weights = any(s.logits.scale is not None for s in result.steps)
    head = ["step", *(["logit_scale", "logit_bias", "margin"] if weights else []), *keys]
    cells = []
    for s in result.steps:
        logits = [_number(s.logits.scale), _number(s.logits.bias),
                  _with_interval(s.margin, s.margin_interval)] if weights else []
        cells.append([terminal_text(s.label), *logits,
                      *[_with_interval(s.metrics.get(k), s.intervals.get(k)) for k in keys]])
    # transposed: one column per step, so a measure's row reads as a curve left to right
    width0 = max(len(h) for h in head)
    widths = [max(len(v) for v in c) for c in cells]
    lines.append("")
    for j, h in enumerate(head):
        lines.append(h.ljust(width0) + "  " + "  ".join(c[j].ljust(wd) for c, wd in
                                                         zip(cells, widths)).rstrip())
    lines.append("")
    lines.append("how each step was obtained:")
    for s in result.steps:
        prov = s.provenance(result.n_resamples, result.level, result.seed)
        lines.append(terminal_text(f"  {s.label}: {s.model}; {prov['embeddings']}; logits: "
                                   f"{prov['logits']}; {s.n_pairs} pairs scored"))
    if weights:
        lines.append("margin = exp(logit_scale) * (mean paired cos - mean cos over i != j), "
                     "in logits")
    if result.basis is not None:
        ev = result.basis.explained_variance_ratio_
        lines.append(f"shared basis: PCA of the last step's mixed pool ({result.steps[-1].label}; "
                     f"PC1 {ev[0]:.0%}, PC2 {ev[1]:.0%}), applied to every step")
    if result.moved:
        lines.append("pairs that moved most (first step to last, unit rows):")
        for m in result.moved[:5]:
            lines.append(terminal_text(f"  {m['id']}: {m['displacement']:.3f} "
                                       f"(paired cos {m['paired_cos_first']:.3f} -> "
                                       f"{m['paired_cos_last']:.3f}) {m['caption']}"))
    return "\n".join(lines) + "\n"


def render_csv(result: Trajectory, keys: list[str]) -> str:
    """One row per step (and per closed step, with ``--method``): measures with ``_low`` /
    ``_high`` interval columns, logits, margin and provenance."""
    rows = [{"embeddings": "raw", **r} for r in result.rows(keys)]
    if result.closed is not None:
        method = result.closed_runs[0]["method"]
        rows += [{"embeddings": f"closed ({method})", **r} for r in result.closed.rows(keys)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = list(rows[0])
    writer.writerow(header)
    writer.writerows(csv_rows([["" if r[h] is None else r[h] for h in header] for r in rows]))
    return buf.getvalue()


__all__ = ["cmd_trajectory", "register", "render_csv", "render_table"]
