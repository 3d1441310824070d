"""The processes gapviz owns import POT with its numpy backend only (no torch import), and the
OT methods give the same result either way."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, os, sys
import numpy as np
from gapviz.methods import make_method
from gapviz.methods.ot import pot_numpy_backend_only
if sys.argv[1] == "owned":
    pot_numpy_backend_only()
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(60, 8)), rng.normal(size=(60, 8)) + 1.0
out = make_method("sinkhorn", fit_size=None).fit(X, Y).transform(X, Y)
import ot
print(json.dumps({"torch": "torch" in sys.modules,
                  "backends": [type(b).__name__ for b in ot.backend.get_backend_list()],
                  "switch": os.environ.get("POT_BACKEND_DISABLE_PYTORCH"),
                  "out": np.concatenate([o.ravel() for o in out]).tolist()}))
"""


def _child(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_owned_processes_import_pot_without_torch_and_fit_the_same():
    owned, library = _child("owned"), _child("library")
    assert owned["backends"] == ["NumpyBackend"] and not owned["torch"]
    assert owned["switch"] == "1"
    assert owned["out"] == library["out"]  # the same transport, bit for bit


def _fresh_switches(monkeypatch) -> None:
    """As before POT's import, with no switch set (all put back after the test)."""
    from gapviz.methods.ot import POT_BACKEND_SWITCHES

    monkeypatch.delitem(sys.modules, "ot", raising=False)
    for key in POT_BACKEND_SWITCHES:
        monkeypatch.delenv(key, raising=False)


def test_a_switch_set_by_the_user_is_kept(monkeypatch):
    from gapviz.methods.ot import pot_numpy_backend_only

    _fresh_switches(monkeypatch)
    monkeypatch.setenv("POT_BACKEND_DISABLE_PYTORCH", "")
    pot_numpy_backend_only()
    assert os.environ["POT_BACKEND_DISABLE_PYTORCH"] == ""
    assert os.environ["POT_BACKEND_DISABLE_JAX"] == "1"


def test_the_command_line_switches_it(monkeypatch):
    from gapviz.cli import main

    _fresh_switches(monkeypatch)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert os.environ["POT_BACKEND_DISABLE_PYTORCH"] == "1"


def test_the_app_frame_switches_it(monkeypatch):
    import importlib

    _fresh_switches(monkeypatch)
    monkeypatch.delitem(sys.modules, "ui.frame", raising=False)
    importlib.import_module("ui.frame")  # every page imports it first
    assert os.environ["POT_BACKEND_DISABLE_PYTORCH"] == "1"


def test_the_ground_cost_is_pots_bit_for_bit():
    """OT's and Sinkhorn's cost (and the continuous map's distances) are computed without
    importing POT, with the same numbers as ``ot.dist``."""
    import numpy as np
    import ot

    from gapviz.couplings import squared_distances

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        X = rng.normal(size=(37, 11)).astype(dtype)
        Y = rng.normal(size=(23, 11)).astype(dtype)
        for a, b in ((X, Y), (X, X), (X, X.copy()), (Y[:5], X)):
            ours, pots = squared_distances(a, b), ot.dist(a, b)
            assert ours.dtype == pots.dtype and np.array_equal(ours, pots)
    # rows at the same point: POT clips the rounding's negatives to 0, and so does this
    same = np.repeat(rng.normal(size=(1, 7)), 4, axis=0)
    assert np.array_equal(squared_distances(same, same.copy()), ot.dist(same, same.copy()))


_DEFAULT_FITS = """
import json, sys
import numpy as np
from gapviz.methods import make_method
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(80, 8)), rng.normal(size=(80, 8)) + 1.0
for name in ("ot", "sinkhorn"):
    make_method(name).fit(X, Y).transform(X, Y)
make_method("sinkhorn", out_of_sample="continuous").fit(X, Y).transform(X, Y)
print(json.dumps({"pot": "ot" in sys.modules, "torch": "torch" in sys.modules}))
"""


def test_default_transport_fits_do_not_import_pot():
    """A library user's first OT or Sinkhorn fit does not wait for POT's import (which pulls
    in torch where it is installed: about 2 s)."""
    done = subprocess.run([sys.executable, "-c", _DEFAULT_FITS], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"pot": False, "torch": False}
