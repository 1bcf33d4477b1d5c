"""Task `eda`: the study's exploratory report (Markdown + PNG) of a competition-layout folder.

python run.py task=eda [data.root=FOLDER]   # -> <run folder>/report/report.md
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from omegaconf import DictConfig

from birdclef.analysis.eda import GROUPS, SkipSection, audio_files, load_inputs, spectral_frontends
from birdclef.analysis.eda_report import SECTIONS, Context
from birdclef.analysis.headers import read_headers
from birdclef.core.cpus import available_cpus
from birdclef.core.errors import DataError
from birdclef.core.io import write_csv, write_text
from birdclef.data.root import data_root
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)


@task
def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    root = data_root(cfg)
    if not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist. Point data.root at a competition-layout folder "
            "(train.csv, train_audio/), or leave it null for the built-in synthetic dataset."
        )
    settings = cfg.task
    out = run_dir(cfg) / settings.report_dir
    train, classes = load_inputs(root)
    if "filename" in train:
        labelled = [root / "train_audio" / f for f in train["filename"].str.strip()]
    else:
        log.warning("train.csv has no 'filename' column: timing every file under train_audio/")
        labelled = audio_files(root, "train_audio")
    paths = {"labelled": labelled}
    paths.update({g: audio_files(root, d) for g, d in GROUPS.items() if g != "labelled"})
    workers = int(settings.workers or available_cpus())
    every = [p for group in paths.values() for p in group]
    t0 = time.perf_counter()
    rows = read_headers(every, workers=workers, desc="audio headers")
    header_seconds = time.perf_counter() - t0
    headers, first = {}, 0
    for group, group_paths in paths.items():
        headers[group] = rows.iloc[first : first + len(group_paths)].reset_index(drop=True)
        first += len(group_paths)
    bad = rows[rows["error"] != ""]
    for row in bad.head(5).itertuples():
        log.warning("unreadable header: %s (%s)", row.path, row.error)
    mel, mfcc = spectral_frontends(cfg.frontend, cfg.sample_rate, settings.n_mfcc)
    ctx = Context(root, out, settings, int(cfg.sample_rate), train, headers, classes, mel, mfcc)
    ctx.numbers.update({"eda/files": len(every), "eda/unreadable": len(bad),
                        "eda/header_seconds": header_seconds,
                        "eda/header_files_per_second": len(every) / max(header_seconds, 1e-9)})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "headers.csv", rows)
    parts = [f"# EDA of `{root}`\n", f"{len(train)} rows in train.csv; {len(every)} audio files "
             f"({len(bad)} unreadable); headers read in {header_seconds:.1f} s by {workers} "
             f"thread(s).\n"]  # fmt: skip
    t0 = time.perf_counter()
    for title, section in SECTIONS:
        parts.append(f"## {title}\n")
        parts.append(_section(title, section, ctx))
    ctx.numbers["eda/section_seconds"] = time.perf_counter() - t0
    ctx.numbers["eda/seconds"] = time.perf_counter() - started
    write_text(out / "report.md", "\n".join(parts))
    log.info("EDA report: %s (%.1f s)", out / "report.md", ctx.numbers["eda/seconds"])
    return ctx.numbers


def _section(title: str, section: Callable[[Context], str], ctx: Context) -> str:
    """A section's Markdown, or a line saying why it was skipped (and the same in the log)."""
    try:
        return section(ctx) + "\n"
    except SkipSection as why:
        log.warning("EDA section %r skipped: %s", title, why)
        return f"*Skipped: {why}.*\n"
