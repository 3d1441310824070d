"""OT's exact assignment step: scipy's linear_sum_assignment, compiled and warm-started."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from gapviz.couplings import assignment_step


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_from_zero_duals_it_is_scipys_assignment(kind):
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 40))
        C = rng.random((n, n)) if kind == "continuous" else rng.integers(0, 4, (n, n)).astype(float)
        rows, cols, duals = assignment_step(C)
        want_rows, want_cols = linear_sum_assignment(C)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(cols, want_cols)  # ties resolved as scipy resolves them
        assert duals.shape == (n,)


def test_any_warm_start_gives_an_optimal_assignment():
    rng = np.random.default_rng(1)
    for trial in range(40):
        n = int(rng.integers(2, 60))
        C = rng.random((n, n))
        _, _, duals = assignment_step(C)
        C2 = C + 0.05 * rng.standard_normal((n, n))  # the next step's cost, nearby
        for start in (duals, rng.standard_normal(n), np.zeros(n)):
            rows, cols, _ = assignment_step(C2, start)
            assert sorted(cols.tolist()) == list(range(n))  # a permutation
            r, c = linear_sum_assignment(C2)
            assert C2[rows, cols].sum() == pytest.approx(C2[r, c].sum(), abs=1e-12)


def test_refuses_a_cost_that_is_not_square():
    with pytest.raises(ValueError, match="square"):
        assignment_step(np.zeros((3, 4)))
