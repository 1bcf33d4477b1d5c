"""Task `cache`: build every frame cache a training run of this config reads, before a sweep.

    python run.py task=cache data.root=DATA [frontend=... data.cache.dir=...]
    python run.py -m data.root=DATA label.m=0.5,0.65,0.8 ...   # the jobs then open it

Composes the DataModule exactly as `task=train` would and runs its `prepare_data`: the
train_audio frames (and the teacher's, the scored and unlabelled soundscapes' where the config
reads them). A sweep's jobs would build the same cache once anyway (the builder holds a file
lock; the others wait and open it), but each of them holds its GPU or its SLURM slot while it
waits; built first, with all the machine's cores, the jobs only open it. A finished cache is
found, not rebuilt; a killed build resumes at its first unfinished shard. `task.verify=N`
rebuilds N of its train_audio shards in a scratch folder and compares them frame for frame
(after a killed build, or on a shared file system). Before writing, a
build estimates its size from the audio headers and refuses to start when the disk lacks room.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from birdclef.runs.envelope import task
from birdclef.tasks.train import build_datamodule

log = logging.getLogger(__name__)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@task
def run(cfg: DictConfig) -> dict:
    datamodule = build_datamodule(cfg)
    tic = time.perf_counter()
    datamodule.prepare_data()
    seconds = time.perf_counter() - tic
    frames = datamodule.train_frames()  # opened (built above): its index and folder
    audio = float(frames.index["n_samples"].sum()) / datamodule.frontend.sample_rate
    cache_dir = Path(frames.dir).parent  # every recording set cached with this front end
    checked, differ = 0, []
    if int(cfg.task.verify) > 0:
        checked, differ = datamodule.verify_train_frames(int(cfg.task.verify), int(cfg.seed))
        if differ:
            log.error("cache %s: %d of %d rebuilt shards differ: %s", cache_dir, len(differ),
                      checked, differ)  # fmt: skip
    metrics = {
        "cache/recordings": float(len(frames.index)),
        "cache/bad_files": float(len(frames.bad)),
        "cache/audio_hours": audio / 3600.0,
        "cache/seconds": seconds,
        "cache/bytes": float(folder_bytes(cache_dir)),
        "cache/verified_shards": float(checked),
        "cache/differing_shards": float(len(differ)),
    }
    log.info(
        "cache %s: %d recordings (%.1f h of audio, %d bad), %.2f GB, ready in %.0f s",
        cache_dir, len(frames.index), audio / 3600.0, len(frames.bad),
        metrics["cache/bytes"] / 1e9, seconds,
    )  # fmt: skip
    return metrics
