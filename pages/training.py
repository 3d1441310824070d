"""Training: the gap over a series of checkpoints of one model, on one dataset's pairs.

The user names the pairs (a folder or .zip of images with captions), the architecture and the
series in order (checkpoint files, a folder of ``epoch_*.pt``, pretrained tags, or embeddings
files); :func:`gapviz.trajectory.trajectory` embeds each through the disk cache and measures
it. The page draws every measure over the steps with its interval, the learned logit scale /
bias and the margin they imply, the pool at a chosen step in one shared PCA basis with the
trails of the pairs that moved most, and the exports (JSON, CSV, the CLI command). The raw
embeddings or each step after a gap-closing method (under its own protocol, as on Close the
gap) are a choice.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import dataclasses
import glob
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import streamlit as st

from gapviz import hosting
from gapviz.measure_info import label as measure_label
from gapviz.figures import training as tf
from gapviz.trajectory import EMBEDDINGS_SUFFIXES, HEADLINE
from ui.components import guard, user_text
from ui.frame import page_header
from ui.state import keep

SAMPLE = str(Path(__file__).resolve().parents[1] / "assets" / "sample_pairs.zip")
MAX_TRAILS = 40
_EPOCH = re.compile(r"epoch_(\d+)\.")

page_header("The gap over training", "a series of checkpoints measured on the same pairs")
if hosting.hosted():
    # The series is named by paths on the server (checkpoint files, folders, image folders):
    # a visitor of a hosted demo may read nothing there.
    st.info("The gap over training reads a series of checkpoint or embeddings files from this "
            "machine's disk, which a hosted demo does not offer its visitors. Run gapviz on your "
            "own machine (`pip install -r requirements.txt`, then `streamlit run app.py`), or "
            "`gapviz trajectory PAIRS --arch ARCH --models epoch_1.pt ...` there.",
            icon=":material/info:")
    st.stop()
st.caption("Each model of the series embeds the same pairs (once: the cache answers a rerun); "
           "every measure gets its bootstrap interval, and the learned temperature and bias are "
           "read from each checkpoint's weights. Steps are drawn in one frame: a PCA fitted on "
           "the last step, applied to all.")


def _expand(lines: str) -> list[str]:
    """The series: one entry a line; a folder stands for its ``epoch_*.pt`` by epoch, a glob
    pattern for its files in order."""
    out: list[str] = []
    for line in (s.strip() for s in lines.splitlines()):
        if not line:
            continue
        path = Path(line).expanduser()
        if path.is_dir():
            found = sorted(path.glob("epoch_*.pt"),
                           key=lambda p: int(_EPOCH.search(p.name).group(1)) if _EPOCH.search(p.name) else 0)
            out += [str(p) for p in found]
        elif any(c in line for c in "*?["):
            out += sorted(glob.glob(str(path)),
                          key=lambda p: (int(m.group(1)) if (m := _EPOCH.search(Path(p).name)) else 0, p))
        else:
            out.append(line)
    return out


c1, c2 = st.columns([3, 2])
source = c1.text_input("Image-caption pairs", **keep("training_source", SAMPLE),
                       help="A folder or .zip of images with captions (captions.csv, ...). Not "
                            "needed when the series is embeddings files.")
arch = c2.text_input("Architecture", **keep("training_arch", ""),
                     help="The series' open_clip architecture (ViT-B-32) or a model config "
                          ".json; needed for checkpoint files and pretrained tags.")
models_text = st.text_area(
    "Series, in order (one a line)", height=110, **keep("training_models", ""),
    help="Checkpoint files of one training run (epoch_1.pt, ...), a folder holding them, a glob "
         "pattern, pretrained tags of the architecture (laion400m_e31), hf-hub: names, or "
         "embeddings files (.npz/.parquet) of the same pairs.")
run = st.button("Measure the series", key="training_run", type="primary",
                icon=":material/timeline:")

models = _expand(models_text)
files_only = bool(models) and all(m.lower().endswith(EMBEDDINGS_SUFFIXES) for m in models)
request = (source.strip(), arch.strip(), tuple(models))

if run:
    with guard("measure the series"):
        from gapviz.cache import EmbeddingCache
        from gapviz.data import load_folder
        from gapviz.trajectory import trajectory

        pairs = None
        if not files_only:
            if not source.strip():
                raise ValueError("give the image-caption pairs the checkpoints embed.")
            pairs, _ = load_folder(source.strip())
        with st.spinner(f"embedding and measuring {len(models)} steps…"):
            result = trajectory(models, pairs, arch=arch.strip() or None, cache=EmbeddingCache())
        st.session_state["training_result"] = (request, result)

stored = st.session_state.get("training_result")
if stored is None:
    st.info("Name the pairs, the architecture and the series, then **Measure the series**. "
            "`gapviz trajectory` prints the same numbers.", icon=":material/info:")
    st.stop()
shown_request, traj = stored
if shown_request != request:
    st.caption("Showing the last series measured; the inputs above changed since.")


def _closed(method: str):
    """The stored series after ``method`` (computed once per series and method)."""
    from gapviz.trajectory import close_series

    store = st.session_state.setdefault("training_closed", {})
    key = (id(traj), method)
    if key not in store:
        store.clear()  # one series' closed view at a time
        with st.spinner(f"closing the gap with {method} at every step…"):
            copy = dataclasses.replace(traj, closed=None, closed_runs=[])
            store[key] = close_series(copy, method)
    return store[key]


def _render() -> None:
    from gapviz.methods import METHODS

    n_cached = sum(s.from_cache for s in traj.steps)
    st.caption(f"{len(traj.steps)} steps · {len(traj.ids):,} pairs · {n_cached} of "
               f"{len(traj.steps)} read from the cache · {int(traj.level * 100)}% bootstrap "
               f"intervals ({traj.n_resamples} resamples)")
    c1, c2 = st.columns([2, 3])
    choice = c1.selectbox("Embeddings", ["raw", *[m for m in METHODS if m != "orig"]],
                          key="training_method",
                          help="The raw embeddings of each step, or each step after a "
                               "gap-closing method, run under the method's own protocol "
                               "(held-out for methods that read the pairing), as on Close "
                               "the gap.")
    shown = traj
    if choice != "raw":
        withclosed = _closed(choice)
        shown = withclosed.closed
        c2.caption(user_text(f"{choice}: {withclosed.closed_runs[0]['provenance']}"))
    keys = st.multiselect("Measures", [k for k in traj.steps[0].metrics if k != "N"],
                          default=[k for k in HEADLINE if k in traj.steps[0].metrics][:6],
                          format_func=measure_label, key="training_measures")
    if keys:
        st.plotly_chart(tf.measure_curves(shown, keys), key="training_curves")
    st.subheader("What the weights say")
    st.plotly_chart(tf.logit_curves(traj), key="training_logits")
    st.caption("margin = exp(logit_scale) × (mean paired cosine − mean cosine over i ≠ j), in "
               "logits; the bias cancels in it. " + "; ".join(
                   user_text(f"{s.label}: {s.logits.source}") for s in traj.steps[:3])
               + ("…" if len(traj.steps) > 3 else ""))
    if shown.images_xy is not None:
        st.subheader("The pool, step by step" + ("" if choice == "raw" else f" (after {choice})"))
        labels = shown.labels
        step_label = st.select_slider("Step", options=labels, value=labels[-1], key="training_step")
        step = labels.index(step_label)
        n_trails = st.slider("Trails of the pairs that moved most", 0,
                             min(MAX_TRAILS, len(shown.moved)), min(10, len(shown.moved)),
                             key="training_trails")
        rows = [m["row"] for m in shown.moved[:n_trails]]
        st.plotly_chart(tf.trail_scatter(shown, step, trail_rows=rows), key="training_scatter")
        st.subheader("Pairs that moved most")
        st.dataframe(pd.DataFrame(shown.moved), hide_index=True, key="training_moved")
    for note in traj.notes:
        st.caption(user_text(note))
    st.subheader("Every step")
    table = pd.DataFrame(shown.rows())
    st.dataframe(table, hide_index=True, key="training_table")
    from gapviz.cli.trajectory import render_csv

    e1, e2 = st.columns(2)
    exported = traj if choice == "raw" else withclosed
    e1.download_button("JSON", json.dumps(exported.to_dict(), indent=2, default=str),
                       file_name="trajectory.json", mime="application/json",
                       key="training_json", icon=":material/download:")
    e2.download_button("CSV", render_csv(exported, list(HEADLINE)), file_name="trajectory.csv",
                       mime="text/csv", key="training_csv", icon=":material/download:")
    src, a, ms = shown_request
    shown_files = all(m.lower().endswith(EMBEDDINGS_SUFFIXES) for m in ms)
    words = ["gapviz", "trajectory", *([src] if src and not shown_files else []),
             *(["--arch", a] if a else []), "--models", *ms,
             *(["--method", choice] if choice != "raw" else []), "--format", "json"]
    st.caption("The same numbers from the command line:")
    st.code(shlex.join(words), language="bash")


with guard("draw the series"):
    _render()
