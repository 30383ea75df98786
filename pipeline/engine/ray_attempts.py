"""The run's count of worker deaths per batch, shared by every node.

Ray Data restarts a worker that dies in a batch (a watchdog's exit, a CUDA crash) and
retries the batch without end. `stages.base.attempt_guard` counts such deaths per
batch and gives up after a few; where it counts is installed here: one actor per run
(the driver starts it), so that a batch retried on another node is still the same
batch, and a killed run's counts end with it.
"""

from __future__ import annotations

import ray

from thresher.stages import base

ACTOR = "thresher-attempts"


class AttemptCounts:
    """Deaths per batch key, held by the run's actor."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def bump(self, key: str) -> int:
        """The deaths counted so far, then one more for the try that starts now."""
        deaths = self.counts.get(key, 0)
        self.counts[key] = deaths + 1
        return deaths

    def clear(self, key: str) -> None:
        self.counts.pop(key, None)

    def count(self, key: str) -> int:
        return self.counts.get(key, 0)


def start():
    """On the driver, before the workers start: the run's counter actor (it lives as
    long as the driver's job). Returns its handle; keep it while the run lasts."""
    return ray.remote(AttemptCounts).options(name=ACTOR, get_if_exists=True,
                                             num_cpus=0).remote()


class _ActorCounts:
    def __init__(self, actor):
        self.actor = actor

    def bump(self, key: str) -> int:
        return ray.get(self.actor.bump.remote(key))

    def clear(self, key: str) -> None:
        ray.get(self.actor.clear.remote(key))


def _counts_for(stage: str):
    try:
        return _ActorCounts(ray.get_actor(ACTOR))
    except ValueError:  # no run's counter (a worker outside a run): count in files
        return base._FileCounts(stage)


def install() -> None:
    """In a worker: stages count batch deaths with the run's actor."""
    base.use_attempt_counts(_counts_for)
