"""The README's worked example of a new method, run as written: one class and one registry
entry, and the command line, the parameter text and the app follow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def shrink(monkeypatch):
    text = README.read_text()
    block = re.search(r"<!-- example:method -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the README has no method example"
    namespace: dict = {}
    exec(compile(block.group(1), "README example", "exec"), namespace)  # noqa: S102
    cls = namespace["ShrinkGap"]
    from gapviz import methods

    monkeypatch.setitem(methods.METHODS, cls.name, cls)  # the registry entry
    import gapviz.cli.method_options as options

    monkeypatch.setattr(options, "_OPTIONS", options._options())
    return cls


def test_the_example_method_fits_and_transforms_unseen_rows(shrink):
    from gapviz.methods import describe_run, make_method, menu_order
    from gapviz.simulate import simulate_pairs

    pairs = simulate_pairs(200, 32, seed=0)
    method = make_method("shrink", alpha=1.0).fit(pairs.image_embeddings, pairs.text_embeddings)
    Xt, Yt = method.transform_images(pairs.image_embeddings[:5]), method.transform_texts(
        pairs.text_embeddings[:5])
    assert Xt.shape == (5, 32) and np.allclose(np.linalg.norm(Yt, axis=1), 1, atol=1e-5)
    assert describe_run("shrink", {"alpha": 0.8}) == "Shrink to the shared mean, alpha = 0.8"
    assert menu_order().index("shrink") == menu_order().index("standardize") + 1
    with pytest.raises(ValueError, match="alpha must be in"):
        make_method("shrink", alpha=2.0).fit(pairs.image_embeddings, pairs.text_embeddings)


def test_the_command_line_takes_its_flag(shrink, capsys):
    from gapviz.cli import main

    assert main(["evaluate", "demo", "--n", "120", "--dim", "16", "--method", "shrink",
                 "--alpha", "0.8", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == {"method": "shrink", "params": {"alpha": 0.8}}
    assert main(["evaluate", "demo", "--method", "center", "--alpha", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--alpha does not apply to --method center; it applies to " in err
    assert "shrink" in err.split("it applies to ", 1)[1]  # a flag may serve several methods


def test_the_app_offers_it_with_its_slider(shrink, app_session, assert_clean):
    at = app_session("pages/close_gap.py")
    at.selectbox(key="close_method").set_value("shrink").run()
    assert_clean(at, "Close the gap, the example method")
    slider = at.slider(key="close_alpha")
    assert slider.label == "Shrink (alpha)" and slider.value == 0.5
    slider.set_value(0.9).run()
    assert_clean(at, "alpha moved")
    assert at.session_state["workspace"].method_params == {"alpha": 0.9}
