"""Data: the demo, your own image-caption pairs, a COCO / CC sample, or embeddings files.

Every load goes through the library (``gapviz.data`` loaders, ``gapviz.encode``,
``gapviz.load_embeddings``); this page only collects the inputs, shows progress and the
report of what was kept and skipped. A failed load shows a message; the data loaded before
stays loaded and active.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import streamlit as st

from gapviz import hosting
from gapviz.cache import EmbeddingCache, cache_root
from gapviz.data import save_upload
from gapviz.data.defaults import CAPTION_CHOICES
from gapviz.embeddings import load_embeddings
from gapviz.encode import KNOWN_MODELS, ModelSpec, cache_identity, embed_loaded_pairs
from gapviz.figures import data as dv
from gapviz.simulate import PROFILES, simulate_pairs
from gapviz.workspace import DEMO_DATASET
from ui import compute
from ui.components import guard, show_image, user_text
from ui.frame import page_header
from ui.state import demo_statistics, keep, workspace

PREVIEW_PAIRS = 12
PREVIEW_COLUMNS = 6
OTHER_MODEL = "other"
SIM_SIZES = (500, 1000, 2500, 5000, 10000)

ws = workspace()
act = page_header("Data", "what every page shows")
#: A hosted demo (GAPVIZ_HOSTED=1): visitors upload files and pick listed datasets and models;
#: no server paths, URLs or other models.
HOSTED = hosting.hosted()
#: (model, weights) a hosted visitor may load: the listed models, pretrained or random.
LISTED_MODELS = [(m.name, m.pretrained) for m in KNOWN_MODELS] + [(m.name, None)
                                                                  for m in KNOWN_MODELS]
if HOSTED:
    st.caption(":material/public: Hosted demo: upload files and choose the listed datasets and "
               "models; the server's own files, private addresses and other models are not "
               f"offered. Uploads up to {hosting.limits().max_upload_bytes / 1024**2:,.0f} MiB.")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def upload_name(name: str, default: str = "upload") -> str:
    """A browser's name for an uploaded file as one plain file name: its last part after any
    ``/`` or ``\\`` (a browser sends the name, but a crafted request may send a path), control
    characters and surrounding spaces and dots removed; ``default`` if nothing is left."""
    last = re.split(r"[/\\]", str(name))[-1]
    last = "".join(c for c in last if c.isprintable()).strip().strip(".").strip()
    return last or default


def _saved_file(name: str, data: bytes) -> Path:
    """One uploaded file kept in the cache (loaders need a path); see ``save_upload``.
    ``name`` is reduced to a plain file name first (:func:`upload_name`)."""
    saved = save_upload([(upload_name(name), data)])
    if saved.is_file():
        return saved
    stored = sorted(p for p in saved.rglob("*") if p.is_file())
    if not stored:
        raise ValueError(f"{name}: the upload could not be stored; upload the file again.")
    return stored[0]


def _check_upload_size(files) -> None:
    """Hosted: all files of one upload together within the upload limit (not each file)."""
    if not HOSTED or not files:
        return
    limit = hosting.limits().max_upload_bytes
    total = sum(int(getattr(f, "size", None) or len(f.getvalue())) for f in files)
    if total > limit:
        raise ValueError(f"these {len(files)} files take {_mib(total)} together, more than the "
                         f"{_mib(limit)} this demo accepts in one upload; upload fewer or "
                         "smaller files.")


def _mib(nbytes: float) -> str:
    mib = nbytes / 1024**2
    return f"{mib:,.0f} MiB" if mib >= 10 else f"{mib:.2g} MiB"


@contextmanager
def _as_uploaded(name: str, *paths: Path) -> Iterator[list[Path]]:
    """Errors name the user's file, not the cache folder it was copied or extracted to.

    ``paths`` (and any appended to the yielded list) are where the upload was stored: each is
    replaced by ``name`` exactly (a stored name may hold spaces or colons); any other path
    under the cache up to a space or colon as well."""
    stored = list(paths)
    try:
        yield stored
    except (ValueError, OSError) as err:
        text = str(err)
        for path in sorted(stored, key=lambda p: -len(str(p))):
            text = text.replace(str(path), name)
        root = re.escape(str(cache_root()))
        # A function, not a template: a name holding "\1" or "\g<0>" stays as it is.
        raise ValueError(re.sub(root + r"[^\s:]*", lambda _: name, text)) from None


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[..., None]]:
    """A progress bar for the block, yielding its ``update(done, total, stage)``; removed when
    the block ends, also when it fails (not left above the error)."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int, stage: str = "") -> None:
        frac = done / total if total else 0.0
        bar.progress(min(max(frac, 0.0), 1.0), text=f"{stage or label}: {done:,} / {total:,}")

    try:
        yield update
    finally:
        bar.empty()


