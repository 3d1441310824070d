"""Score corrections: every rank on the corrected scores equals a dense float64 computation of
each published formula, written here straight from the papers' / upstream code's definitions
(not from gapviz's score terms), with banks from the fit pairs only."""

import numpy as np
import pytest

from gapviz.closing_gains import gain_outcomes
from gapviz.measures import TIE_TOL_FLOAT64, measure_gap
from gapviz.methods import make_method
from gapviz.protocols import fit_and_score, protocol_transform
from gapviz.score_search import pool_search
from gapviz.score_terms import ScoreTerms
from gapviz.simulate import simulate_pairs

from reference import RANK_FIELDS, assert_report_is_float64, metrics_from_ranks, planted_ties, ranks_from_scores

CORRECTIONS = {
    "score_zscore": {},
    "csls": {"k": 10},
    "qb_norm": {"beta": 20.0, "k": 1, "dynamic": True},
    "qb_norm_static": {"beta": 20.0, "k": 1, "dynamic": False},
    "dbnorm": {"beta1": 1 / 1.99, "beta2": 3.0},
    "dbnorm_sharp": {"beta1": 50.0, "beta2": 1.0},
    "nnn": {"alpha": 0.75, "k": 16},
}


def unit(A):
    A = np.asarray(A, dtype=np.float64)
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def mean_top(S, k):
    return np.sort(S, axis=1)[:, ::-1][:, :k].mean(axis=1)


def formula(name, params, fit, scored):
    """The corrected 2N x 2N score matrix of the scored pool (images first) and each entry's
    tie tolerance (TOL times the formula's coefficient of the cosine)."""
    bank = [unit(fit[0]), unit(fit[1])]
    pool = [unit(scored[0]), unit(scored[1])]
    n = pool[0].shape[0]
    S = np.empty((2 * n, 2 * n))
    tol = np.empty((2 * n, 2 * n))
    Z = np.vstack(pool)
    raw = Z @ Z.T
    if name == "qb_norm":  # dynamic: the activation set and each query's nearest pool item
        gated = np.zeros(2 * n, bool)
        for mq in (0, 1):
            top = np.argsort(-(bank[mq] @ Z.T), axis=1, kind="stable")[:, :params["k"]]
            active = np.zeros(2 * n, bool)
            active[top.ravel()] = True
            others = raw[mq * n:(mq + 1) * n].copy()
            others[np.arange(n), mq * n + np.arange(n)] = -np.inf
            gated[mq * n:(mq + 1) * n] = active[others.argmax(axis=1)]
    for mq in (0, 1):
        for mc in (0, 1):
            q, c = slice(mq * n, (mq + 1) * n), slice(mc * n, (mc + 1) * n)
            cos = pool[mq] @ pool[mc].T
            if name == "score_zscore":
                block = bank[mq] @ bank[mc].T
                values = block[~np.eye(len(block), dtype=bool)] if mq == mc else block.ravel()
                mu, sigma = values.mean(), values.std()
                S[q, c], coef = (cos - mu) / sigma, np.full(n, 1 / sigma)
            elif name == "csls":  # 2 cos - r_T(x) - r_S(y) (MUSE)
                r_t = mean_top(pool[mq] @ bank[mc].T, params["k"])
                r_s = mean_top(pool[mc] @ bank[mq].T, params["k"])
                S[q, c], coef = 2 * cos - r_t[:, None] - r_s[None, :], np.full(n, 2.0)
            elif name in ("qb_norm", "qb_norm_static"):  # exp(beta s) / sum_bank exp(beta s_b)
                beta = params["beta"]
                norm = np.exp(beta * (bank[mq] @ pool[mc].T)).sum(axis=0)
                inverted = np.log(np.exp(beta * cos) / norm[None, :])
                on = gated[q] if name == "qb_norm" else np.ones(n, bool)
                S[q, c] = np.where(on[:, None], inverted, cos)
                coef = np.where(on, beta, 1.0)
            elif name in ("dbnorm", "dbnorm_sharp"):  # query bank x gallery bank softmaxes
                b1, b2 = params["beta1"], params["beta2"]
                zq = np.exp(b1 * (bank[mq] @ pool[mc].T)).sum(axis=0)
                zg = np.exp(b2 * (bank[mc] @ pool[mc].T)).sum(axis=0)
                S[q, c] = np.log(np.exp(b1 * cos) / zq[None, :] * np.exp(b2 * cos) / zg[None, :])
                coef = np.full(n, b1 + b2)
            elif name == "nnn":  # s - alpha * mean top-k bank-query scores of the candidate
                bias = mean_top(pool[mc] @ bank[mq].T, params["k"])
                S[q, c], coef = cos - params["alpha"] * bias[None, :], np.ones(n)
            tol[q, c] = TOL_SCALE * TIE_TOL_FLOAT64 * coef[:, None]
    return S, tol


# A formula's float64 roundings differ from the score terms' (exp then log vs a shifted
# cosine) by ~1e-14 of the score; ties are planted only as exact duplicates here.
TOL_SCALE = 1.0


def method_of(key, params):
    return make_method(key.split("_static")[0].split("_sharp")[0], **params)


@pytest.fixture(scope="module")
def pairs():
    p = simulate_pairs(360, 32, seed=3)
    X, Y = p.image_embeddings, p.text_embeddings
    return (X[:200], Y[:200]), (X[200:], Y[200:])


