"""A hard deadline for a call that may never return (a stuck CUDA kernel, an engine
that hangs after an out-of-memory error).

Python cannot interrupt such a call from another thread, so when the deadline passes
the watchdog ends the whole worker process. Inside a Ray actor that is what we want:
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
        print(f"thresher: {what} did not finish within {seconds:g} s; ending this worker "
              "so that Ray restarts it and retries the batch", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
