"""Compare gap-closing methods (and models) on the same pairs: the paper's Tables 2-5 in one view.

Each method is fitted and scored under a protocol (:mod:`gapviz.protocols`): by default its own
(held-out cross-fitting for the methods that read the pairing and for OT, transductive for the
others), and every row records how its numbers were obtained. All rows score the same N pairs
in the same mixed pool of 2N items, so they share one chance level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .embeddings import PairedEmbeddings
from .protocols import DEFAULT_FOLDS, DEFAULT_SEED, PROTOCOLS, default_protocol
from .runs import RunData, Runner, planned_spec

#: Measures of the comparison table, in the paper's order.
COMPARE_KEYS: tuple[str, ...] = ("ITR", "TIR", "IMR", "TMR", "frechet", "R@5", "R@10", "R@20",
                                 "paired_cosine_distance")
#: Columns of what closing buys (:func:`with_gains`), when asked for.
GAIN_COLUMNS: tuple[str, ...] = ("kmeans_v_measure", "kmeans_ari", "modality_purity",
                                 "probe_i2t", "probe_t2i", "substitution_i2t",
                                 "substitution_t2i", "requested_modality_i2t",
                                 "requested_modality_t2i")


@dataclass(frozen=True)
class ComparisonRow:
    """One (model, method) cell of a comparison, with the method's full description.

    Attributes
    ----------
    model : str
        Dataset label ("" when a single dataset is compared).
    method : str
        Registry name.
    params : dict
        The method's parameters (all of them, defaults included).
    metrics : dict of str to float
        The measures; empty when the row could not run (see ``error``).
    protocol : str
        The protocol the row was scored under (:data:`gapviz.protocols.PROTOCOLS`).
    provenance : dict
        :meth:`gapviz.protocols.Provenance.to_dict`: protocol, n_fit, n_scored, pool_size,
        seed, folds, fit_source, shuffled, warning, ...; empty when the row could not run.
    error : str or None
        Why the method could not run on these data (its own message), or None.
    notes : tuple of str
        What was changed before the run, e.g. a size parameter left at its default that was
        lowered to what each fit's pairs allow (a value the caller chose is never changed).
    """

    model: str
    method: str
    params: dict[str, Any]
    metrics: dict[str, float]
    protocol: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    notes: tuple[str, ...] = ()
    #: The run behind the row (:class:`gapviz.runs.Run`), for the paired tests; None if it failed.
    run: Any = field(default=None, compare=False, repr=False)
    #: Bootstrap intervals of measures that carry one (:func:`with_gains`): {key: (low, high)}.
    ci: dict[str, tuple[float, float]] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        return f"{self.model} / {self.method}" if self.model else self.method

    @property
    def ok(self) -> bool:
        """The row ran (it has measures)."""
        return self.error is None

    @property
    def warning(self) -> str | None:
        """The provenance's warning (a pairing-reading method scored on its fit pairs), if any."""
        return self.provenance.get("warning")


