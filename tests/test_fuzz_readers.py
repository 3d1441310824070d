"""Fuzzing the readers of untrusted files: any bytes give a loaded result or a one-line error of
the reader's documented type (EmbeddingsFileError, DataError, JSONInputError), never another
exception."""

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gapviz.data import DataError, DataReport
from gapviz.data.cc import _wds_caption
from gapviz.data.coco import read_annotations
from gapviz.data.folder import read_caption_rows
from gapviz.embeddings import (EmbeddingsFileError, LoadReport, PairedEmbeddings, load_embeddings,
                               to_npz_bytes)
from gapviz.safety import JSONInputError, loads_json

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


_SCRATCH = tempfile.TemporaryDirectory(prefix="gapviz-fuzz-")  # removed when the run ends


def _write(data: bytes, name: str) -> Path:
    path = Path(_SCRATCH.name) / name
    path.write_bytes(data)
    return path


def _load_or_one_line_error(data: bytes, name: str) -> None:
    path = _write(data, name)
    try:
        pairs, report = load_embeddings(path)
    except EmbeddingsFileError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(str(path)), message
        return
    assert isinstance(pairs, PairedEmbeddings) and isinstance(report, LoadReport)
    assert pairs.n >= 2 and pairs.dim >= 1
    assert np.isfinite(pairs.image_embeddings).all() and np.isfinite(pairs.text_embeddings).all()


def _valid_npz() -> bytes:
    rng = np.random.default_rng(0)
    return to_npz_bytes(PairedEmbeddings(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)),
                                         captions=["a", "b", "c", "d"], image_paths=["1", "2", "3", "4"],
                                         model="m", meta={"k": [1, {"x": 2}]}))


def _valid_parquet() -> bytes:
    vectors = pa.array([[1.0, 2.0, 3.0], [2.0, 1.0, 0.5], [0.1, 0.2, 0.3]])
    table = pa.table({"image_embedding": vectors, "text_embedding": vectors,
                      "caption": pa.array(["a", "b", "c"])})
    table = table.replace_schema_metadata({b"gapviz": b'{"model": "m", "meta": {"a": 1}}'})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


