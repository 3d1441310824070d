"""Explore past Plotly's limit: the pool in Apple's Embedding Atlas Streamlit component.

The atlas (``pip install "gapviz[atlas]"``) draws the table of :mod:`gapviz.figures.atlas`, in
which each point's partner is its one neighbour. Its selection comes back as an SQL
predicate, evaluated on the same table into ``(row, modality)`` like the Plotly lasso.

What the browser tests show (``tests/test_browser_large_pool.py``): the atlas opens with
every row of a 200,000-point pool, served by this app alone with every outside request
blocked; chart filters (a click on a bar of its modality chart, a brush across its histogram
of pair rows) list the right pairs, and its "Clear filters" button and Esc clear them; a
400,000-point pool on a hosted demo is sampled and a filter lists exactly the sampled pairs.
Its point view draws with WebGPU and 16-bit floats (``shader-f16``) only; the headless
browser of the tests has no 16-bit floats, so a rectangle, a lasso or a click on a point has
not run there.

No CDN: the atlas's component loads DuckDB-WASM from cdn.jsdelivr.net. The package ships the
same DuckDB-WASM build for its own viewer, so :func:`build_viewer_folder` lays out a copy of
the component (files linked, not copied, where the disk allows) whose code loads DuckDB-WASM
from the component's own folder on this server, and adds a small script
(``atlas_watch.js``) that tells the page when the atlas did not start (a script or worker
failed, or nothing was drawn in :data:`START_TIMEOUT_S`: the page says why and switches to
the seeded Plotly sample, :data:`VIEWERS`) and when the browser lacks WebGPU (the page says
what still works).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from gapviz import figures, hosting
from gapviz.data.defaults import cache_root
from gapviz.figures import atlas as av
from gapviz.projection import Projection
from gapviz.workspace import POOLS

from .components import user_text
from .state import keep, kept, set_kept

#: The viewers of a large pool: every point in the atlas, or a seeded sample in Plotly.
VIEWERS = ("Embedding Atlas", "Plotly (sample)")
VIEWER_HELP = (f"Embedding Atlas shows every point (up to {av.ATLAS_MAX_POINTS:,}) with charts "
               "and a table; its point view draws with WebGPU (Chrome or Edge on a machine "
               "with a GPU). Plotly draws a seeded sample of "
               f"{av.PLOTLY_MAX_POINTS:,} points in any browser.")
#: How to select and clear in each viewer (Explore's help line and its empty selection).
PLOTLY_HOW_TO = "Lasso or box-select points (toolbar, top right of the chart) to list their pairs."
PLOTLY_CLEAR = "Use the lasso or box tool on the chart; double-click the chart to clear."
ATLAS_HOW_TO = ("Click a bar of a chart or drag across a histogram to filter: the pairs of the "
                "filtered points are listed here. In its point view, shift + drag draws a "
                "rectangle (or pick the rectangle or lasso button below the points); click a "
                "point and choose *Nearest Neighbors*: its one neighbour is its pair.")
ATLAS_CLEAR = ("Filter in the atlas (a bar of a chart, a histogram range); press Esc in it, or "
               "click × beside its selection count, to clear.")
ATLAS_VERIFIED = ("(Tested in a browser: chart filters list the right pairs. The point view "
                  "needs WebGPU; a rectangle, lasso or click there has not been tested.)")
#: Seconds the atlas may take to draw its view before the page says it did not start.
START_TIMEOUT_S = 120
#: Session keys: why the atlas did not start in this browser; that the viewer must switch to
#: the sample on the next run; what the browser's WebGPU lacks.
FAILED_KEY = "_explore_atlas_failed"
SWITCH_KEY = "_explore_atlas_switch"
WEBGPU_KEY = "_explore_atlas_webgpu"
#: Where the component's copy is laid out, under the cache root.
VIEWER_AREA = "atlas-viewer"
#: The one URL of the component's code that loads DuckDB-WASM (``getJsDelivrBundles``).
_CDN_BUNDLES = re.compile(r"https://cdn\.jsdelivr\.net/npm/\$\{\w+\}@\$\{\w+\}/dist/")
_DUCKDB_VERSION = re.compile(r"name:`@duckdb/duckdb-wasm`,version:`([^`]+)`")
#: DuckDB-WASM's files under the names its bundles ask for, and where the package ships them.
_DUCKDB_FILES = {"duckdb-browser-eh.worker.js": "duckdb-browser-eh.worker-*.js",
                 "duckdb-browser-mvp.worker.js": "duckdb-browser-mvp.worker-*.js",
                 "duckdb-eh.wasm": "duckdb-eh-*.wasm",
                 "duckdb-mvp.wasm": "duckdb-mvp-*.wasm"}
_WATCH_JS = Path(__file__).with_name("atlas_watch.js")
#: Bumped when the layout of the copy changes, so an old copy is not reused.
_LAYOUT_VERSION = "1"


def atlas_installed() -> bool:
    """Whether the ``embedding-atlas`` package can be imported."""
    return importlib.util.find_spec("embedding_atlas") is not None


# ---------------------------------------------------------------------------------------------
# the component, served from this app (no Streamlit here: tested on its own)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewerFolder:
    """The atlas component's copy that this app serves.

    Attributes
    ----------
    path : Path
        Folder with ``index.html`` and ``assets/`` (Streamlit serves it as the component).
    local_duckdb : bool
        Whether its code loads DuckDB-WASM from ``assets/duckdb/`` in this folder (else from
        cdn.jsdelivr.net, as the package's component does).
    reason : str or None
        Why not, when ``local_duckdb`` is False.
    """

    path: Path
    local_duckdb: bool
    reason: str | None = None


def duckdb_wasm_version(js: str) -> str | None:
    """The DuckDB-WASM version a bundled script embeds (its package.json), or None."""
    found = set(_DUCKDB_VERSION.findall(js))
    return found.pop() if len(found) == 1 else None


def local_duckdb_code(js: str) -> str | None:
    """The atlas component's code with DuckDB-WASM's CDN address replaced by the folder
    ``duckdb/`` beside the script itself (an absolute URL: the worker is started from a
    ``blob:`` URL, where a relative one would not resolve); None unless the address occurs
    exactly once."""
    if len(_CDN_BUNDLES.findall(js)) != 1:
        return None
    return _CDN_BUNDLES.sub(lambda _: '${new URL("duckdb/",import.meta.url).href}', js)


def watch_script(timeout_s: float = START_TIMEOUT_S) -> str:
    """The start watch (``atlas_watch.js``) as an inline ``<script>`` element."""
    code = _WATCH_JS.read_text(encoding="utf-8")
    code = code.replace("__START_TIMEOUT_MS__", str(int(timeout_s * 1000)))
    return f"<script>\n{code}</script>\n"


def _place(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no second copy on disk), else a copy. Not a
    symbolic link: Streamlit serves nothing that resolves outside the component's folder."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _plan(package: Path) -> tuple[Path, Path, str | None, dict[str, Path], str | None]:
    """What the copy is made of: the component's folder, its script that loads DuckDB-WASM,
    that script with the local address (or None), DuckDB-WASM's files by the names the
    script asks for, and why they cannot be served locally (or None)."""
    source = package / "widget_static" / "streamlit"
    if not (source / "index.html").is_file():
        raise FileNotFoundError(f"embedding-atlas has no Streamlit component at {source}")
    scripts = [p for p in sorted((source / "assets").glob("*.js"))
               if _CDN_BUNDLES.search(p.read_text(encoding="utf-8", errors="replace"))]
    if len(scripts) != 1:
        return source, source / "index.html", None, {}, (
            "this embedding-atlas version loads DuckDB-WASM in a way gapviz does not know")
    script = scripts[0]
    code = script.read_text(encoding="utf-8")
    patched = local_duckdb_code(code)
    shipped = package / "static" / "assets"
    files: dict[str, Path] = {}
    for name, pattern in _DUCKDB_FILES.items():
        found = sorted(shipped.glob(pattern))
        if not found:
            return source, script, None, {}, f"embedding-atlas ships no {pattern} in {shipped}"
        files[name] = found[0]
    viewers = list(shipped.glob("index-*.js"))
    want = duckdb_wasm_version(code)
    have = {duckdb_wasm_version(p.read_text(encoding="utf-8", errors="replace"))
            for p in viewers}
    if want is None or have != {want}:
        return source, script, None, {}, (
            f"the DuckDB-WASM embedding-atlas ships ({', '.join(sorted(map(str, have)))}) is "
            f"not the one its component uses ({want})")
    return source, script, patched, files, None


def build_viewer_folder(package: str | os.PathLike, root: str | os.PathLike, *,
                        timeout_s: float = START_TIMEOUT_S) -> ViewerFolder:
    """Lay out the atlas component under ``root`` (once per package build; reused after).

    The copy holds the component's files (hard links where possible), its script loading
    DuckDB-WASM from ``assets/duckdb/`` (the DuckDB-WASM files the package ships for its own
    viewer, same version) and an ``index.html`` that runs :func:`watch_script` first. When the
    package's layout is not the known one, the copy keeps the CDN address and says why in
    ``reason`` (the watch script still reports a failed start).

    Raises
    ------
    OSError
        When ``root`` cannot be written.
    """
    package = Path(package)
    source, script, patched, files, reason = _plan(package)
    watch = watch_script(timeout_s)
    digest = hashlib.sha1()
    for part in (_LAYOUT_VERSION, watch, str(patched is not None)):
        digest.update(part.encode())
    for path in sorted(source.rglob("*")) + sorted(files.values()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = Path(root) / f"embedding-atlas-{digest.hexdigest()[:16]}"
    done = folder / ".complete"
    if not done.is_file():
        Path(root).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            for path in source.rglob("*"):
                target = work / path.relative_to(source)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                elif path == script and patched is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(patched, encoding="utf-8")
                elif path.name == "index.html" and path.parent == source:
                    html = path.read_text(encoding="utf-8")
                    head = html.find("<head>")
                    at = head + len("<head>") if head >= 0 else 0
                    target.write_text(html[:at] + "\n" + watch + html[at:],
                                      encoding="utf-8")
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _place(path, target)
            if patched is not None:
                (work / "assets" / "duckdb").mkdir(parents=True, exist_ok=True)
                for name, path in files.items():
                    _place(path, work / "assets" / "duckdb" / name)
            (work / ".complete").write_text("")
            try:
                work.rename(folder)
            except OSError:
                if not done.is_file():  # not another process finishing the same copy first
                    raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return ViewerFolder(folder, patched is not None, reason)


@dataclass(frozen=True)
class AtlasViewer:
    """The atlas as Explore calls it.

    Attributes
    ----------
    component : callable
        The declared component, called as ``component(data_frame=, props=, key=, default=)``
        like the package's own; returns the browser's value (``{"predicate": ...}``, or the
        start watch's ``{"gapviz": ...}``).
    props : callable
        The atlas's props from its options (``embedding_atlas.options.make_embedding_atlas_props``).
    folder : ViewerFolder or None
        The copy served; None when none could be laid out (the package's own component is
        used, loading DuckDB-WASM from the CDN).
    problem : str or None
        Why no copy could be laid out.
    """

    component: Callable[..., Any]
    props: Callable[..., dict]
    folder: ViewerFolder | None
    problem: str | None = None

    @property
    def local(self) -> bool:
        """Whether DuckDB-WASM is served by this app (no request leaves it)."""
        return self.folder is not None and self.folder.local_duckdb


@st.cache_resource(show_spinner=False)
def viewer() -> AtlasViewer:
    """The atlas component, served from a copy under the cache root (else the temporary
    folder); once per server process."""
    import embedding_atlas
    import streamlit.components.v1 as components
    from embedding_atlas.options import make_embedding_atlas_props

    package = Path(embedding_atlas.__file__).resolve().parent
    problems = []
    for root in (cache_root() / VIEWER_AREA,
                 Path(tempfile.gettempdir()) / f"gapviz-{os.getuid()}-{VIEWER_AREA}"):
        try:
            folder = build_viewer_folder(package, root)
        except OSError as err:
            problems.append(f"{root}: {err}")
            continue
        component = components.declare_component("embedding_atlas", path=str(folder.path))
        return AtlasViewer(component, make_embedding_atlas_props, folder)
    from embedding_atlas.streamlit import _embedding_atlas

    return AtlasViewer(_embedding_atlas, make_embedding_atlas_props, None, "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# the panel
# ---------------------------------------------------------------------------------------------
def _table(key: str, proj: Projection, ids, captions) -> av.AtlasTable:
    # One table per pool and projection for every session (tens of MB at 200,000 points),
    # released when the last session holding the pool ends.
    name = ("atlas-table", proj.method)
    if POOLS.has_view(key, name):
        return POOLS.view(key, name, lambda: av.atlas_table(proj, ids=ids, captions=captions))
    with st.spinner("Preparing the atlas of the pool…"):
        return POOLS.view(key, name, lambda: av.atlas_table(proj, ids=ids, captions=captions))


def atlas_panel(key: str, proj: Projection, ids, captions) -> list[tuple[int, str]]:
    """Draw the atlas of the pool (``key``: its content hash) and return the selected
    ``(row, modality)``, rows of the whole pool. When the browser reports that the atlas did
    not start, remember why and rerun: the panel then shows the Plotly sample."""
    atlas = viewer()
    table = _table(key, proj, ids, captions)
    st.caption(f"{table.sample.describe()} Drawn with Embedding Atlas. {ATLAS_HOW_TO} "
               f"{ATLAS_VERIFIED}")
    if not atlas.local:
        why = atlas.folder.reason if atlas.folder is not None else atlas.problem
        st.caption(f"This atlas loads DuckDB-WASM from cdn.jsdelivr.net ({user_text(why)}): "
                   "without access to it, the atlas does not start and the page switches to "
                   "the Plotly sample.")
    lack = st.session_state.get(WEBGPU_KEY)
    if lack:
        st.info(f"This browser has {user_text(lack, None)}, so the atlas's point view stays "
                "empty: its charts, search and table work, and chart filters list pairs "
                f"here. *{VIEWERS[1]}* draws the points in any browser.",
                icon=":material/info:")
    props = atlas.props(x=av.X, y=av.Y, text=av.TEXT, neighbors=av.NEIGHBORS)
    value = atlas.component(data_frame=table.frame, props=props, default={},
                            key=f"explore_atlas_{key[:12]}_{proj.method}")
    value = value if isinstance(value, dict) else {}
    status = value.get("gapviz")
    if isinstance(status, dict) and status.get("state") == "failed":
        st.session_state[FAILED_KEY] = str(status.get("reason") or "no reason given")
        st.session_state[SWITCH_KEY] = True
        st.rerun()
    if isinstance(status, dict) and status.get("webgpu") and not lack:
        st.session_state[WEBGPU_KEY] = str(status["webgpu"])
        st.rerun()
    return av.rows_for_predicate(table, value.get("predicate"))


def is_large(n_pairs: int) -> bool:
    """Whether a pool of ``n_pairs`` pairs has more points than Plotly draws smoothly."""
    return 2 * n_pairs > av.PLOTLY_MAX_POINTS


def atlas_refusal() -> str | None:
    """Why Explore does not offer the atlas here (None: it does)."""
    if not atlas_installed():
        return "not installed"
    if hosting.hosted() and not viewer().local:
        return ("Embedding Atlas is not offered on this hosted demo: this app could not serve "
                "its copy of DuckDB-WASM, and a hosted page loads nothing from elsewhere.")
    return None


def viewer_in_use(n_pairs: int) -> str:
    """"plotly" (a pool Plotly draws whole), "atlas" or "sample" (a large pool's viewer)."""
    if not is_large(n_pairs):
        return "plotly"
    if atlas_refusal() is not None or st.session_state.get(SWITCH_KEY):
        return "sample"
    return "atlas" if kept("explore_viewer", VIEWERS[0]) == VIEWERS[0] else "sample"


def selection_help(n_pairs: int) -> tuple[str, str]:
    """``(how to select, how to clear)`` for the viewer Explore shows a pool of ``n_pairs``
    (for a large pool, the first is general: the panel says how to select in its viewer)."""
    used = viewer_in_use(n_pairs)
    if used == "plotly":
        return f"Hover a point for its caption. {PLOTLY_HOW_TO}", PLOTLY_CLEAR
    how = "How to select depends on the viewer: the line above the chart says how."
    return how, ATLAS_CLEAR if used == "atlas" else PLOTLY_CLEAR


def _choose_again() -> None:
    # The user picked a viewer: a past failure no longer decides it (the atlas gets a new try).
    st.session_state.pop(FAILED_KEY, None)
    st.session_state.pop(SWITCH_KEY, None)


def large_pool_panel(key: str, proj: Projection, ids, captions, *, lines: bool,
                     height: int) -> list[tuple[int, str]]:
    """A pool past Plotly's limit: the atlas when installed (and, on a hosted demo, served by
    this app alone), else a seeded sample in Plotly, said so (with the install command, or
    why the atlas did not start). Returns the selected ``(row, modality)``."""
    refusal = atlas_refusal()
    sample = plotly_sample(proj.n)
    if refusal == "not installed":
        install_note(sample)
        st.caption(PLOTLY_HOW_TO)
    elif refusal is not None:
        st.caption(f"{sample.describe()} {refusal} {PLOTLY_HOW_TO}")
    else:
        if st.session_state.pop(SWITCH_KEY, False):
            set_kept("explore_viewer", VIEWERS[1])
        options = keep("explore_viewer", VIEWERS[0])
        save = options["on_change"]
        options["on_change"] = lambda: (save(), _choose_again())
        chosen = st.radio("Viewer", VIEWERS, horizontal=True, help=VIEWER_HELP, **options)
        if chosen == VIEWERS[0]:
            return atlas_panel(key, proj, ids, captions)
        failed = st.session_state.get(FAILED_KEY)
        if failed:
            st.warning(f"Embedding Atlas did not start in this browser: {user_text(failed)}. "
                       f"Showing the Plotly sample instead; choose *{VIEWERS[0]}* above to try "
                       "again.", icon=":material/warning:")
        st.caption(f"{sample.describe()} {PLOTLY_HOW_TO}")
    sub, sub_ids, sub_caps = subset(proj, ids, captions, sample)
    fig = figures.gap_scatter(sub, ids=sub_ids, captions=sub_caps, pair_lines=lines,
                              height=height)
    event = st.plotly_chart(fig, key=f"explore_scatter_{key[:12]}_sample", on_select="rerun",
                            selection_mode=("box", "lasso", "points"),
                            config={"displaylogo": False})
    return to_pool_rows(sample, figures.selected_rows(event.selection if event else None))


def plotly_sample(n_pairs: int) -> av.PoolSample:
    """The seeded sample of pairs the Plotly scatter shows of a pool past its limit."""
    return av.sample_pairs(n_pairs, av.PLOTLY_MAX_POINTS)


def subset(proj: Projection, ids, captions, sample: av.PoolSample):
    """The projection, ids and captions of the sampled pairs (row i = pair ``sample.rows[i]``)."""
    rows = sample.rows
    take = (lambda seq: [seq[int(r)] for r in rows]) if rows.size else (lambda seq: [])
    return (av.subset_projection(proj, rows), take(ids) if ids is not None else None,
            take(captions) if captions is not None else None)


def install_note(sample: av.PoolSample) -> None:
    """Say that the Plotly scatter is a sample, and how to see the whole pool."""
    st.info(f"{sample.describe()} Plotly draws up to {av.PLOTLY_MAX_POINTS:,} points; to see "
            f"up to {av.ATLAS_MAX_POINTS:,}, install Embedding Atlas: `{av.ATLAS_INSTALL}` "
            "(or `pip install embedding-atlas`) and restart the app.", icon=":material/info:")


def to_pool_rows(sample: av.PoolSample, rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """``(row, modality)`` of a sampled scatter mapped back to rows of the whole pool."""
    m = int(sample.rows.size)
    return [(int(sample.rows[r]), mod) for r, mod in rows if 0 <= r < m]