def compare(datasets: Mapping[str, PairedEmbeddings], methods: Sequence[str], *,
            params: Mapping[str, Mapping[str, Any]] | None = None,
            progress: Callable[[float, str], None] | None = None,
            protocol: str | Mapping[str, str] | None = None, folds: int = DEFAULT_FOLDS,
            seed: int = DEFAULT_SEED,
            fit_on: PairedEmbeddings | Mapping[str, PairedEmbeddings] | None = None,
            fit_source: str | None = None, allow_pairing_leak: bool = False,
            shuffled: bool = False, max_fit: int | None = None,
            keep_going: bool = True, runner: Runner | None = None) -> list[ComparisonRow]:
    """Fit and measure every method on every dataset (a model's embeddings of the pairs).

    Parameters
    ----------
    datasets : mapping of label -> PairedEmbeddings
        One entry per model (or embeddings file); a single dataset gives a methods table.
    methods : sequence of str
        Registry names (``gapviz.methods.METHODS``), e.g. ``["orig", "center", "spectral"]``.
    params : mapping of method name -> keyword arguments, optional
    progress : callable(fraction, message), optional
    protocol : str or mapping of method name -> str, optional
        One protocol for every method, or one per method; a method left out (or ``None``)
        uses its own ``default_protocol``.
    folds, seed : int
        Held-out cross-fitting folds and the seed of folds and shuffled control
        (:func:`gapviz.protocols.fit_and_score`).
    fit_on : PairedEmbeddings or mapping of label -> PairedEmbeddings, optional
        The fit pairs of the "fit-on" protocol: one set for every dataset, or one per dataset
        label (each model's embeddings of the fit pairs).
    fit_source : str, optional
        A name for the fit pairs in the provenance (e.g. the file name).
    allow_pairing_leak : bool, default=False
        Let a method that reads the pairing be scored on its fit pairs (its row then carries a
        warning); otherwise such a request makes that row an error.
    shuffled : bool, default=False
        Score every method on the pairs with their captions permuted (null control).
    max_fit : int, optional
        Held-out and fit-on rows: fit on at most this many pairs (a seeded sample); ignored by
        transductive rows, which fit on the scored pairs.
    keep_going : bool, default=True
        A method that cannot run on a dataset (its parameters do not suit the data, a refused
        protocol, a numerical failure) gives a row with ``error`` set and no measures, and the
        other rows are still computed. False re-raises the first such error.
    runner : gapviz.runs.Runner, optional
        The runner that obtains each run (the app gives its shared one); a fresh one otherwise.

    A size parameter the caller left at its default (spectral ``n_components``, VLAP's anchors)
    is lowered to what the pairs each fit sees allow (:func:`gapviz.protocols.fit_size`), and
    the row's ``notes`` say so; a value given in ``params`` is used as given (a row that cannot
    take it reports why).

    Returns
    -------
    list of ComparisonRow
        In order: for each dataset, each method, rows that could not run included (``error``).

    Raises
    ------
    ValueError
        An unknown method or protocol name (before anything runs).
    """
    from .methods import METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
    chosen_protocols = {name: _protocol_of(name, protocol) for name in methods}
    params = params or {}
    runner = runner if runner is not None else Runner()
    rows: list[ComparisonRow] = []
    total = max(1, len(datasets) * len(methods))
    step = 0
    for label, pairs in datasets.items():
        data = RunData.of(pairs, label=label)
        model = label if len(datasets) > 1 else ""
        for name in methods:
            if progress:
                progress(step / total, f"{label}: {name}")
            chosen = chosen_protocols[name]
            try:
                other = (RunData.of(_fit_pairs(fit_on, label), label=fit_source or "")
                         if chosen == "fit-on" else None)
                rows.append(compare_row(runner, data, name, model=model, params=params.get(name),
                                        protocol=chosen, folds=folds, seed=seed, fit_on=other,
                                        allow_pairing_leak=allow_pairing_leak, shuffled=shuffled,
                                        max_fit=max_fit,
                                        progress=_within(progress, step, total, f"{label}: {name}")))
            except Exception as err:  # noqa: BLE001 - one method's failure must not lose the others
                if not keep_going:
                    raise
                rows.append(ComparisonRow(model, name, _params_of(name, params.get(name)), {},
                                          chosen, {}, _reason(err)))
            step += 1
    if progress:
        progress(1.0, "done")
    return rows


def compare_row(runner: Runner, data: RunData, method: str, *, model: str = "",
                params: Mapping[str, Any] | None = None, protocol: str | None = None,
                folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED, fit_on: RunData | None = None,
                allow_pairing_leak: bool = False, shuffled: bool = False,
                max_fit: int | None = None, lower_chosen: bool = False,
                progress: Callable[[float, str], None] | None = None) -> ComparisonRow:
    """One row of a comparison: ``method`` on ``data`` under ``protocol`` (its default when
    None), obtained by ``runner`` (:func:`gapviz.runs.planned_spec` sizes its parameters) and
    measured. Raises what the run raises (a refused protocol, parameters the data cannot take).
    ``lower_chosen``: lower chosen size parameters the data cannot take too (the app's pages
    carry values chosen on other data).
    """
    spec, notes = planned_spec(method, params, data.n, data.dim, protocol=protocol,
                               n_fit_pairs=None if fit_on is None else fit_on.n, max_fit=max_fit,
                               folds=folds, seed=seed,
                               fit_on=None if fit_on is None else fit_on.key,
                               allow_leak=allow_pairing_leak, shuffled=shuffled,
                               lower_chosen=lower_chosen)
    run = runner.run(spec, data, fit_on=fit_on, progress=progress)
    ran = {} if method == "orig" else run.fits[0].describe()["params"]
    return ComparisonRow(model, method, ran, run.metrics, run.provenance.protocol,
                         run.provenance.to_dict(), notes=notes, run=run)


