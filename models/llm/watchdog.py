"""A hard deadline for a call that may never return (a stuck CUDA kernel, an engine
that hangs after an out-of-memory error).

Python cannot interrupt such a call from another thread, so when the deadline passes
the watchdog ends the whole worker process, and every process it started (vLLM runs
its engine core in a child process that holds the GPU memory: left alive, it would
make the restarted worker fail vLLM's free-memory check). Inside a Ray actor that is
what we want:
Ray restarts the actor and retries the batch, and the stage's attempt counter (see
stages/dataman.py) quarantines a batch that keeps failing, instead of a job that
hangs forever.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

EXIT_CODE = 75  # EX_TEMPFAIL: the batch, not the program, failed


@contextmanager
def deadline(seconds: float | None, what: str):
    if not seconds:
        yield
        return

    def expire():
        end_worker(f"{what} did not finish within {seconds:g} s")

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def end_worker(why: str) -> None:
    """End this worker and its child processes now (no cleanup runs: the engine may be
    stuck), so that Ray restarts the actor on a clean GPU and retries the batch."""
    import psutil

    print(f"thresher: {why}; ending this worker so that Ray restarts it and retries the "
          "batch", file=sys.stderr, flush=True)
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.Error:  # gone already
            pass
    psutil.wait_procs(children, timeout=10)
    os._exit(EXIT_CODE)
