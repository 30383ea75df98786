"""Test-only stages that fail on purpose, named in configs as `faulty:Class`."""

import os

import pyarrow as pa

from thresher.stages.base import Resources, Stage


class RaiseOnMarker(Stage):
    """Raises on any batch holding a text that contains `marker`."""

    name = "raiser"
    columns = {"raiser_len": pa.int64()}
    default_resources = Resources(num_cpus=0.25, concurrency=1, batch_size=64)

    def __init__(self, marker: str = "BOOM", resources=None):
        super().__init__(resources)
        self.marker = marker

    def __call__(self, batch):
        texts = batch.column("text").to_pylist()
        if any(self.marker in t for t in texts):
            raise ValueError("cannot score this document")
        return batch.append_column("raiser_len", pa.array([len(t) for t in texts], pa.int64()))


class KillWorkerOnce(Stage):
    """Kills its own worker process the first time it sees `marker` (a file records
    that it did), as an OOM kill or a lost node would."""

    name = "killer"
    columns = {"killer_seen": pa.bool_()}
    default_resources = Resources(num_cpus=0.25, concurrency=1, batch_size=32)

    def __init__(self, flag_file: str, marker: str = "KILL", resources=None):
        super().__init__(resources)
        self.flag_file = flag_file
        self.marker = marker

    def __call__(self, batch):
        texts = batch.column("text").to_pylist()
        if any(self.marker in t for t in texts) and not os.path.exists(self.flag_file):
            open(self.flag_file, "w").close()
            os._exit(1)
        return batch.append_column("killer_seen", pa.array([True] * batch.num_rows))


class Slow(Stage):
    """Sleeps on each batch holding `marker`, in a single actor, so that shards without
    it finish early and a test can interrupt the run while the others are in flight."""

    name = "slow"
    columns = {"slow_ok": pa.bool_()}
    default_resources = Resources(num_cpus=0.25, concurrency=1, batch_size=16)

    def __init__(self, seconds: float = 0.5, marker: str = "SLOW", resources=None):
        super().__init__(resources)
        self.seconds = seconds
        self.marker = marker

    def __call__(self, batch):
        import time

        if any(self.marker in t for t in batch.column("text").to_pylist()):
            time.sleep(self.seconds)
        return batch.append_column("slow_ok", pa.array([True] * batch.num_rows))


class RecordPid(Stage):
    """Records the process that scored each row: shows which stages share a worker."""

    name = "pid"
    columns = {"pid": pa.int64()}

    def __init__(self, seconds: float = 0.0, resources=None):
        super().__init__(resources)
        self.seconds = seconds  # per batch: long enough that every worker gets one

    def __call__(self, batch):
        import time

        time.sleep(self.seconds)
        column = next(iter(self.columns))
        return batch.append_column(column, pa.array([os.getpid()] * batch.num_rows, pa.int64()))


class RecordPidAgain(RecordPid):
    name = "pid2"
    columns = {"pid2": pa.int64()}