#: Paired bootstrap of a column's best against its runner-up: resamples and level.
SIGNIFICANCE_RESAMPLES = 200
SIGNIFICANCE_ALPHA = 0.05


def crowned(rows: Sequence[ComparisonRow], keys: Sequence[str], *, shuffled: bool = False
            ) -> dict[str, set[str]]:
    """The best run(s) of each measure among the rows that may be crowned: none in the
    shuffled-pairs control (a null check, not a ranking), never a row scored on its own fit
    pairs (a warning), never a row that did not run."""
    from .tables import best_per_row

    if shuffled:
        return {}
    columns = {r.label: r.metrics for r in rows if r.ok and not r.warning}
    return best_per_row(columns, list(keys)) if columns else {}


def significance(rows: Sequence[ComparisonRow], keys: Sequence[str], *, shuffled: bool = False,
                 n_resamples: int = SIGNIFICANCE_RESAMPLES, alpha: float = SIGNIFICANCE_ALPHA,
                 outcomes: Callable[[Any], Any] | None = None) -> dict[str, dict[str, Any]]:
    """Each measure's best run against its runner-up on the same pairs.

    A paired bootstrap over pairs (:func:`gapviz.intervals.paired_comparison`, the same
    resamples for both runs, seed 0): a best within noise of the runner-up is not crowned
    (the Compare page colours both amber; ``gapviz compare`` prints ``~`` beside both).

    Parameters
    ----------
    rows : sequence of ComparisonRow
        Rows from :func:`compare` or :func:`compare_row` (they carry their runs).
    keys : sequence of str
        Measures to test; those the bootstrap does not resample are left out.
    shuffled : bool
        The shuffled-pairs control: nothing is crowned, nothing tested.
    outcomes : callable(run) -> PairOutcomes, optional
        A cache of :func:`gapviz.intervals.pair_outcomes` per run (the app's); computed
        here otherwise.

    Returns
    -------
    dict
        ``{measure: {"best", "runner_up", "p_value", "significant"}}`` (run labels); a
        ``p_value`` of nan (a ratio infinite on one side) decided nothing: not crowned, not a
        tie either (:func:`gapviz.intervals.noise_verdict` says "not tested").
    """
    from .intervals import pair_outcomes, paired_comparison
    from .measure_info import info

    best = crowned(rows, keys, shuffled=shuffled)
    by_label = {r.label: r for r in rows if r.ok and not r.warning and r.run is not None}
    if len(by_label) < 2:
        return {}
    cache: dict[str, Any] = {}

    def outcome(label: str) -> Any:
        run = by_label[label].run
        if outcomes is not None:
            return outcomes(run)
        if label not in cache:
            cache[label] = pair_outcomes(run.images, run.texts, report=run.report, hubness=False)
        return cache[label]

    duels: dict[tuple[str, str], list[str]] = {}  # (best, runner-up) -> the measures they lead
    for key in keys:
        winners = best.get(key, set())
        if len(winners) != 1:
            continue
        (top,) = winners
        if top not in by_label:
            continue
        others = [(info(key).badness(r.metrics.get(key)), label) for label, r in by_label.items()
                  if label != top and r.metrics.get(key) is not None]
        if others:
            duels.setdefault((top, min(others)[1]), []).append(key)
    out: dict[str, dict[str, Any]] = {}
    for (top, runner_up), measures in duels.items():
        # one bootstrap per pair of runs for every measure it decides (the same resamples, seed
        # 0, so the same numbers as one bootstrap per measure)
        try:
            tests = paired_comparison(outcome(top), outcome(runner_up), n_resamples=n_resamples,
                                      alpha=alpha)
        except ValueError:
            continue
        for key in measures:
            if key in tests:  # else a measure the bootstrap does not resample
                out[key] = {"best": top, "runner_up": runner_up,
                            "p_value": float(tests[key]["p_value"]),
                            "significant": bool(tests[key]["significant"])}
    return {key: out[key] for key in keys if key in out}


