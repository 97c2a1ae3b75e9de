"""How many threads: the cores this process may use, and what an ``n_jobs`` value means."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may use (its CPU affinity where known)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def effective_n_jobs(n_jobs: int | None) -> int:
    """Threads that ``n_jobs`` means: joblib's convention (-1 all cores, -2 all but one), 0 or None
    all; "all" is joblib's count (the CPU affinity and any container CPU quota)."""
    import joblib

    cores = joblib.cpu_count()
    if n_jobs is None or int(n_jobs) == 0:
        return cores
    n_jobs = int(n_jobs)
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)
