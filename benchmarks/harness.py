"""The one helper module of the timing scripts: CPU share, interleaved timing, machine notes, tables.

A script times its variants with `interleave` (round-robin, so that machine noise hits all
alike), summarises them with `compare` (medians, quartiles, ratio to a baseline) and hands
its Markdown and data to `report`, which adds a line describing the machine and writes
`--out` as `.md` and `.json` atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import user_error
from birdclef.core.io import write_json, write_text

RESULTS = Path(__file__).resolve().parent / "results"  # git-ignored
PACKAGES = ("torch", "onnxruntime", "numpy")  # versions recorded with every result
CPUINFO = Path("/proc/cpuinfo")  # Linux; elsewhere the CPU model comes from `platform`
QUARTERS = 4  # statistics.quantiles(n=4): the three quartiles

Clock = Callable[[], float]


def parser(
    doc: str,
    script: str,
    *,
    repeats: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    out_flags: Sequence[str] = ("--out",),
) -> argparse.ArgumentParser:
    """The common options: `--out` (or `out_flags`) always; `--repeats`, `--warmup`, `--threads` if given."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    dest = out_flags[0].lstrip("-").replace("-", "_")
    p.add_argument(
        *out_flags, dest=dest, type=Path, default=RESULTS / f"{Path(script).stem}.md",
        help="the results: this path's .md (the table) and .json (all numbers, the machine)",
    )  # fmt: skip
    if repeats is not None:
        p.add_argument("--repeats", type=int, default=repeats, help="timed calls of each variant")
    if warmup is not None:
        p.add_argument("--warmup", type=int, default=warmup, help="untimed calls of each first")
    if threads is not None:
        p.add_argument("--threads", type=int, default=threads, help="torch and BLAS threads")
    return p


def run(main: Callable[[], Any]) -> None:
    """Call a script's `main`; an error the user can fix ends in its message, not a traceback."""
    try:
        main()
    except Exception as err:
        if (cause := user_error(err)) is None:
            raise
        raise SystemExit(f"error: {cause}") from None


@contextlib.contextmanager
def cpu_share(threads: int | None = None) -> Iterator[int]:
    """Run torch and BLAS (here and in spawned workers) on `threads`, by default this process's CPUs."""
    import torch

    from birdclef.inference.predict import limit_threads

    count = threads or available_cpus()
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with limit_threads(count):
            yield count
    finally:
        torch.set_num_threads(before)


def time_call(fn: Callable[[], Any], clock: Clock = time.perf_counter) -> tuple[float, Any]:
    """Seconds one call of `fn()` takes, and what it returned."""
    began = clock()
    result = fn()
    return clock() - began, result


def interleave(
    variants: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each timed call of each variant, called round-robin (A, B, C, A, B, C ...)."""
    for _ in range(warmup):  # untimed: caches, lazy initialisation, the page cache
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(time_call(fn, clock)[0])
    return times


def summary(seconds: Sequence[float], per: float = 1.0) -> dict[str, float]:
    """Median, quartiles, min and max of `seconds` divided by `per` (the items one call handles)."""
    values = sorted(s / per for s in seconds)
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=QUARTERS, method="inclusive")
    else:
        q1 = q3 = values[0]
    median = statistics.median(values)
    return {"median": median, "q1": q1, "q3": q3, "min": values[0], "max": values[-1],
            "calls": len(values)}  # fmt: skip


def compare(
    times: Mapping[str, Sequence[float]], baseline: str, per: float | Mapping[str, float] = 1.0
) -> dict[str, dict[str, float]]:
    """Each variant's `summary` (seconds per item) and `ratio`: its median over the baseline's."""
    items = per if isinstance(per, Mapping) else dict.fromkeys(times, per)
    out = {name: summary(seconds, items[name]) for name, seconds in times.items()}
    for stats in out.values():
        stats["ratio"] = stats["median"] / out[baseline]["median"]
    return out


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    if CPUINFO.is_file():
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict[str, Any]:
    """What a result was measured on: CPU model, cores, this process's share, threads, versions, date."""
    torch = sys.modules.get("torch")  # threads only where the script uses torch
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cpus": available_cpus(),
        "torch_threads": torch.get_num_threads() if torch else None,
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def describe(info: Mapping[str, Any]) -> str:
    """One line naming the machine and software of `machine()`."""
    threads = f", {info['torch_threads']} torch thread(s)" if info.get("torch_threads") else ""
    versions = ", ".join(f"{name} {info[name]}" for name in PACKAGES if info.get(name))
    return (f"{info['cpu']}, {info['cpus']} of {info['cores']} CPUs{threads}; "
            f"Python {info['python']}, {versions}; {info['date']}")  # fmt: skip


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: the first column left-aligned (names), the others right-aligned (numbers)."""
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report(out: Path, text: str, data: Mapping[str, Any]) -> str:
    """Print `text` with the machine's line and write it to out.md, the data and machine to out.json."""
    info = machine()
    full = f"{text.rstrip()}\n\nMeasured on: {describe(info)}\n"
    write_text(out.with_suffix(".md"), full)
    write_json(out.with_suffix(".json"), {"machine": info, **data})
    print(full + f"\n(written to {out.with_suffix('.md')} and .json)")
    return full