def with_gains(rows: Sequence[ComparisonRow],
               datasets: PairedEmbeddings | Mapping[str, PairedEmbeddings], *, seed: int = 0,
               n_resamples: int = 200, level: float = 0.95,
               n_clusters: Mapping[str, int] | None = None,
               outcomes: Callable[[Any, tuple | None, int], Any] | None = None
               ) -> list[ComparisonRow]:
    """The rows with what closing buys (:mod:`gapviz.closing_gains`) added to their measures.

    Each row's scored pairs (its run, under its protocol; the raw embeddings for ``orig``) get
    the gains of :data:`GAIN_COLUMNS` that their data allow (the label-based ones need labels:
    :func:`gapviz.closing_costs.pair_labels`), and ``ci`` their bootstrap intervals
    (:func:`gapviz.intervals.gain_intervals`, ``n_resamples`` resamples of the pairs, 0 for
    none). The k of the pool's k-means is chosen once per dataset on its raw pairs
    (:func:`gapviz.closing_gains.pool_k`: the number of classes with labels) and kept for
    every row of that dataset. Rows that did not run are passed through.

    Parameters
    ----------
    rows : sequence of ComparisonRow
        From :func:`compare` or :func:`compare_row` (they carry their runs).
    datasets : PairedEmbeddings or mapping of label -> PairedEmbeddings
        The raw pairs of each row's model (a single one for a methods table, whose rows have
        ``model`` "").
    n_clusters : mapping of label -> int, optional
        The k of a dataset already chosen (e.g. cached by the app), by the same label.
    outcomes : callable(run, labels, k) -> GainOutcomes, optional
        A cache of :func:`gapviz.closing_gains.gain_outcomes` per run (the app's); computed
        here otherwise.
    """
    from dataclasses import replace

    from .closing_costs import pair_labels
    from .closing_gains import gain_outcomes, pool_k
    from .intervals import gain_intervals

    if isinstance(datasets, PairedEmbeddings):
        datasets = {"": datasets}
    chosen: dict[str, tuple[tuple | None, int]] = {}
    out = []
    for row in rows:
        if not row.ok or row.run is None:
            out.append(row)
            continue
        name = row.model if row.model in datasets else next(iter(datasets))
        if name not in chosen:
            pairs = datasets[name]
            labels = pair_labels(pairs)
            k = (n_clusters or {}).get(name)
            if k is None:
                k = pool_k(pairs.image_embeddings, pairs.text_embeddings, labels=labels, seed=seed)
            chosen[name] = (tuple(labels) if labels is not None else None, k)
        labels, k = chosen[name]
        if outcomes is not None:
            o = outcomes(row.run, labels, k)
        else:
            o = gain_outcomes(row.run.images, row.run.texts,
                              labels=list(labels) if labels else None, n_clusters=k, seed=seed,
                              scores=row.run.scores)
        estimates = {key: v for key, v in o.estimates().items() if key in GAIN_COLUMNS}
        ci = {}
        if n_resamples:
            ci = {key: tuple(v) for key, v in gain_intervals(
                o, n_resamples=n_resamples, level=level, seed=seed).before.ci.items()
                  if key in GAIN_COLUMNS}
        out.append(replace(row, metrics={**row.metrics, **estimates}, ci={**row.ci, **ci}))
    return out


def rows_to_columns(rows: Sequence[ComparisonRow]) -> dict[str, dict[str, float]]:
    """``{label: metrics}`` for :func:`gapviz.tables.render` (one run per row of the table).

    Rows that could not run (``error``) have no measures and are left out; report them with
    :func:`failed_rows`.
    """
    return {row.label: row.metrics for row in rows if row.ok}