VALID_NPZ = _valid_npz()
VALID_PARQUET = _valid_parquet()


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """``valid`` with a few bytes overwritten, a slice cut out, or cut short."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "truncate", "insert"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif action == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_as_npz_or_parquet(data):
    _load_or_one_line_error(data, "x.npz")
    _load_or_one_line_error(data, "x.parquet")


@FUZZ
@given(mutated(VALID_NPZ))
def test_damaged_npz(data):
    _load_or_one_line_error(data, "e.npz")


@FUZZ
@given(mutated(VALID_PARQUET))
def test_damaged_parquet(data):
    _load_or_one_line_error(data, "e.parquet")


_DTYPES = st.sampled_from(["<f4", "<f8", "<i8", "|u1", "|b1", "<c8", "<U3", "|S2", "<M8[D]", "<f2"])
_ARRAYS = hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


@FUZZ
@given(st.dictionaries(st.sampled_from(["image_embeddings", "text_embeddings", "ids", "captions",
                                        "image_paths", "model", "meta", "other"]), _ARRAYS, max_size=8))
def test_npz_of_any_arrays(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _load_or_one_line_error(buf.getvalue(), "a.npz")


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)


@FUZZ
@given(st.dictionaries(st.sampled_from(["model", "meta", "x"]), _JSON, max_size=3) | _JSON)
def test_parquet_with_any_metadata(meta):
    vectors = pa.array([[1.0, 2.0], [2.0, 1.0], [0.5, 0.5]])
    table = pa.table({"image_embedding": vectors, "text_embedding": vectors})
    table = table.replace_schema_metadata({b"gapviz": json.dumps(meta).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    _load_or_one_line_error(buf.getvalue(), "m.parquet")


def _caption_rows_or_error(data: bytes, name: str) -> None:
    path = _write(data, name)
    report = DataReport()
    try:
        rows = read_caption_rows(path, report)
    except DataError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    for number, row in rows:
        assert isinstance(number, int) and set(row) == {"image", "caption", "id"}
        assert all(isinstance(v, str) for v in row.values())


@FUZZ
@given(st.binary(max_size=1024) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_as_a_captions_file(data):
    for name in ("captions.csv", "captions.tsv", "captions.jsonl"):
        _caption_rows_or_error(data, name)
        _caption_rows_or_error(b"image,caption\n" + data, name)


@FUZZ
@given(st.lists(_JSON, max_size=6))
def test_any_json_lines_as_captions(values):
    _caption_rows_or_error("\n".join(json.dumps(v) for v in values).encode(), "captions.jsonl")


@FUZZ
@given(_JSON | st.fixed_dictionaries({"images": _JSON, "annotations": _JSON}) |
       st.fixed_dictionaries({"images": st.lists(_JSON, max_size=4)}))
def test_any_json_as_coco_annotations(value):
    path = _write(json.dumps(value).encode(), "captions_val2017.json")
    try:
        records, kind = read_annotations(path, None, DataReport())
    except DataError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert kind in ("coco", "karpathy")
    assert all(isinstance(r["id"], str) and isinstance(r["file_name"], str) for r in records)


@FUZZ
@given(st.binary(max_size=512) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_any_webdataset_json(data):
    path = _write(data, "000001.json")
    caption, problem = _wds_caption({".json": path})
    assert (caption is None or isinstance(caption, str)) and (problem is None or caption is None)


@FUZZ
@given(st.text(max_size=200) | st.integers(1, 3000).map(lambda d: "[" * d + "]" * d))
def test_json_reader_never_recurses(text):
    try:
        loads_json(text)
    except JSONInputError as err:
        assert "\n" not in str(err)


_FOOTER_SWEEP = """
import os, sys, tempfile
from gapviz.embeddings import EmbeddingsFileError, load_embeddings
data = open(sys.argv[1], "rb").read()
start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
path = os.path.join(tempfile.mkdtemp(), "f.parquet")
for at in range(start, len(data) - 8):
    for value in {data[at] ^ 1, data[at] ^ 0x10, 0, 0xFF}:
        damaged = bytearray(data)
        damaged[at] = value
        with open(path, "wb") as fh:
            fh.write(damaged)
        try:
            load_embeddings(path)
        except EmbeddingsFileError:
            pass
print("swept", len(data) - 8 - start)
"""


def test_every_single_byte_damage_to_a_parquet_footer_is_survived():
    """Each byte of the footer changed in turn (deterministic, unlike the fuzzing above). Some of
    these make pyarrow's metadata accessors throw an uncatchable C++ exception (a level histogram
    of the wrong size) that ends the process; the reader must not touch them. Run in a child
    process so that such an end is a failure here, not the end of the suite."""
    import subprocess
    import sys

    source = _write(VALID_PARQUET, "footer.parquet")
    done = subprocess.run([sys.executable, "-c", _FOOTER_SWEEP, str(source)], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("swept "), done.stdout


def test_footer_size_bound_equals_pyarrows_metadata():
    """The bounded footer reader gives the same decode-size bound as pyarrow's own accessors on
    sound files: several row groups, dictionary and plain encodings, codecs, size statistics."""
    from gapviz.embeddings import _parquet_size

    rng = np.random.default_rng(0)
    table = pa.table({"image_embedding": pa.array(list(rng.normal(size=(300, 8)))),
                      "text_embedding": pa.array(list(rng.normal(size=(300, 8)).astype(np.float32))),
                      "caption": pa.array([f"c{i % 7}" for i in range(300)]),
                      "id": pa.array(np.arange(300))})
    for options in ({}, {"row_group_size": 64, "compression": "zstd"},
                    {"use_dictionary": False, "compression": "none"},
                    {"row_group_size": 100, "write_statistics": False}):
        buf = io.BytesIO()
        pq.write_table(table, buf, **options)
        path = _write(buf.getvalue(), "sound.parquet")
        meta = pq.ParquetFile(path).metadata
        expected = sum(max(meta.row_group(g).column(c).total_uncompressed_size,
                           meta.row_group(g).column(c).num_values * 8)
                       for g in range(meta.num_row_groups)
                       for c in range(meta.row_group(g).num_columns))
        assert _parquet_size(path) == expected > 0, options
