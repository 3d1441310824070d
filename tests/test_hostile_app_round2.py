"""Hostile inputs, second round: one generated-fixture test per class of defect.

1. Costly uploads within limits: few pairs of a large d are solved in the span of the data
   (spectral, Procrustes), exactly as before, with no d x d factorisation.
2. Sizes: the embeddings count as float32 against the limit whatever their stored type; a
   hosted upload's files count together; a hosted session keeps a bounded number of embeddings.
3. Display: user strings in markdown make no links; ids and captions make no markup in hovers
   or in the HTML cards.
4. Honest messages and labels: values beyond float32 are called that; non-finite method
   parameters are refused by name; a file only claiming to be the simulation is not treated
   as one; an upload name holding "/" loads.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import linalg

from gapviz.embeddings import (EmbeddingsFileError, PairedEmbeddings, SKIP_NONFINITE,
                               SKIP_TOO_LARGE, load_embeddings, save_embeddings, to_npz_bytes)
from gapviz.measures import measure_gap
from gapviz.methods import make_method
from gapviz.methods import spectral as spectral_mod
from gapviz.methods.base import l2_normalize
from gapviz.simulate import simulate_pairs
from gapviz.workspace import DEMO_DATASET, Workspace


def _pairs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n pairs in d dimensions with a gap (two offset cones) and a shared signal."""
    rng = np.random.default_rng(seed)
    meaning = rng.normal(size=(n, d))
    shift = rng.normal(size=d) * 3
    X = meaning + rng.normal(size=(n, d)) * 0.5 + shift
    Y = meaning + rng.normal(size=(n, d)) * 0.5 - shift
    return X.astype(np.float32), Y.astype(np.float32)


