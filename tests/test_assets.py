"""The shipped sample pairs: rebuilt byte for byte by their script, and loadable as an upload."""

import importlib.util
from pathlib import Path

from gapviz.data import load_folder

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def test_sample_zip_is_what_its_script_builds(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample_pairs", ASSETS / "make_sample_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build(tmp_path / "rebuilt.zip") == 40
    assert (tmp_path / "rebuilt.zip").read_bytes() == (ASSETS / "sample_pairs.zip").read_bytes()


def test_sample_zip_loads_every_pair(tmp_path):
    pairs, report = load_folder(ASSETS / "sample_pairs.zip", cache_dir=tmp_path)
    assert report.n_kept == 40 and report.n_skipped == 0
    captions = {p.caption for p in pairs}
    assert "a large red circle on a grey background" in captions
