"""Compare gap-closing methods (and models) on the same pairs: the paper's Tables 2-5 in one view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .embeddings import PairedEmbeddings
from .measures import measure_gap, normalize_rows

#: Measures of the comparison table, in the paper's order.
COMPARE_KEYS: tuple[str, ...] = ("ITR", "TIR", "IMR", "TMR", "frechet", "R@5", "R@10", "R@20",
                                 "paired_cosine_distance")


@dataclass(frozen=True)
class ComparisonRow:
    """One (model, method) cell of a comparison, with the method's full description."""

    model: str
    method: str
    params: dict[str, Any]
    metrics: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.model} / {self.method}" if self.model else self.method


def compare(datasets: Mapping[str, PairedEmbeddings], methods: Sequence[str], *,
            params: Mapping[str, Mapping[str, Any]] | None = None,
            progress: Callable[[float, str], None] | None = None) -> list[ComparisonRow]:
    """Fit and measure every method on every dataset (a model's embeddings of the pairs).

    Parameters
    ----------
    datasets : mapping of label -> PairedEmbeddings
        One entry per model (or embeddings file); a single dataset gives a methods table.
    methods : sequence of str
        Registry names (``gapviz.methods.METHODS``), e.g. ``["orig", "center", "spectral"]``.
    params : mapping of method name -> keyword arguments, optional
    progress : callable(fraction, message), optional

    Returns
    -------
    list of ComparisonRow
        In order: for each dataset, each method. Each method is fitted on the pairs it
        transforms (transductive, as the paper's spectral method); use the CLI's ``--fit-on``
        for a separate fit set.
    """
    from .methods import make_method

    params = params or {}
    rows: list[ComparisonRow] = []
    total = max(1, len(datasets) * len(methods))
    step = 0
    for label, pairs in datasets.items():
        X, Y = normalize_rows(pairs.image_embeddings), normalize_rows(pairs.text_embeddings)
        for name in methods:
            if progress:
                progress(step / total, f"{label}: {name}")
            method = make_method(name, **dict(params.get(name, {})))
            Xt, Yt = method.fit_transform(X, Y)
            described = method.describe()
            rows.append(ComparisonRow(label if len(datasets) > 1 else "", name,
                                      described["params"], measure_gap(Xt, Yt).metrics))
            step += 1
    if progress:
        progress(1.0, "done")
    return rows


def rows_to_columns(rows: Sequence[ComparisonRow]) -> dict[str, dict[str, float]]:
    """``{label: metrics}`` for :func:`gapviz.tables.render` (one run per row of the table)."""
    return {row.label: row.metrics for row in rows}