def _same_measures(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    ma, mb = measure_gap(*a).metrics, measure_gap(*b).metrics
    assert ma.keys() == mb.keys()
    for key in ma:
        np.testing.assert_allclose(ma[key], mb[key], rtol=1e-4, atol=1e-5, err_msg=key)


# ---------------------------------------------------------------------------------------------
# 1. few pairs of a large d: the span of the data, not d x d
# ---------------------------------------------------------------------------------------------
def test_few_high_dimensional_pairs_are_solved_in_their_span_exactly_as_before(monkeypatch):
    n, d = 40, 300
    X, Y = _pairs(n, d)
    X_new, Y_new = _pairs(7, d, seed=1)
    factorised: list[int] = []
    eigh, procrustes = linalg.eigh, linalg.orthogonal_procrustes

    def spy_eigh(a, *args, **kwargs):
        factorised.append(a.shape[0])
        return eigh(a, *args, **kwargs)

    def spy_procrustes(A, B, *args, **kwargs):
        factorised.append(A.shape[1])
        return procrustes(A, B, *args, **kwargs)

    monkeypatch.setattr(linalg, "eigh", spy_eigh)
    monkeypatch.setattr(linalg, "orthogonal_procrustes", spy_procrustes)
    span = make_method("spectral", n_components=12, max_components=30).fit(X, Y)
    proc = make_method("procrustes").fit(X, Y)
    assert factorised and max(factorised) <= 2 * n < d   # nothing of size d x d was factorised
    monkeypatch.undo()

    # Spectral: the old (d+1) x (d+1) route gives the same eigenpairs, embedding and measures.
    whole = spectral_mod._lowrank_svd
    monkeypatch.setattr(spectral_mod, "_lowrank_svd",
                        lambda P, Q, k: whole(P, Q, k, span=False))
    old = make_method("spectral", n_components=12, max_components=30).fit(X, Y)
    np.testing.assert_allclose(span.eigenvalues_, old.eigenvalues_, atol=1e-9)
    np.testing.assert_allclose(span.embedding_, old.embedding_, atol=1e-7)
    for k in (2, 12, 30):
        np.testing.assert_allclose(span.training_embedding(k), old.training_embedding(k), atol=1e-5)
    np.testing.assert_allclose(span.transform_images(X_new), old.transform_images(X_new), atol=1e-5)
    _same_measures(span.training_embedding(12), old.training_embedding(12))

    # Procrustes: the d x d solution of scipy on the same centred pairs. On the fitted rows
    # (they span the problem) both maps agree; the objective is the same optimum.
    Xn, Yn = l2_normalize(X).astype(np.float64), l2_normalize(Y).astype(np.float64)
    A, B = Xn - Xn.mean(0), Yn - Yn.mean(0)
    R, _ = procrustes(A, B)
    before = (l2_normalize((l2_normalize(X) - proc.mean_image_) @ R.astype(np.float32)),
              proc.transform_texts(Y))
    after = proc.transform(X, Y)
    np.testing.assert_allclose(after[0], before[0], atol=1e-5)
    _same_measures(after, before)
    assert proc.basis_.shape == (d, 2 * n) and proc.rotation_.shape == (d, d)
    np.testing.assert_allclose(proc.rotation_.T @ proc.rotation_, np.eye(d), atol=1e-5)
    assert np.linalg.norm(A @ proc.rotation_ - B) == pytest.approx(np.linalg.norm(A @ R - B), rel=1e-5)
    # Unseen rows: the rotation is the identity off the span, so they stay unit rows.
    np.testing.assert_allclose(np.linalg.norm(proc.transform_images(X_new), axis=1), 1, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 2. sizes counted as they are held
# ---------------------------------------------------------------------------------------------
def test_sizes_count_float32_bytes_the_whole_upload_and_a_bounded_session(tmp_path, monkeypatch):
    # int8 embeddings: 4,000 bytes stored each, 16,000 once float32; a 20,000-byte limit
    # passed the stored bytes but not what loading holds.
    rng = np.random.default_rng(0)
    narrow = tmp_path / "int8.npz"
    np.savez(narrow, image_embeddings=rng.integers(-9, 9, (100, 40), dtype=np.int8),
             text_embeddings=rng.integers(-9, 9, (100, 40), dtype=np.int8))
    with pytest.raises(EmbeddingsFileError, match=r"32,000 bytes in memory.*20,000 bytes limit"):
        load_embeddings(narrow, max_bytes=20_000)
    pairs, _ = load_embeddings(narrow, max_bytes=40_000)
    assert pairs.image_embeddings.dtype == np.float32 and pairs.n == 100

    # A session keeps at most N embeddings besides the demo, least recently used dropped
    # first, never the active one; hosted, the bound comes from the environment.
    monkeypatch.setenv("GAPVIZ_HOSTED", "1")
    monkeypatch.setenv("GAPVIZ_MAX_SESSION_EMBEDDINGS", "2")
    ws = Workspace()
    assert ws.max_embeddings == 2
    demo = simulate_pairs(20, 8)
    ws.add(demo, source="built-in demo", dataset=DEMO_DATASET)
    made = {}
    for i in range(3):
        X, Y = _pairs(6, 4, seed=i)
        made[i] = ws.add(PairedEmbeddings(X, Y, ids=[f"{i}-{j}" for j in range(6)], model=f"m{i}"),
                         source=f"file {i}")
        if i == 1:
            ws.select(*made[0])          # file 0 used again: file 1 is now the oldest
            ws.select(*made[1])          # ...and file 1 the active one
    assert ws.active.dataset.name == "file 2"
    assert set(ws.datasets) == {DEMO_DATASET, "file 1", "file 2"}  # file 0 least recently used
    notices = ws.take_notices()
    assert len(notices) == 1 and "'m0' of 'file 0'" in notices[0] and "at most 2" in notices[0]
    assert not ws.take_notices()
    assert Workspace(max_embeddings=None).max_embeddings is None
    monkeypatch.setenv("GAPVIZ_MAX_SESSION_EMBEDDINGS", "two")
    with pytest.raises(ValueError, match="GAPVIZ_MAX_SESSION_EMBEDDINGS"):
        Workspace()
    monkeypatch.delenv("GAPVIZ_HOSTED")
    assert Workspace().max_embeddings is None   # on one's own machine: no bound


def test_a_hosted_upload_counts_its_files_together_and_a_session_drops_old_embeddings(
        monkeypatch, gapviz_cache, app_session):
    monkeypatch.setenv("GAPVIZ_HOSTED", "1")
    monkeypatch.setenv("GAPVIZ_MAX_UPLOAD_MB", "0.05")           # 52,428 bytes per upload
    monkeypatch.setenv("GAPVIZ_MAX_SESSION_EMBEDDINGS", "1")
    files = []
    for i in range(3):                                           # about 22 KB each
        X, Y = _pairs(80, 32, seed=i)
        pe = PairedEmbeddings(X, Y, ids=[f"{i}-{j}" for j in range(80)], model=f"model {i}")
        files.append((f"part{i}.npz", to_npz_bytes(pe), "application/octet-stream"))
    assert all(len(f[1]) < 52_428 for f in files) and sum(len(f[1]) for f in files) > 52_428
    at = app_session("pages/data.py")
    before = at.session_state["workspace"].active.key
    at.file_uploader(key="data_emb_upload").set_value(files).run()
    at.button(key="data_emb_go").click().run()
    assert not at.exception
    total = sum(len(f[1]) for f in files) / 1024**2
    assert [e.value for e in at.error] == [
        f"Could not load these files: these 3 files take {total:.2g} MiB together, more than "
        "the 0.05 MiB this demo accepts in one upload; upload fewer or smaller files."]
    ws = at.session_state["workspace"]
    assert ws.active.key == before and set(ws.datasets) == {DEMO_DATASET}
    # One at a time they pass; the session keeps one besides the demo and says so.
    for name, data, mime in files[:2]:
        at.file_uploader(key="data_emb_upload").set_value([(name, data, mime)]).run()
        at.button(key="data_emb_go").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    ws = at.session_state["workspace"]
    assert set(ws.datasets) == {DEMO_DATASET, "embeddings file part1.npz"}
    assert any("Dropped 'model 0'" in i.value for i in at.info)


# ---------------------------------------------------------------------------------------------
# 3. display: no links, no markup
# ---------------------------------------------------------------------------------------------
#: What Streamlit's markdown (remark-gfm) links after escapes are undone: ports of the
#: regular expressions of mdast-util-gfm-autolink-literal (JavaScript's \w is ASCII).
_GFM_URL = re.compile(r"(?i)(https?://|www(?=\.))[-.\w]+", re.ASCII)
_GFM_EMAIL = re.compile(r"[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.ASCII)


def _as_rendered(markdown: str) -> str:
    """The text markdown shows: backslash escapes undone."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_user_strings_make_no_links_in_markdown_and_no_markup_in_hovers():
    from gapviz.figures import gap_scatter
    from gapviz.figures import retrieval as rv
    from gapviz.projection import joint_pca
    from gapviz.retrieval import retrieve
    from ui.components import user_text

    hostile = ["https://evil.example/a", "see www.evil.example now", "mail x@host.example",
               "HTTP://EVIL.EXAMPLE", "WWW.EVIL.EXAMPLE", "mailto:x@y.example", "a<b>&c"]
    for text in hostile:
        shown = _as_rendered(user_text(text))
        assert not _GFM_URL.search(shown) and not _GFM_EMAIL.search(shown), (text, shown)
        assert shown.replace("\u2060", "") == text                   # reads as typed
    assert user_text("sim-CLIP (simulated; imitates OpenAI CLIP ViT-L/14)") == \
        "sim-CLIP (simulated; imitates OpenAI CLIP ViT-L/14)"       # nothing else changes

    n = 6
    X, Y = _pairs(n, 8)
    ids = ["<b>bold</b>", "a&amp;b", "<a href='https://evil.example'>x</a>", "3", "4", "5"]
    captions = ["<img src=x onerror=alert(1)>", "fish & chips", "x" * 200 + "&", "c", "d", "e"]
    fig = gap_scatter(joint_pca(X, Y), ids=ids, captions=captions)
    for trace in fig.data[:2]:
        assert list(trace.text[:3]) == ["&lt;b&gt;bold&lt;/b&gt;", "a&amp;amp;b",
                                        "&lt;a href='https://evil.example'&gt;x&lt;/a&gt;"]
        assert trace.hovertext[0] == "&lt;img src=x onerror=alert(1)&gt;"
        assert trace.hovertext[1] == "fish &amp; chips"
        assert trace.hovertext[2].endswith("…")                     # cut before escaping
        np.testing.assert_array_equal(np.asarray(trace.customdata)[:, 0], np.arange(n))

    pairs = PairedEmbeddings(X, Y, ids=["<i>p\n\n# heading</i>"] + ids[1:], captions=captions)
    res = retrieve(X, Y, "text", 0, 3)
    figure = rv.query_figure(res, k=3, pool_size=2 * n - 1, query=rv.Query("text", 0),
                             ids=pairs.ids, title="<b>model</b>")
    marker = next(t for t in figure.data if t.type == "scatter")
    assert marker.customdata[0][1] == "&lt;i&gt;p # heading&lt;/i&gt;"
    assert "%{customdata[1]}" in marker.hovertemplate
    assert figure.layout.title.text == "&lt;b&gt;model&lt;/b&gt;"
    cards = rv.hits_html(pairs, res, rv.Query("text", 0)) + rv.query_html(pairs, rv.Query("text", 0))
    assert "<i>p" not in cards and "\n\n" not in cards.split("</style>")[-1]  # one HTML block


# ---------------------------------------------------------------------------------------------
# 4. honest messages and labels
# ---------------------------------------------------------------------------------------------
def test_too_large_values_nonfinite_parameters_and_claims_of_simulation_are_named(tmp_path):
    # Finite float64 values beyond float32: "too large", in both formats.
    X, Y = _pairs(5, 4)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    X64[1, 2], Y64[3, 0], X64[4, 1] = 1e39, -5e38, np.inf
    np.savez(tmp_path / "big.npz", image_embeddings=X64, text_embeddings=Y64)
    table = pa.table({"image_embedding": pa.array(list(X64), pa.list_(pa.float64())),
                      "text_embedding": pa.array(list(Y64), pa.list_(pa.float64()))})
    pq.write_table(table, tmp_path / "big.parquet")
    for name in ("big.npz", "big.parquet"):
        pairs, report = load_embeddings(tmp_path / name)
        assert report.skipped[SKIP_TOO_LARGE] == [1, 3] and report.skipped[SKIP_NONFINITE] == [4]
        assert "(|x| > 3.4e38)" in SKIP_TOO_LARGE and pairs.n == 2
        assert "too large for float32" in report.summary()

    # Non-finite parameters: refused before any work, naming the parameter.
    X, Y = _pairs(30, 8)
    cases = [("sinkhorn", "reg"), ("sinkhorn", "tol"), ("ot", "reg_lap"), ("ot", "reg_src"),
             ("ot", "similarity_param"), ("ot", "tol"), ("ot", "inner_tol"),
             ("spectral", "heat_scale"), ("spectral", "within_weight"), ("pca", "n_components")]
    cases += [("vlap", "temperature"), ("vlap", "epsilon"), ("vlap", "lr")]
    for method, param in cases:
        small = {"n_anchors": 8} if method == "vlap" else {}
        for bad in (np.inf, -np.inf, np.nan):
            with pytest.raises(ValueError, match=rf"^{method}: {param} must be a finite number"):
                make_method(method, **small, **{param: bad}).fit(X, Y)
    with pytest.raises(ValueError, match="heat_scale must be a number, got 'x'"):
        make_method("spectral", heat_scale="x").fit(X, Y)
    with pytest.raises(ValueError, match="center must be True or False"):
        make_method("procrustes", center="no").fit(X, Y)
    fitted = make_method("sinkhorn", reg=0.05, fit_size=20).fit(X, Y)
    with pytest.raises(ValueError, match="reg must be a finite number"):
        fitted.refit(reg=np.inf)
    assert fitted.reg == 0.05                                      # left as it was

    # The simulation is recognised by its content; a claim in the meta is not enough.
    sim = simulate_pairs(60, 16, profile="siglip", seed=4)
    assert sim.is_simulated
    real, _ = load_embeddings(save_embeddings(sim, tmp_path / "sim.npz"))
    assert real.is_simulated                                      # saved and read back: still it
    doctored = sim.with_embeddings(sim.image_embeddings[::-1], sim.text_embeddings)
    loaded, report = load_embeddings(save_embeddings(doctored, tmp_path / "claims.npz"))
    assert loaded.meta["simulated"] and not loaded.is_simulated
    assert any("treated as real data" in w for w in report.warnings)
    from gapviz.recipes import demo_of
    assert demo_of(sim) is not None and demo_of(loaded) is None    # no reproduce command
    fake = PairedEmbeddings(X, Y, ids=[f"sim-{i:05d}" for i in range(30)],
                            meta={"simulated": True, "profile": "clip", "seed": 0,
                                  "params": {"shift": "huge"}})
    assert not fake.is_simulated
    ws = Workspace(max_embeddings=None)
    ws.add(loaded, source="embeddings file claims.npz")
    assert not ws.active.simulated and not ws.active.dataset.simulated


def test_an_upload_named_with_slashes_loads_and_shows_its_name_as_text(gapviz_cache, app_session):
    X, Y = _pairs(12, 8)
    pe = PairedEmbeddings(X, Y, model="https://evil.example/model x@host.example",
                          captions=["one\n\n# not a heading https://evil.example"] * 12,
                          meta={"simulated": True, "cluster": [99] * 12, "cluster_names": ["a"]})
    at = app_session("pages/data.py")
    at.file_uploader(key="data_emb_upload").set_value(
        [("models/ours/emb.npz", to_npz_bytes(pe), "application/octet-stream")]).run()
    at.button(key="data_emb_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ws = at.session_state["workspace"]
    assert ws.active.dataset.name == "embeddings file emb.npz"
    assert ws.active.model == pe.model
    shown = [m.value for m in at.sidebar.markdown] + [c.value for c in at.caption]
    model_lines = [s for s in shown if "evil" in s]
    assert model_lines
    for line in model_lines:
        rendered = _as_rendered(line)
        assert not _GFM_URL.search(rendered) and not _GFM_EMAIL.search(rendered), line
    # The preview: captions on one line inside their HTML block, no concept names taken from
    # a file that only claims to be simulated (its cluster 99 has no name), no "Simulated" badge.
    previews = [m.value for m in at.markdown if "not a heading" in m.value]
    assert len(previews) == 12 and not any("\n\n" in v for v in previews)
    assert not ws.active.simulated
    assert not any("Simulated data" in m.value for m in at.markdown)      # the badge
