"""The runner (gapviz.runs): one door for a run, equal to the full protocol bit for bit."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from gapviz.methods import METHODS, method_class
from gapviz.protocols import protocol_transform
from gapviz.runs import (Run, RunData, Runner, RunSpec, neighbour_values, planned_spec,
                         setting_specs, tradeoff_specs)
from gapviz.simulate import simulate_pairs

N, D = 120, 32


@pytest.fixture(scope="module")
def data() -> RunData:
    return RunData.of(simulate_pairs(N, D, seed=3))


@pytest.fixture(scope="module")
def other() -> RunData:
    return RunData.of(simulate_pairs(90, D, seed=4), label="other pairs")


def _full(spec: RunSpec, data: RunData, fit_on: RunData | None = None):
    """The full protocol at the spec's resolved parameters, fresh (no store)."""
    params = Runner.resolved_params(spec, data.n, data.dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return protocol_transform(
            spec.method, data.images, data.texts, protocol=spec.protocol, params=params,
            folds=spec.folds, seed=spec.seed, allow_pairing_leak=spec.allow_leak,
            shuffled=spec.shuffled, max_fit=spec.max_fit,
            fit_pairs=None if fit_on is None else (fit_on.images, fit_on.texts),
            fit_source=None if fit_on is None else fit_on.label)


def _same(run: Run, full) -> None:
    np.testing.assert_array_equal(run.images, full.image_embeddings)
    np.testing.assert_array_equal(run.texts, full.text_embeddings)
    assert run.provenance == full.provenance


def _small(name: str) -> dict:
    """Parameters that keep each method quick on 120 pairs of dimension 32."""
    return {"vlap": {"n_anchors": 16, "epochs": 3}, "pca": {"n_components": 8},
            "spectral": {"n_components": 12}}.get(name, {})


@pytest.mark.parametrize("name", [m for m in METHODS if m != "orig"])
@pytest.mark.parametrize("protocol", ["default", "held-out"])
def test_every_method_equals_the_full_protocol_bit_for_bit(name, protocol, data):
    runner = Runner()
    spec, _ = planned_spec(name, _small(name), data.n, data.dim,
                           protocol=None if protocol == "default" else protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = runner.run(spec, data)
    _same(run, _full(spec, data))
    assert runner.run(spec, data) is run  # kept: asked again, not computed again


def test_a_fit_on_run_equals_the_full_protocol(data, other):
    spec, _ = planned_spec("sinkhorn", None, data.n, data.dim, protocol="fit-on", fit_on=other.key)
    run = Runner().run(spec, data, fit_on=other)
    _same(run, _full(spec, data, other))
    assert run.provenance.fit_source == "other pairs"
    with pytest.raises(ValueError, match="fitted on other pairs"):
        Runner().run(spec, data)


def test_the_shuffled_control_and_a_leak_on_request_equal_the_full_protocol(data):
    for spec in (RunSpec.make("center", shuffled=True),
                 RunSpec.make("procrustes", protocol="transductive", allow_leak=True)):
        run = Runner().run(spec, data)
        _same(run, _full(spec, data))
    assert "reads the pairing" in run.provenance.warning


@pytest.mark.parametrize("name, walk", [
    ("sinkhorn", [0.1, 0.02, 0.1, 0.05, 0.02]),
    ("ot", [(10.0, 1.0), (100.0, 1.0), (10.0, 0.5), (10.0, 1.0), (100.0, 1.0)]),
])
def test_slider_moves_back_and_forth_equal_a_fresh_protocol_each_time(name, walk, data):
    """A refit run, moved back and forth: every value equals a fresh full protocol, and a run
    handed out earlier still holds its own numbers (its fits are never changed under it)."""
    runner = Runner()
    base, _ = planned_spec(name, {"fit_size": 60}, data.n, data.dim)
    seen = []
    for value in walk:
        params = {"reg": value} if name == "sinkhorn" else dict(zip(("reg_lap", "reg_src"), value))
        spec = base.with_params(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = runner.run(spec, data)
            _same(run, _full(spec, data))
        seen.append((run, run.images.copy()))
    assert {r.how for r, _ in seen} >= {"protocol", "refit"}
    for run, images in seen:  # earlier runs untouched by later moves
        np.testing.assert_array_equal(run.images, images)
        assert not run.images.flags.writeable
    # a run's read-only fits transform with its own slider values, whatever moved since
    first = seen[0][0]
    probe = data.images[:5]
    fresh = _full(first.spec, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(first.fits[0].transform_images(probe),
                                      fresh.fits[0].transform_images(probe))
    assert not hasattr(first.fits[0], "refit") and not hasattr(first.fits[0], "fit")


def test_spectral_k_is_a_slice_of_one_fit_and_equals_a_fresh_fit(data):
    runner = Runner()
    for k in (5, 20, 12, 5):
        spec = RunSpec.make("spectral", {"n_components": k})
        run = runner.run(spec, data)
        assert run.how == "slice" and run.images.shape[1] == k
        _same(run, _full(spec, data))
    assert len(runner.memory.fits) == 1  # one eigen-solve served every k


def test_a_refit_with_an_implicit_slider_value_uses_its_default_not_the_last_move(data):
    runner = Runner()
    moved = RunSpec.make("ot", {"reg_lap": 10.0, "reg_src": 0.5, "fit_size": 60})
    implicit = RunSpec.make("ot", {"reg_lap": 10.0, "fit_size": 60})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner.run(moved, data)
        run = runner.run(implicit, data)
        _same(run, _full(implicit, data))


def test_the_raw_run_fits_nothing(data):
    run = Runner().run(RunSpec.make("orig"), data)
    assert run.how == "raw" and run.fits == ()
    assert run.provenance.summary().startswith("no method")
    np.testing.assert_array_equal(run.images, data.images)


def test_spec_records_round_trip_and_refuse_bad_fields():
    spec = RunSpec.make("spectral", {"n_components": np.int64(20)}, seed=2)
    again = RunSpec.from_dict(spec.to_dict())
    assert again == spec and again.digest() == spec.digest()
    assert RunSpec.make("ot").protocol == "held-out"  # the method's default
    with pytest.raises(ValueError, match="unknown protocol"):
        RunSpec.make("center", protocol="leaky")
    with pytest.raises(ValueError, match="'folds' must be int"):
        RunSpec.from_dict({"method": "center", "folds": "5"})
    with pytest.raises(ValueError, match="unknown method"):
        RunSpec.from_dict({"method": "nope"})


def test_planned_spec_lowers_a_default_that_a_fold_cannot_take_and_keeps_a_chosen_value():
    spec, notes = planned_spec("spectral", None, 40, 32, protocol="held-out")
    assert spec.param_dict["n_components"] == 31
    assert notes == ("n_components lowered from its default 60 to 31: each fit sees 32 pairs "
                     "of dimension 32",)
    spec, notes = planned_spec("spectral", {"n_components": 50}, 40, 32, protocol="held-out")
    assert spec.param_dict["n_components"] == 50 and notes == ()


def test_the_tradeoff_is_computed_once_per_run_whichever_caller_asks(data):
    runner = Runner()
    specs = tradeoff_specs(data.n, data.dim, spectral_ks=(5, 10), methods=("center",))
    first = runner.tradeoff(specs, data)
    assert [p["label"] for p in first] == ["spectral k=5", "spectral k=10", "Mean-centering"]
    kept = len(runner.memory.points)
    again = runner.tradeoff(specs[:2], data)  # another page asking for some of them
    assert len(runner.memory.points) == kept
    assert again == first[:2]
    assert first[2]["how"].startswith("transductive") and first[2]["n_scored"] == data.n
    assert setting_specs(specs[0], data.n, data.dim)[0].param_dict == {"n_components": 5}


def test_neighbour_values_step_one_slider_at_a_time():
    values = neighbour_values("sinkhorn", {"reg": 0.05})
    assert values and all(set(v) == {"reg"} for v in values)
    assert {"reg": 0.05} not in values
    assert method_class("sinkhorn").param_info("reg").slider is not None


def test_a_page_lowers_a_value_chosen_on_other_data_and_says_so():
    """The app carries k = 60 chosen on the demo to 12 pairs: lowered, with a note."""
    spec, notes = planned_spec("spectral", {"n_components": 60}, 12, 32, lower_chosen=True)
    assert spec.param_dict["n_components"] == 11
    assert notes == ("n_components lowered from 60 to 11: each fit sees 12 pairs of "
                     "dimension 32",)


def test_a_run_asked_for_by_two_threads_at_once_is_computed_once(data, monkeypatch):
    """Two sessions (threads) asking for the same run at the same time share one computation;
    the second gets the very same run object."""
    import threading

    import gapviz.runs as runs

    calls = []
    gate = threading.Event()
    real = runs.protocol_transform

    def slow(*args, **kwargs):
        calls.append(1)
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "protocol_transform", slow)
    runner = Runner()
    spec = RunSpec.make("center")
    out = [None, None]

    def ask(i):
        out[i] = runner.run(spec, data)

    threads = [threading.Thread(target=ask, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for _ in range(200):  # both callers are in: the first computes, the second waits
        if (data.key, spec) in runner.memory.under_way and len(calls) == 1:
            break
        threading.Event().wait(0.01)
    gate.set()
    for t in threads:
        t.join(30)
    assert len(calls) == 1 and out[0] is out[1] is not None
    _same(out[0], _full(spec, data))


def test_a_waiting_caller_computes_itself_when_the_first_one_fails():
    """The first caller's failure (a Streamlit rerun stopping its thread, say) is not handed to
    the caller waiting for it: that one computes the work itself."""
    import threading

    from gapviz.runs import InFlight

    flight = InFlight()
    started, release = threading.Event(), threading.Event()

    def failing():
        started.set()
        release.wait(10)
        raise KeyboardInterrupt("stopped")  # a BaseException, like Streamlit's StopException

    def first():
        with pytest.raises(KeyboardInterrupt):
            flight.once("k", failing)

    t = threading.Thread(target=first)
    t.start()
    started.wait(10)
    result = []
    waiter = threading.Thread(target=lambda: result.append(flight.once("k", lambda: "mine")))
    waiter.start()
    release.set()
    t.join(10)
    waiter.join(10)
    assert result == ["mine"] and "k" not in flight


def test_runs_ahead_does_each_request_once_and_gives_way_to_newer_ones():
    import threading

    from gapviz.runs import RunsAhead

    ahead, done, started, gate = RunsAhead(), [], threading.Event(), threading.Event()
    first = ahead.request("a", [lambda: started.set() or gate.wait(10),
                                lambda: done.append("a1"), lambda: done.append("a2")])
    assert started.wait(10)
    assert ahead.request("a", [lambda: done.append("again")]) is None  # made once per name
    second = ahead.request("b", [lambda: done.append("b1")])  # newer: a's rest is dropped
    gate.set()
    assert first.result(10) == 1 and second.result(10) == 1
    assert done == ["b1"]
    ahead.request("c", [lambda: 1 / 0, lambda: done.append("c2")])  # a failing job: the rest run
    ahead.wait()
    assert done == ["b1", "c2"]


def test_work_ahead_waits_a_quiet_period_after_the_last_slider_request(monkeypatch):
    """Work ahead for other pages starts only once the slider work is done and
    ``SLIDER_QUIET_S`` has passed since its last request (the user moving a slider every few
    seconds keeps the CPUs for the moves); a request during the quiet period restarts it."""
    import gapviz.runs as runs

    monkeypatch.setattr(runs, "SLIDER_QUIET_S", 0.6)
    work = runs._SliderWork()
    assert not work.active()
    work.begin()
    assert work.active()
    started = time.monotonic()
    work.end()
    assert work.active()  # done, but not quiet yet
    time.sleep(0.3)
    work.begin()  # another move: the quiet period starts again at its end
    work.end()
    restarted = time.monotonic()
    work.wait()
    waited = time.monotonic()
    assert waited - restarted >= 0.6 - 0.01 and waited - started >= 0.9 - 0.01
    assert not work.active()
    work.wait()  # quiet: returns at once
    assert time.monotonic() - waited < 0.1


def test_runs_ahead_asked_first_goes_before_what_is_left_of_older_requests():
    import threading

    from gapviz.runs import RunsAhead

    ahead, done, started, gate = RunsAhead(), [], threading.Event(), threading.Event()
    ahead.request("rows", [lambda: started.set() or gate.wait(10),
                           lambda: done.append("row 2"), lambda: done.append("row 3")])
    assert started.wait(10)
    both = ahead.request("views", [lambda: done.append("view")], first=True)
    gate.set()
    assert both.result(10) == 3  # its own job, then the rows left
    assert done == ["view", "row 2", "row 3"]
    ahead.request("more", [lambda: done.append("more")], first=True)  # nothing left to carry
    ahead.wait()
    assert done == ["view", "row 2", "row 3", "more"]



def test_what_is_left_of_a_lasting_request_runs_after_newer_ones():
    """The server's warm-up asks with ``lasting``: a page's newer request goes first, and the
    warm-up's jobs left (the one under way finishes) run after it, not dropped; a job of it
    that gives way to a user's work is asked for again after the newer jobs."""
    import threading

    from gapviz.runs import RunsAhead, _GaveWay

    ahead, done, started, gate = RunsAhead(), [], threading.Event(), threading.Event()
    gave_way = []

    def yields_once():
        if not gave_way:
            gave_way.append(1)
            raise _GaveWay("a user's work")
        done.append("warm 3")

    ahead.request("warm-up", [lambda: started.set() or gate.wait(10) and done.append("warm 1"),
                              lambda: done.append("warm 2"), yields_once], lasting=True)
    assert started.wait(10)
    ahead.request("rows", [lambda: done.append("row 1")])
    gate.set()
    ahead.wait()
    assert done == ["warm 1", "row 1", "warm 2", "warm 3"]  # warm 3 gave way once, ran again
    ahead.request("later", [lambda: done.append("later")])  # nothing lasting is left
    ahead.wait()
    assert done[-1] == "later" and len(done) == 5


def test_neighbour_solves_obtain_each_neighbours_run_and_view_as_a_move_would(data):
    from gapviz.runs import NeighbourSolves, slider_values
    from gapviz.views import view_of

    runner = Runner()
    spec = RunSpec.make("ot", {"fit_size": 200}).with_params(**slider_values(RunSpec.make("ot")))
    runner.run(spec, data)
    solves = NeighbourSolves(runner)
    assert solves.request(spec, data) is not None
    assert solves.request(spec, data) is None  # the same page shown again: not asked twice
    solves.wait()
    values = neighbour_values("ot", slider_values(spec))
    assert values
    for value in values:
        moved = spec.with_params(**value)
        assert (data.key, moved) in runner.memory.runs  # obtained ahead
        run = runner.run(moved, data)
        assert run._view is not None  # and its view made
        fresh = protocol_transform("ot", data.images, data.texts, protocol="held-out",
                                   params={"fit_size": 200, **value})
        np.testing.assert_array_equal(run.images, fresh.image_embeddings)  # the move's result
        expected = view_of(run.images, run.texts)
        assert run.view.report.metrics == expected.report.metrics
        np.testing.assert_array_equal(run.view.paired, expected.paired)


def test_a_first_move_solved_ahead_is_the_moves_own_run(data):
    """first_moves: one step either way of the method's first slider (none for a method
    without live sliders); solve_ahead makes the moved run and its view as the move does."""
    from gapviz.runs import first_moves, slider_values
    from gapviz.views import view_of

    spec = RunSpec.make("ot", {"fit_size": 200}).with_params(**slider_values(RunSpec.make("ot")))
    values = first_moves(spec)
    assert values == [{"reg_lap": 30.0, "reg_src": 1.0}, {"reg_lap": 300.0, "reg_src": 1.0}]
    sinkhorn = RunSpec.make("sinkhorn")  # one slider: both its neighbours
    assert first_moves(sinkhorn) == neighbour_values("sinkhorn", slider_values(sinkhorn))
    assert len(first_moves(sinkhorn)) == 2
    assert first_moves(RunSpec.make("center")) == []
    runner = Runner()
    runner.run(spec, data)
    for value in values:
        made = runner.solve_ahead(spec, data, value)
        assert made._view is not None
        run = runner.run(spec.with_params(**value), data)
        assert run is made  # what the move reads
        fresh = protocol_transform("ot", data.images, data.texts, protocol="held-out",
                                   params={"fit_size": 200, **value})
        np.testing.assert_array_equal(run.images, fresh.image_embeddings)
        assert run.view.report.metrics == view_of(run.images, run.texts).report.metrics


def test_a_run_makes_its_view_once_for_every_caller(data):
    import threading

    run = Runner().run(RunSpec.make("center"), data)
    views = []
    threads = [threading.Thread(target=lambda: views.append(run.view)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v is views[0] for v in views)


def test_neighbours_of_the_slider_just_moved_come_first():
    from gapviz.runs import _likeliest_first, _moved_slider, slider_values

    spec = RunSpec.make("ot", {"reg_lap": 100.0, "reg_src": 1.0})
    moved = spec.with_params(reg_src=0.9)
    assert _moved_slider(spec, moved) == "reg_src"
    assert _moved_slider(spec, spec.with_params(reg_lap=300.0, reg_src=0.9)) is None  # two moved
    assert _moved_slider(spec, RunSpec.make("sinkhorn")) is None

    def sliders_of(groups, spec):
        now = slider_values(spec)
        return [{k for v in g for k in v if v[k] != now[k]} for g in groups]

    groups = _likeliest_first(moved, "reg_src")
    assert sliders_of(groups, moved) == [{"reg_src"}, {"reg_lap"}]
    flat = [v for g in groups for v in g]
    everything = neighbour_values("ot", slider_values(moved))
    assert len(flat) == len(everything) and all(v in flat for v in everything)
    assert sliders_of(_likeliest_first(spec, None), spec) == [{"reg_lap"}, {"reg_src"}]


@pytest.mark.parametrize("users_work", ["page", "page waiting for it", "slider work"])
def test_a_run_obtained_ahead_gives_way_to_the_users_work_between_folds(data, monkeypatch,
                                                                         users_work):
    """A held-out run obtained ahead stops at its next fold while a page's work runs, or work
    ahead of a slider move (and is obtained afterwards, the same as asked directly), unless
    that page waits for this run."""
    import contextlib
    import threading

    from gapviz.methods.baselines import ProcrustesGap
    from gapviz.methods.ot import foreground
    from gapviz.runs import _SLIDER_WORK, RunsAhead

    @contextlib.contextmanager
    def slider_work():
        _SLIDER_WORK.begin()
        try:
            yield
        finally:
            _SLIDER_WORK.end()

    runner, inside, release, fits = Runner(), threading.Event(), threading.Event(), []
    real = ProcrustesGap._fit

    def fit(self, X, Y, progress):
        fits.append(len(X))
        if len(fits) == 1:
            inside.set()
            release.wait(10)
        return real(self, X, Y, progress)

    monkeypatch.setattr(ProcrustesGap, "_fit", fit)
    spec = RunSpec.make("procrustes")
    ahead = RunsAhead()
    future = ahead.request("rows", [lambda: runner.run(spec, data)])
    assert inside.wait(10)
    waits = users_work == "page waiting for it"
    with slider_work() if users_work == "slider work" else foreground():
        if waits:
            page = threading.Thread(target=lambda: runner.run(spec, data))
            page.start()
            while not runner.memory.under_way.awaited((data.key, spec)):
                time.sleep(0.001)
        release.set()
        if waits:
            page.join(20)
            assert (data.key, spec) in runner.memory.runs  # finished while the page waited
        else:
            deadline = time.monotonic() + 20
            while (data.key, spec) in runner.memory.under_way and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (data.key, spec) not in runner.memory.runs  # stopped at its next fold
            stopped_after = len(fits)
            assert stopped_after < 5
    assert future.result(30) == 1
    done = runner.memory.runs.get((data.key, spec))
    if waits:
        assert len(fits) == 5  # one protocol, never stopped
    else:
        assert len(fits) == stopped_after + 5  # stopped, then obtained whole
    fresh = protocol_transform("procrustes", data.images, data.texts, protocol="held-out")
    np.testing.assert_array_equal(done.images, fresh.image_embeddings)


def test_measures_stop_between_panels_when_asked_and_only_then():
    """``stop_between_panels``: the similarity pass asks before each panel; a pass never asked
    to stop gives the same numbers as one with no check."""
    from gapviz.measures import MeasuresStopped, measure_gap, stop_between_panels

    pairs = simulate_pairs(1200, 16, seed=5)  # several panels of 512 rows
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    plain = measure_gap(X, Y, block_values=512 * 1200)
    asked = []

    def after_two():
        asked.append(1)
        return len(asked) > 2

    with stop_between_panels(after_two), pytest.raises(MeasuresStopped):
        measure_gap(X, Y, block_values=512 * 1200)
    stopped_after = len(asked)  # the third check said stop (a second worker may ask once more)
    asked.clear()
    with stop_between_panels(lambda: asked.append(1) and False):
        checked = measure_gap(X, Y, block_values=512 * 1200)
    assert 3 <= stopped_after < len(asked)  # asked before every panel; stopped midway
    assert checked.metrics == plain.metrics
    np.testing.assert_array_equal(checked.best_text_rank, plain.best_text_rank)


def test_stale_work_ahead_stops_in_a_runs_measures_unless_someone_else_asks(data):
    """A run's report and view made ahead of time stop once stale (``_AHEAD.stale`` set on the
    thread, as NeighbourSolves does), keep nothing, and are then made whole; while another
    thread asks for the same run they never stop. Work ahead that is still wanted
    (``should_stop`` alone: RunsAhead's) is never stopped in its measures."""
    from gapviz.runs import _AHEAD, _GaveWay
    from gapviz.views import view_of

    runner = Runner()
    run = runner.run(RunSpec.make("center"), data)
    _AHEAD.should_stop = lambda: True
    try:
        assert run.report is not None  # RunsAhead's give-way is between folds only
    finally:
        _AHEAD.should_stop = None
    run = Runner().run(RunSpec.make("center"), data)
    _AHEAD.stale = lambda: True
    try:
        with pytest.raises(_GaveWay):
            run.report
        with pytest.raises(_GaveWay):
            run.view
        assert run._report is None and run._view is None  # nothing kept
        # another caller asking for this run meanwhile (counted as a page waiting on the
        # run's lock is): made whole although told to stop
        with run._asking():
            assert run.view is not None
    finally:
        _AHEAD.stale = None
    expected = view_of(run.images, run.texts)
    assert run.view.report.metrics == expected.report.metrics
    np.testing.assert_array_equal(run.view.projection.images, expected.projection.images)


def test_a_neighbours_view_stops_once_the_user_moved_on(data, monkeypatch):
    """The view of a neighbouring slider value, under way when the user moves elsewhere, stops
    (it would share the CPUs with the view of the value moved to); nothing is kept."""
    from gapviz.runs import NeighbourSolves, slider_values

    runner = Runner()
    spec = RunSpec.make("sinkhorn", {"fit_size": 60}).with_params(
        **slider_values(RunSpec.make("sinkhorn")))
    runner.run(spec, data)
    solves = NeighbourSolves(runner)
    value = neighbour_values("sinkhorn", slider_values(spec))[0]
    runner.precompute(spec, data, [value])
    checks = []

    def current(token):  # current when the view starts, stale from its first check on
        checks.append(token)
        return len(checks) == 1

    monkeypatch.setattr(solves, "_current", current)
    assert solves._view(0, spec, data, value) is False
    moved = runner.memory.runs.get((data.key, spec.with_params(**value)))
    assert moved is None or moved._view is None
    assert len(checks) >= 2
