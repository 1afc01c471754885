"""Many jobs at once: `fork_map` runs a function over a list of jobs in forked worker processes, in order,
with a progress bar; few jobs run in this process."""

from __future__ import annotations

import multiprocessing
import os
from typing import Iterator

PARALLEL_FROM = 256            # fewer jobs than this run in this process


def _one_thread_each() -> None:
    """A forked worker's numpy (OpenBLAS) and OpenCV each run on one thread: the workers already
    fill the cores, and OpenBLAS's thread pool inherited across fork made every np.dot of a few
    thousand floats in a worker ~20x slower than in the parent (`hashing duplicates`' pixel check of
    54,670 pairs: 463 s, 95 % of it in np.dot; with this, 1,600 pairs 25.3 s -> 2.8 s)."""
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)


def fork_map(fn, jobs: list, progress: bool = True, desc: str = "", unit: str = "img") -> Iterator:
    """fn(job) for every job, in order, with a progress bar; many jobs run in worker processes
    (fork: nothing to re-import; fn must be a module-level function), one thread each."""
    from tqdm import tqdm

    workers = min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True, leave=False)
    try:
        if workers > 1 and len(jobs) >= PARALLEL_FROM and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread_each) as pool:
                for out in pool.imap(fn, jobs, chunksize=32):
                    bar.update()
                    yield out
        else:
            for job in jobs:
                out = fn(job)
                bar.update()
                yield out
    finally:
        bar.close()