@pytest.mark.parametrize("key", list(CORRECTIONS))
def test_ranks_equal_the_published_formula_in_float64(pairs, key):
    fit, scored = pairs
    params = CORRECTIONS[key]
    res = fit_and_score(method_of(key, params), *scored, protocol="fit-on", fit_pairs=fit)
    S, tol = formula(key, params, fit, scored)
    ref = ranks_from_scores(S, tol)
    for mine, theirs in RANK_FIELDS:
        np.testing.assert_array_equal(getattr(res.report, mine), ref[theirs], err_msg=mine)
    want = metrics_from_ranks(ref, res.report.ks)
    assert {k: res.metrics[k] for k in want} == want
    # the embeddings are not moved: only the ranks change
    np.testing.assert_allclose(res.image_embeddings, unit(scored[0]), atol=1e-6)
    raw = measure_gap(*scored)
    assert res.metrics["frechet"] == pytest.approx(raw.metrics["frechet"], rel=1e-6)


@pytest.mark.parametrize("key", ["qb_norm", "csls", "nnn"])
def test_searches_equal_the_formula(pairs, key):
    """Hubness neighbours, requested-modality rate and substitution on corrected scores."""
    fit, scored = pairs
    params = CORRECTIONS[key]
    model = method_of(key, params).fit(*fit)
    terms = model.score_terms(*scored)
    classes = np.arange(scored[0].shape[0]) % 7
    out = pool_search(*scored, terms, k_neighbours=10, k_requested=10, classes=classes)
    S, tol = formula(key, params, fit, scored)
    n = scored[0].shape[0]
    np.fill_diagonal(S, -np.inf)
    want_top = np.argsort(-S, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(out["neighbours"], want_top)
    cls = np.r_[classes, classes]
    for q in range(2 * n):
        row = S[q]
        own = np.arange(2 * n) // n == q // n
        # requested: ranks with own items first among ties (the tie counts against the query)
        other_best = np.sort(row[~own])[::-1]
        got = 0
        for m, v in enumerate(other_best[:10], start=1):
            ahead = np.count_nonzero(row[own] >= v - tol[q, own])
            got = m if m + ahead <= 10 else got
        share = out["requested_i2t" if q < n else "requested_t2i"][q % n]
        assert share == got / 10, q
        best = row[~own].max()
        tied = np.flatnonzero(~own & (row >= best - tol[q]))
        hit = out["substitution_i2t" if q < n else "substitution_t2i"][q % n]
        assert hit == bool(np.all(cls[tied] == cls[q])), q


def test_dynamic_gate_normalises_some_queries_and_not_others(pairs):
    fit, scored = pairs
    terms = make_method("qb_norm").fit(*fit).score_terms(*scored)
    gated = terms.lam[:, :, :] == 1.0
    assert gated.any() and (~gated).any()
    # a gated query is normalised against both modalities (one scale for its whole row)
    np.testing.assert_array_equal(gated[:, 0], gated[:, 1])


def test_held_out_scores_each_fold_with_its_own_fit_banks():
    p = simulate_pairs(150, 16, seed=4)
    X, Y = p.image_embeddings, p.text_embeddings
    res = protocol_transform("csls", X, Y, folds=3)
    assert res.provenance.protocol == "held-out" and res.scores is not None
    for f, fit in enumerate(res.fits):
        rows = np.flatnonzero(res.fold_of == f)
        train = np.flatnonzero(res.fold_of != f)
        again = make_method("csls").fit(X[train], Y[train]).score_terms(X, Y, rows)
        for name in ("scale", "lam", "bias", "offset"):
            np.testing.assert_array_equal(getattr(res.scores, name)[:, :, rows],
                                          getattr(again, name))


def test_transductive_use_is_refused_unless_asked():
    p = simulate_pairs(80, 16, seed=5)
    X, Y = p.image_embeddings, p.text_embeddings
    with pytest.raises(ValueError, match="bank"):
        fit_and_score("nnn", X, Y, protocol="transductive")
    res = fit_and_score("nnn", X, Y, protocol="transductive", allow_pairing_leak=True)
    assert res.provenance.warning


def test_corrected_pass_is_exact_on_planted_near_ties_and_duplicates():
    """Arbitrary terms (a function of each row, so duplicated rows stay tied) on pairs with
    near-duplicates 1e-7 apart and exact duplicates: the float32 pass settles every close call
    as float64 does."""
    rng = np.random.default_rng(0)
    for seed in range(3):
        data = planted_ties(150, 12, seed, -7.0, 8, False)
        if data is None:
            continue
        X, Y = data
        n = X.shape[0]
        shape = (2, 2, n)
        offset = np.empty(shape)
        for mq in (0, 1):
            for mc in (0, 1):
                offset[mq, mc] = np.round((X if mc == 0 else Y).astype(np.float64)[:, 0], 2) * 0.1
        terms = ScoreTerms(rng.uniform(0.5, 3, size=shape), rng.choice([0.0, 1.0, 0.4], size=shape),
                           rng.normal(scale=0.3, size=shape), offset)
        report = measure_gap(X, Y, scores=terms, block_values=5_000)
        assert_report_is_float64(report, X, Y, terms)


def test_gains_and_anatomy_read_the_corrected_scores(pairs):
    from gapviz.anatomy import gap_anatomy

    fit, scored = pairs
    terms = make_method("csls").fit(*fit).score_terms(*scored)
    plain = gain_outcomes(*scored, n_clusters=3)
    corrected = gain_outcomes(*scored, n_clusters=3, scores=terms)
    direct = pool_search(*scored, terms, k_requested=plain.k_requested)
    np.testing.assert_array_equal(corrected.requested_i2t, direct["requested_i2t"])
    assert not np.array_equal(plain.requested_i2t, corrected.requested_i2t)
    anat = gap_anatomy(*scored, scores=terms, clusters=False, intervals=False)
    assert np.isnan(anat.metrics["NDCG@10_mixbench"])
    assert anat.report.metrics["ITR"] == measure_gap(*scored, scores=terms).metrics["ITR"]