def model_picker(prefix: str) -> ModelSpec:
    """Model choice: a well-known open_clip model, any other, or random weights."""
    labels = {m.name: m.label for m in KNOWN_MODELS}
    if not HOSTED:
        labels[OTHER_MODEL] = "Another open_clip model…"
    c1, c2 = st.columns([2, 1])
    choice = c1.selectbox("Model", list(labels), format_func=labels.get,
                          **keep(f"{prefix}_model", KNOWN_MODELS[0].name))
    random_weights = c2.toggle("Random weights", help="No download: a randomly initialised "
                               "(seeded) model. Tests the pipeline; random encoders already show "
                               "a gap (cone effect), but this is not a real model.",
                               **keep(f"{prefix}_random", False))
    if choice == OTHER_MODEL:
        c3, c4 = st.columns(2)
        name = c3.text_input("open_clip architecture", help="e.g. ViT-B-32, ViT-S-32, "
                             "hf-hub:org/repo", **keep(f"{prefix}_arch", "ViT-B-32"))
        tag = c4.text_input("Weights", help="A pretrained tag (openai, laion2b_s34b_b79k, …) or "
                            "a local checkpoint path", **keep(f"{prefix}_weights", "openai"))
    else:
        name = choice
        tag = next(m.pretrained for m in KNOWN_MODELS if m.name == choice)
    tokenizer = None
    if not HOSTED:
        tokenizer = st.text_input(
            "Tokenizer folder (optional)", placeholder="only for SigLIP-style models offline",
            help="A folder holding a Hugging Face tokenizer (what `save_pretrained` writes: "
                 "tokenizer.json, tokenizer_config.json), for models whose tokenizer comes from "
                 "the hub (SigLIP) on a machine that cannot reach it. Leave empty otherwise.",
            **keep(f"{prefix}_tokenizer", "")).strip() or None
    return ModelSpec(name.strip(), None if random_weights else tag, tokenizer=tokenizer)


def _check_model(spec: ModelSpec) -> None:
    """Hosted: only the listed models (the picker offers no others; this is the rule)."""
    hosting.check_model(spec.name, spec.pretrained, LISTED_MODELS)


def _embed_and_add(pairs, report, spec: ModelSpec, source: str, meta: dict) -> None:
    """Embed pairs with a progress bar, add them to the workspace, remember the report."""
    _check_model(spec)
    cache = EmbeddingCache()
    with _progress_bar(f"Embedding {len(pairs):,} pairs with {spec.label()}") as update:
        model = spec
        if len(pairs) >= 2 and cache.load(cache.key(pairs, cache_identity(spec))) is None:
            model = compute.loaded_model(spec)  # only load the model when the disk cache cannot answer
        embeddings, report = embed_loaded_pairs(pairs, report, model, cache=cache, meta=meta,
                                                     progress=update)
    dataset, model_name = ws.add(embeddings, source=source, report=report)
    ws.last_load = {"dataset": dataset, "model": model_name,
                    "lines": report.lines(), "warnings": list(report.warnings),
                    "notices": ws.take_notices()}
    st.rerun()  # the sidebar, drawn before this page, now shows the new data