def comparison_table(rows: Sequence[ComparisonRow], keys: Sequence[str], *,
                     label: Callable[[str], str] = str,
                     describe: Callable[[str, Mapping[str, Any]], str] | None = None):
    """One row per run that ran (its label as index): model, method, parameters, protocol,
    pairs fitted (:func:`fitted_text`) / scored, then the measures ``keys`` (a
    ``pandas.DataFrame``).

    ``label(name)`` shows a method's name ("Spectral"); ``describe(name, params)`` its
    parameters (default: :func:`params_text`, "k = 60"). A run without a fit (the raw
    embeddings) has protocol "—".
    """
    import math

    import pandas as pd

    describe = describe or params_text
    records = []
    for row in rows:
        if not row.ok:
            continue
        prov = row.provenance
        protocol = (prov.get("protocol", row.protocol) if row.method != "orig" else "—")
        if prov.get("shuffled"):
            protocol += ", shuffled"
        if prov.get("warning"):
            protocol += " ⚠"
        records.append({
            "run": row.label, "model": row.model, "method": label(row.method),
            "parameters": describe(row.method, row.params),
            "protocol": protocol, "fitted": fitted_text(prov) if row.method != "orig" else "—",
            "scored": prov.get("n_scored", math.nan),
            **{k: row.metrics.get(k, math.nan) for k in keys}})
    return pd.DataFrame(records).set_index("run") if records else pd.DataFrame()


