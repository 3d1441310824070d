"""The paper's setting: a method fitted on 5,000 pairs other than those it scores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gapviz.embeddings import PairedEmbeddings
from gapviz.protocols import PAPER_FIT_PAIRS, PAPER_MIN_SCORED, PaperSettingError, paper_setting
from gapviz.simulate import profile_statistics, simulate_pairs


def test_simulated_pairs_get_new_pairs_of_the_same_model():
    scored = simulate_pairs(400, 64, profile="clip", seed=3)
    fit, same, how = paper_setting(scored)
    assert same is scored and fit.n == PAPER_FIT_PAIRS and "same simulated model" in how
    assert not set(fit.ids) & set(scored.ids)
    assert fit.meta["params"] == scored.meta["params"] and fit.meta["seed"] == 3
    # no scored pair is drawn again: no embedding row repeats
    assert not np.isclose(fit.image_embeddings @ scored.image_embeddings.T, 1.0, atol=1e-6).any()
    # the same model: its centroids and cones agree up to sampling error
    a = profile_statistics(fit.image_embeddings, fit.text_embeddings)
    b = profile_statistics(scored.image_embeddings, scored.text_embeddings)
    assert all(abs(a[k] - b[k]) < 0.03 for k in a)
    # a set drawn with another pair seed gets a fit set that differs from both
    other = simulate_pairs(400, 64, profile="clip", seed=3, pair_seed=5)
    fit_other, _, _ = paper_setting(other)
    assert fit_other.meta["pair_seed"] == 6 and fit.meta["pair_seed"] == 0


def test_real_pairs_are_split_disjointly_by_a_seed():
    rng = np.random.default_rng(0)
    n = PAPER_FIT_PAIRS + 700
    pairs = PairedEmbeddings(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)), model="m")
    fit, scored, how = paper_setting(pairs, seed=4)
    assert (fit.n, scored.n) == (PAPER_FIT_PAIRS, 700) and "seed 4" in how
    assert set(fit.ids) | set(scored.ids) == set(pairs.ids) and not set(fit.ids) & set(scored.ids)
    again, _, _ = paper_setting(pairs, seed=4)
    assert again.ids == fit.ids
    assert paper_setting(pairs, seed=5)[0].ids != fit.ids


def test_too_few_real_pairs_say_what_to_load():
    rng = np.random.default_rng(0)
    n = PAPER_FIT_PAIRS + PAPER_MIN_SCORED - 1
    pairs = PairedEmbeddings(rng.normal(size=(n, 4)), rng.normal(size=(n, 4)), model="m")
    with pytest.raises(PaperSettingError, match="fit-on"):
        paper_setting(pairs)


def test_evaluate_paper_setting_fits_on_every_dedicated_pair():
    out = subprocess.run([sys.executable, "-m", "gapviz", "evaluate", "demo", "--n", "300",
                          "--dim", "32", "--method", "sinkhorn", "--paper-setting",
                          "--format", "json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["protocol"]["protocol"] == "fit-on" and got["protocol"]["n_fit"] == PAPER_FIT_PAIRS
    assert got["protocol"]["n_scored"] == 300 and got["protocol"]["n_overlap"] == 0
    assert "same simulated model" in got["dataset"]["paper_setting"]
    assert got["method"]["params"]["fit_size"] == PAPER_FIT_PAIRS