def _show_last_load() -> None:
    last = ws.last_load
    if not last:
        return
    st.success(f"Loaded **{user_text(last['dataset'])}** · model **{user_text(last['model'])}** — "
               f"{user_text(last['lines'][0], 1000)}.",
               icon=":material/check_circle:")
    details = [line.strip() for line in last["lines"][1:]]
    if details:
        # notes alone (how the set was chosen) are not skips: nothing was dropped then
        notes_only = all(line.startswith("note:") for line in details)
        title = "Notes on this load" if notes_only else "What was skipped and why"
        with st.expander(f"{title} ({len(details)} line{'s' if len(details) != 1 else ''})"):
            st.code("\n".join(details), language=None)
    for notice in last.get("notices") or []:
        st.info(user_text(notice, None), icon=":material/info:")
    ws.last_load = None  # shown once


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------
def demo_tab() -> None:
    st.markdown("Simulated image and text embeddings with a modality gap of several causes "
                "(a centroid shift, narrow cones, modality-specific structure, noisy pairs). "
                "Each profile **imitates** a real model's kind of gap; none is a real model's output.")
    st.markdown("\n".join(f"- **{p.name}** (imitates {p.imitates}): {p.description}; "
                          f"{p.reference.sentence}" for p in PROFILES.values()))
    st.markdown("**The demo beside real CLIP**: statistics measured on the demo's pairs "
                "(rows L2-normalised), and the same statistics of real CLIP features.")
    st.dataframe(demo_statistics(), hide_index=True, width="stretch")
    if st.button("Use the demo", key="data_use_demo", icon=":material/science:",
                 disabled=act.dataset.name == DEMO_DATASET,
                 help="The demo is active" if act.dataset.name == DEMO_DATASET else None):
        ws.select(DEMO_DATASET)
        st.rerun()
    st.markdown("**Simulate another set** (same generator, another size or seed)")
    c2, c3, c4 = st.columns([1, 1, 1.3], vertical_alignment="bottom")
    n = c2.selectbox("Pairs", SIM_SIZES, format_func="{:,}".format,
                     **keep("data_sim_n", 2500))
    seed = c3.number_input("Seed", 0, 10_000, step=1, **keep("data_sim_seed", 1))
    if c4.button("Simulate", key="data_sim_go", icon=":material/casino:", width="stretch"):
        with guard("simulate pairs"), st.spinner("Simulating…"):
            name = f"Simulated · {int(n):,} pairs · seed {int(seed)}"
            for profile in PROFILES:
                sim = simulate_pairs(int(n), profile=profile, seed=int(seed))
                ws.add(sim, source="simulated (gapviz.simulate)", dataset=name,
                       model=PROFILES[profile].name, activate=profile == "clip")
            ws.last_load = {"dataset": name, "model": PROFILES["clip"].name,
                            "lines": [f"simulated {int(n):,} pairs under {len(PROFILES)} profiles"],
                            "notices": ws.take_notices()}
            st.rerun()


def pairs_tab() -> None:
    st.markdown("A **.zip** (or a folder) of images with captions: a `captions.csv` / `.tsv` / "
                "`.jsonl` with columns `image` and `caption`, or a `.txt` beside each image. "
                "You can also drop the images and the captions file together.")
    files = st.file_uploader("Image-caption pairs", accept_multiple_files=True,
                             type=["zip", "tar", "tgz", "gz", "bz2", "xz", "csv", "tsv",
                                   "jsonl", "txt", "jpg", "jpeg", "png", "webp", "gif"],
                             key="data_pairs_upload")
    path = "" if HOSTED else st.text_input("…or a folder or .zip on this machine",
                                           key="data_pairs_path",
                                           placeholder="/path/to/pairs or /path/to/pairs.zip")
    c1, c2 = st.columns(2)
    n = c1.number_input("Keep at most (0 = all)", 0, 1_000_000, step=500,
                        **keep("data_pairs_n", 0))
    seed = c2.number_input("Sample seed", 0, 10_000, step=1, **keep("data_pairs_seed", 0))
    caption = _caption_choice("data_pairs_caption",
                              "When the captions file has several rows for one image "
                              "(Flickr30k-style).")
    spec = model_picker("data_pairs")
    if st.button("Load and embed", key="data_pairs_go", type="primary", icon=":material/upload:"):
        with guard("load these pairs"):
            from gapviz.data import load_folder

            if files:
                source_path = save_upload([(f.name, f.getvalue()) for f in files])
                source = files[0].name if len(files) == 1 else f"{len(files)} uploaded files"
            elif path.strip():
                source_path, source = Path(path.strip()).expanduser(), Path(path.strip()).name
            else:
                raise ValueError("upload a .zip or files first" +
                                 ("." if HOSTED else ", or give a folder path."))
            stored = [source_path] if files else []  # a path typed here is shown as typed
            with _progress_bar("Checking images") as update, _as_uploaded(source, *stored):
                pairs, report = load_folder(source_path, n=int(n) or None, seed=int(seed),
                                            caption_choice=caption, progress=update)
            _embed_and_add(pairs, report, spec, source,
                           {"source": source, "sample_n": int(n) or None, "seed": int(seed)})


