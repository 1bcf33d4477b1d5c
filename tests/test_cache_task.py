"""task=cache: the caches a training run reads, built before it; a rerun finds them."""

from __future__ import annotations

from birdclef.tasks import cache
from tests.conftest import compose_cfg


def test_cache_task_builds_what_training_reads_and_a_rerun_finds_it(tiny_root, tmp_path):
    overrides = ("task=cache", f"data.root={tiny_root}", f"data.cache.dir={tmp_path / 'cache'}",
                 "data.cache.workers=0")  # fmt: skip
    first = cache.run(compose_cfg(*overrides, tmp=tmp_path / "a"))
    shards = sorted((tmp_path / "cache").rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert first["cache/recordings"] > 0 and first["cache/bad_files"] == 0
    assert first["cache/bytes"] >= sum(p.stat().st_size for p in shards) > 0
    assert first["cache/audio_hours"] > 0
    again = cache.run(compose_cfg(*overrides, tmp=tmp_path / "b"))
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # found, not rebuilt
    assert again["cache/recordings"] == first["cache/recordings"]
    assert again["cache/bytes"] == first["cache/bytes"]


def test_verify_rebuilds_shards_and_names_one_that_differs(tiny_root, tmp_path):
    import numpy as np

    overrides = ("task=cache", f"data.root={tiny_root}", f"data.cache.dir={tmp_path / 'cache'}",
                 "data.cache.workers=0", "task.verify=1000")  # fmt: skip
    clean = cache.run(compose_cfg(*overrides, tmp=tmp_path / "a"))
    assert clean["cache/differing_shards"] == 0
    assert 0 < clean["cache/verified_shards"] < 1000  # every train_audio shard, not the count asked
    shard = sorted((tmp_path / "cache").rglob("shards/*.npy"))[0]
    np.save(shard, np.zeros_like(np.load(shard)))  # a shard damaged after its build
    damaged = cache.run(compose_cfg(*overrides, tmp=tmp_path / "b"))
    assert damaged["cache/differing_shards"] == 1
