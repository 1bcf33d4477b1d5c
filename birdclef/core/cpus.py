"""How many CPUs this process may use (its share of a shared machine)."""

from __future__ import annotations

import os

CPUS_ENV = "BIRDCLEF_CPUS"  # a job's share, set by the sweep launcher (birdclef.runs.jobs)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a SLURM or job allocation.

    `os.cpu_count()` counts the whole machine; a job that shares it (a SLURM step,
    a submitit_local sweep, a container with a CPU set) must size its threads and
    worker processes from its own share. `CPUS_ENV` (set by the sweep helpers)
    and `SLURM_CPUS_PER_TASK` cap the count further.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        count = os.cpu_count() or 1
    for name in (CPUS_ENV, "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            count = min(count, int(value))
    return max(1, count)