def _caption_choice(key: str, where: str) -> str:
    """The captions-per-image radio: first, random (seeded) or all (any counts)."""
    return st.radio(
        "Captions per image", list(CAPTION_CHOICES), horizontal=True,
        format_func={"first": "1: the first", "random": "1: one at random (seed)",
                     "all": "all, any counts"}.get, **keep(key, "first"),
        help=f"{where} The paper uses one caption per image. With all of them (as CLIP_benchmark "
             "and Schrodi et al. on COCO), each caption is a pair of its image, an image finds "
             "its match when any of its captions is ranked, and held-out folds keep an image's "
             "captions together; the sample size then counts images.")


def sample_tab() -> None:
    kind = st.radio("Dataset", ["COCO captions", "Conceptual Captions"], horizontal=True,
                    **keep("data_sample_kind", "COCO captions"))
    c1, c2 = st.columns(2)
    n = c1.number_input("Pairs", 10, 50_000, step=500, **keep("data_sample_n", 2500),
                        help="The paper uses 2,500 random pairs.")
    seed = c2.number_input("Seed", 0, 10_000, step=1, **keep("data_sample_seed", 0))
    ann = img = tsv = ""
    caption = "first"
    if kind == "COCO captions":
        caption = _caption_choice("data_sample_caption", "COCO has five per image.")
        if HOSTED:
            st.caption("The official COCO 2017 annotations and the sampled images are downloaded.")
        else:
            ann = st.text_input("Annotations (optional)", key="data_coco_ann",
                                placeholder="captions_val2017.json, the annotations zip, or a "
                                            "URL; empty = download the official 2017 annotations")
            img = st.text_input("Images folder (optional)", key="data_coco_images",
                                placeholder="empty = download only the sampled images")
    elif HOSTED:
        upload = st.file_uploader("Conceptual Captions TSV", type=["tsv"], key="data_cc_upload",
                                  help="No anonymous download of the CC TSV exists; upload it.")
        tsv = str(_saved_file(upload.name, upload.getvalue())) if upload is not None else ""
    else:
        tsv = st.text_input("Conceptual Captions TSV", key="data_cc_tsv",
                            placeholder="path or URL of the CC TSV (no anonymous download exists)")
    spec = model_picker("data_sample")
    if st.button("Sample and embed", key="data_sample_go", type="primary",
                 icon=":material/download:"):
        with guard(f"sample {kind}"):
            from gapviz.data import load_cc, load_coco

            with _progress_bar("Preparing the sample") as update:
                if kind == "COCO captions":
                    pairs, report = load_coco(ann.strip() or None, img.strip() or None, n=int(n),
                                              seed=int(seed), caption_choice=caption,
                                              progress=update)
                    source = (f"COCO sample ({int(n):,}{' images, all captions' if caption == 'all' else ''}"
                              f", seed {int(seed)})")
                else:
                    pairs, report = load_cc(tsv.strip() or None, n=int(n), seed=int(seed),
                                            progress=update)
                    source = f"CC sample ({int(n):,}, seed {int(seed)})"
            _embed_and_add(pairs, report, spec, source, {"source": source, "seed": int(seed)})


def embeddings_tab() -> None:
    st.markdown("Embeddings computed elsewhere: `.npz` with arrays `image_embeddings` and "
                "`text_embeddings` (N × d), or `.parquet` with columns `image_embedding`, "
                "`text_embedding`; optional `ids`, `captions`. Files of the **same pairs** (same "
                "ids) by different models become models of one dataset.")
    files = st.file_uploader("Embeddings files", type=["npz", "parquet"],
                             accept_multiple_files=True, key="data_emb_upload")
    folder = "" if HOSTED else st.text_input(
        "…or a file or a folder of parquet shards on this machine", key="data_emb_path",
        placeholder="/path/to/embeddings.npz or /path/to/shards/ (gapviz embed --ray output)")
    if st.button("Load embeddings", key="data_emb_go", type="primary", icon=":material/upload:",
                 disabled=not (files or folder.strip())):
        loaded = []
        try:
            _check_upload_size(files)
        except ValueError as err:
            st.error(f"Could not load these files: {user_text(err, None)}", icon=":material/error:")
            return
        if folder.strip():
            with guard(f"load {folder.strip()}"):
                path = Path(folder.strip()).expanduser()
                pairs, report = load_embeddings(path)
                loaded.append(ws.add(pairs, source=f"embeddings {path.name}",
                                     model=pairs.model or path.stem, report=report) + (report,))
        for f in files or []:
            shown = " ".join(str(f.name).split()) or "the uploaded file"  # as sent, one line
            with guard(f"load {shown}"):
                with _as_uploaded(shown) as stored:
                    saved = _saved_file(f.name, f.getvalue())
                    stored.append(saved)
                    pairs, report = load_embeddings(saved)
                # Images named by the file are shown only if they came with the upload.
                pairs = hosting.restrict_image_paths(pairs, [saved.parent])
                model = pairs.model or Path(saved.name).stem
                loaded.append(ws.add(pairs, source=f"embeddings file {saved.name}", model=model,
                                     report=report) + (report,))
        if loaded:
            dataset, model, report = loaded[-1]
            ws.last_load = {"dataset": dataset, "model": model,
                            "lines": [report.summary(), *(f"  warning: {w}" for w in report.warnings)],
                            "notices": ws.take_notices()}
            st.rerun()


