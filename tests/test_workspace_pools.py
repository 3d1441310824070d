"""Pools shared by every workspace of a process (gapviz.workspace.SharedPools): one copy per
content hash, views kept while a workspace holds the pool and released when none does."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from gapviz.embeddings import PairedEmbeddings
from gapviz.workspace import SharedPools, Workspace


def _load(seed: int = 0, **fields) -> PairedEmbeddings:
    """A fresh copy of the same pool each call (as a new upload of the same file makes)."""
    rng = np.random.default_rng(seed)
    return PairedEmbeddings(rng.normal(size=(6, 4)), rng.normal(size=(6, 4)),
                            captions=[f"caption {i}" for i in range(6)], model="m", **fields)


def test_two_workspaces_loading_the_same_pool_hold_one_copy():
    pools = SharedPools()
    a, b = Workspace(pools=pools), Workspace(pools=pools)
    a.add(_load(), source="upload")
    b.add(_load(), source="upload")
    pa, pb = a.active.pairs, b.active.pairs
    assert pa is pb
    assert a.active.key == b.active.key
    # another pool is its own
    b.add(_load(seed=1), source="other")
    assert b.active.pairs is not pa
    assert pools.stats() == {"pools": 2, "held": 2, "views": 0}


def test_same_arrays_other_captions_share_the_arrays_only():
    pools = SharedPools()
    a, b = Workspace(pools=pools), Workspace(pools=pools)
    a.add(_load(), source="upload")
    other = _load()
    other.captions = [f"another caption {i}" for i in range(6)]
    other.image_paths = [f"img{i}.jpg" for i in range(6)]
    b.add(other, source="upload")
    pa, pb = a.active.pairs, b.active.pairs
    assert pa is not pb
    assert pb.image_embeddings is pa.image_embeddings and pb.text_embeddings is pa.text_embeddings
    assert pb.ids is pa.ids
    assert pb.captions == other.captions and pa.captions == [f"caption {i}" for i in range(6)]
    assert pb.image_paths == other.image_paths and pa.image_paths is None


def test_metadata_that_cannot_be_compared_is_not_shared():
    pools = SharedPools()
    first = _load(meta={"cluster": np.arange(6)})
    second = _load(meta={"cluster": np.arange(6)})
    assert pools.share(first, "k") is first
    shared = pools.share(second, "k")
    assert shared is not first and shared.meta is second.meta
    assert shared.image_embeddings is first.image_embeddings


def test_a_pool_is_freed_once_no_workspace_holds_it():
    pools = SharedPools()
    ws = Workspace(pools=pools)
    ws.add(_load(), source="upload")
    key = ws.active.key
    assert pools.stats()["pools"] == 1 and pools.held(key)
    del ws
    gc.collect()
    assert pools.stats() == {"pools": 0, "held": 0, "views": 0}


def test_views_are_kept_while_held_and_released_when_the_session_ends():
    pools = SharedPools()
    a, b = Workspace(pools=pools), Workspace(pools=pools)
    a.add(_load(), source="upload")
    b.add(_load(), source="upload")
    key = a.active.key
    made = []

    def make():
        made.append(1)
        return object()

    first = pools.view(key, "pca", make)
    assert pools.view(key, "pca", make) is first and len(made) == 1
    assert pools.has_view(key, "pca")
    del a
    gc.collect()
    assert pools.has_view(key, "pca")  # b still holds the pool
    del b
    gc.collect()
    assert not pools.has_view(key, "pca") and pools.stats()["views"] == 0


def test_views_go_when_the_pool_is_dropped_or_removed():
    pools = SharedPools()
    ws = Workspace(pools=pools)
    ws.add(_load(), source="upload", dataset="d", model="one")
    ws.add(_load(seed=1), source="upload", dataset="e", model="two")
    k1 = ws.datasets["d"].hashes["one"]
    k2 = ws.datasets["e"].hashes["two"]
    pools.view(k1, "pca", object)
    pools.view(k2, "pca", object)
    ws.remove("d")
    assert not pools.has_view(k1, "pca") and pools.has_view(k2, "pca")
    ws.drop_model("e", "two")
    assert pools.stats()["views"] == 0


def test_a_pool_held_twice_by_one_workspace_stays_until_both_go():
    pools = SharedPools()
    ws = Workspace(pools=pools)
    ws.add(_load(), source="upload", dataset="d", model="one")
    ws.add(_load(), source="upload", dataset="copy", model="one")  # same pairs, other name
    key = ws.datasets["d"].hashes["one"]
    pools.view(key, "pca", object)
    ws.remove("d")
    assert pools.has_view(key, "pca")
    ws.remove("copy")
    assert not pools.has_view(key, "pca")


def test_views_of_pools_nobody_holds_are_made_but_not_kept():
    pools = SharedPools()
    calls = []
    pools.view("nobody", "pca", lambda: calls.append(1))
    pools.view("nobody", "pca", lambda: calls.append(1))
    assert len(calls) == 2 and pools.stats()["views"] == 0


def test_views_are_bounded_least_recently_used_first():
    pools = SharedPools(max_views=2)
    ws = Workspace(pools=pools)
    ws.add(_load(), source="upload")
    key = ws.active.key
    for name in ("a", "b"):
        pools.view(key, name, object)
    pools.view(key, "a", object)  # a is now the most recent
    pools.view(key, "c", object)
    assert pools.has_view(key, "a") and pools.has_view(key, "c")
    assert not pools.has_view(key, "b")
    with pytest.raises(ValueError, match="max_views"):
        SharedPools(max_views=0)


def test_concurrent_callers_wait_for_one_make():
    pools = SharedPools()
    ws = Workspace(pools=pools)
    ws.add(_load(), source="upload")
    key = ws.active.key
    started = threading.Event()
    calls = []

    def slow():
        calls.append(1)
        started.set()
        threading.Event().wait(0.2)
        return object()

    out = []
    threads = [threading.Thread(target=lambda: out.append(pools.view(key, "v", slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(o) for o in out}) == 1


def test_a_workspace_without_shared_pools_keeps_what_it_is_given():
    ws = Workspace(pools=None)
    pairs = _load()
    ws.add(pairs, source="upload")
    assert ws.active.pairs is pairs