def fitted_text(provenance: Mapping[str, Any]) -> str:
    """The pairs each fit of a run saw, as people read it.

    Held-out K-fold: ``"5 folds × 2,000"`` (each fit on the other folds' pairs; a range such
    as ``"2,000–2,001"`` when N does not split evenly), ``"5 folds × 1,000 of 2,000"`` when each
    fit took a seeded subsample of its training pairs (Sinkhorn's ``fit_size``, ``max_fit``).
    Transductive: ``"2,500"``, or ``"1,000 of 2,500"`` for a subsample of the scored pairs.
    Fit-on: the fit set's size. ``"—"`` without a record.

    Parameters
    ----------
    provenance : mapping
        :meth:`gapviz.protocols.Provenance.to_dict` of the run.
    """
    n_fit, n_scored = provenance.get("n_fit"), provenance.get("n_scored")
    if n_fit is None:
        return "—"
    protocol, folds = provenance.get("protocol"), provenance.get("folds")
    if protocol == "held-out" and folds and n_scored:
        # each fold's training pairs are the other folds: N minus a part of size ceil or floor(N / K)
        low, high = n_scored - -(-n_scored // folds), n_scored - n_scored // folds
        train = f"{low:,}" if low == high else f"{low:,}–{high:,}"
        return f"{folds} folds × " + (f"{n_fit:,} of {train}" if n_fit < low else train)
    if protocol == "transductive" and n_scored and n_fit < n_scored:
        return f"{n_fit:,} of {n_scored:,}"
    return f"{n_fit:,}"


#: Parameters that tune a solver or seed a draw rather than define the method: a table's
#: parameters column leaves them out unless they were changed from their defaults.
SOLVER_PARAMS: frozenset[str] = frozenset({"max_iter", "tol", "max_inner_iter", "inner_tol",
                                           "method", "random_state", "max_components",
                                           "approximate_knn", "heat_scale", "within_weight",
                                           "similarity_param", "batch_size", "sinkhorn_iters",
                                           "tune"})


def shown_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a run that a table's parameters column shows.

    Every parameter the method declares (``params_info``: the ones the app and the command
    line offer) with its value in ``params`` (else its default), except solver settings,
    seeds and the options that only matter with another setting (:data:`SOLVER_PARAMS`)
    and unset (None) ones, unless changed from their defaults; then anything else in
    ``params`` that differs from its default. Spectral gives "k = 60, graph = bipartite,
    affinity = shift, laplacian = normalized"; Sinkhorn "reg = 0.05, fit size = 1000".
    """
    from .methods import METHODS, method_params

    if name not in METHODS:
        return dict(params)
    defaults = method_params(name)
    values = {**defaults, **dict(params)}
    out: dict[str, Any] = {}
    for info in METHODS[name].params_info:
        if info.name not in values:
            continue
        value, changed = values[info.name], values[info.name] != defaults.get(info.name, object())
        if changed or (info.name not in SOLVER_PARAMS and value is not None):
            out[info.name] = value
    out.update({k: v for k, v in params.items()
                if k not in out and v != defaults.get(k, object())})
    return out


def params_text(name: str, params: Mapping[str, Any]) -> str:
    """:func:`shown_params` as people read them ("k = 60, graph = bipartite"; "" for none)."""
    from .methods import format_params

    return format_params(name, shown_params(name, params))


def format_cell(key: str, value: float | None) -> str:
    """A comparison cell (table and heatmap): one rule per column, so a column reads evenly.

    Ratios and ranks that span decades (ITR, TIR, IMR, TMR: ``number == "magnitude"`` in
    :mod:`gapviz.measure_info`) keep three significant figures, never dropping integer digits:
    0.767, 1.65, 15.0, 356, 2,499. The others (recalls, distances) three decimals: 0.002,
    3.236. Infinite ratios print as ∞, a missing value as —, an undefined one (0/0) as nan.
    """
    import math

    from . import measure_info

    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if measure_info.info(key).number != "magnitude":
        return f"{value:,.3f}"
    mag = abs(value)
    if mag == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(mag)))
    text = f"{value:,.{decimals}f}"
    if decimals and float(text.replace(",", "")) >= 10 ** (3 - decimals):  # 9.996 -> 10.00
        text = f"{value:,.{decimals - 1}f}"
    return text


def run_title(row: ComparisonRow, label: Callable[[str], str] = str) -> str:
    """A run as a figure names it: method label and protocol ("Spectral · transductive"),
    the model first when several are compared ("sim-CLIP / Spectral · transductive"),
    ", shuffled" for the shuffled-pairs control and ⚠ for a pairing leak; the raw embeddings
    are "· raw"."""
    protocol = "raw" if row.method == "orig" else (row.provenance.get("protocol") or row.protocol)
    text = f"{label(row.method)} · {protocol}"
    if row.provenance.get("shuffled"):
        text += ", shuffled"
    if row.warning:
        text += " ⚠"
    return f"{row.model} / {text}" if row.model else text


def failed_rows(rows: Sequence[ComparisonRow]) -> list[ComparisonRow]:
    """The rows that could not run, each with its ``error``."""
    return [row for row in rows if not row.ok]


def _within(progress, step: int, total: int, prefix: str):
    """The progress of one row's fit (held-out: K fits) as a part of the whole comparison."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress((step + min(max(fraction, 0.0), 1.0)) / total, f"{prefix}: {message}")

    return report


def _protocol_of(name: str, protocol: str | Mapping[str, str] | None) -> str:
    chosen = protocol.get(name) if isinstance(protocol, Mapping) else protocol
    if chosen is None:
        return default_protocol(name)
    if chosen not in PROTOCOLS:
        raise ValueError(f"unknown protocol {chosen!r}; choose one of: {', '.join(PROTOCOLS)}.")
    return chosen


def _fit_pairs(fit_on, label: str):
    if fit_on is None:
        raise ValueError("protocol 'fit-on' needs the fit pairs (fit_on=...).")
    if isinstance(fit_on, PairedEmbeddings):
        pairs = fit_on
    elif label in fit_on:
        pairs = fit_on[label]
    else:
        raise ValueError(f"no fit pairs for dataset {label!r} (fit_on has {sorted(fit_on)}).")
    return pairs


def _params_of(name: str, chosen: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters a row would have run with (defaults under the chosen ones), if known."""
    from .methods import method_params

    try:
        defaults = method_params(name)
    except ValueError:
        return dict(chosen or {})
    return {**defaults, **dict(chosen or {})}


def _reason(err: Exception) -> str:
    text = str(err).strip()
    return text if isinstance(err, ValueError) and text else f"{type(err).__name__}: {text}"