# ---------------------------------------------------------------------------------------------
# what is loaded
# ---------------------------------------------------------------------------------------------
def _preview_rows(pairs, rows: list[int]) -> SimpleNamespace:
    """What the preview's HTML reads of ``pairs`` for ``rows`` (row i of the result is
    ``rows[i]``): ids and captions on one line (in ``st.markdown`` a blank line would end the
    HTML block and let the rest be read as markdown), and the simulator's concept names only
    for pairs that are the simulation (a file's own ``cluster`` meta is not trusted)."""
    def flat(values):
        return None if values is None else [" ".join(str(values[r]).split()) for r in rows]

    meta = {}
    cluster = pairs.meta.get("cluster")
    if act.simulated and cluster is not None:
        meta = {"cluster": [cluster[r] for r in rows], "cluster_names": pairs.meta.get("cluster_names")}
    return SimpleNamespace(ids=flat(pairs.ids), captions=flat(pairs.captions), meta=meta,
                           n=len(rows))


def preview_grid() -> None:
    pairs = act.pairs
    rows = list(range(min(PREVIEW_PAIRS, pairs.n)))
    shown = _preview_rows(pairs, rows)
    cols = st.columns(PREVIEW_COLUMNS)
    for i, r in enumerate(rows):
        with cols[i % PREVIEW_COLUMNS]:
            if not show_image(st, pairs.image_paths[r] if pairs.image_paths else None, tile=True):
                st.markdown(dv.concept_tile_html(shown, i), unsafe_allow_html=True)
            st.markdown(dv.preview_caption_html(shown, i), unsafe_allow_html=True)


def loaded_summary() -> None:
    st.dataframe(dv.datasets_table(ws.datasets, act.dataset.name), hide_index=True, width="stretch",
                 column_config={"active": st.column_config.CheckboxColumn("", width=30),
                                "pairs": st.column_config.NumberColumn(format="localized",
                                                                       width="small"),
                                "models": st.column_config.TextColumn(width="large")})
    st.caption(f"Switch dataset and model in the sidebar. Active: {act.pairs.n:,} pairs"
               + (f" of {act.pairs.n_images:,} images" if act.pairs.n_images != act.pairs.n else "")
               + f"; {act.pairs.convention}: every number on every page uses this convention.")
    report = act.dataset.reports.get(act.model)
    if report is not None:
        st.markdown(f"**{user_text(act.model)}**: {user_text(report.summary())}")
        skipped = dv.skipped_table(report)
        if skipped is not None:
            st.dataframe(skipped, hide_index=True)
        for w in report.warnings:
            st.caption(f"⚠ {user_text(w, None)}")
    elif act.simulated:
        st.caption("Simulated pairs: nothing skipped.")


_show_last_load()
left, right = st.columns([1.35, 1], gap="large")
with left:
    st.subheader("Add data")
    # keyed, so a load (which reruns the page with its report above) leaves the visitor on
    # the tab they loaded from
    tabs = st.tabs(["Demo", "Your pairs", "COCO / CC sample", "Embeddings files"],
                   key="data_tab", on_change="rerun")
    with tabs[0]:
        demo_tab()
    with tabs[1]:
        pairs_tab()
    with tabs[2]:
        sample_tab()
    with tabs[3]:
        embeddings_tab()
with right:
    st.subheader("Loaded")
    with guard("list the loaded data"):
        loaded_summary()
st.subheader("Preview", help="The first pairs of the active dataset.")
with guard("show the preview"):
    preview_grid()
