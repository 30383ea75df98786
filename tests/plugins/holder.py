"""Holds a 'model' (its process id) the way a teacher actor holds its engine: for the
engine's runner test (tests/engine/test_stage_protocol.py). Here so that Ray workers,
which get tests/plugins on their PYTHONPATH, can import it."""

import os


class Holder:
    def __init__(self, base: int):
        self.base, self.pid = base, os.getpid()

    def add(self, n: int) -> tuple[int, int]:
        return self.base + n, self.pid
