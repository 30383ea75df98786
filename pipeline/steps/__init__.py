"""Steps over a whole run, outside the stream of batches.

Before the stream, in this order (before_stream(), the engine's Step interface in
pipeline/engine/run.py): dedup (clusters against the index; the decisions its stage
reads), lines (the lines each group of shards repeats, which paragraph dedup removes)
and calibration (values estimated from a sample). After it: the mixing step (Aioli
proportions, training shards) and tokenizing.
"""

from __future__ import annotations


def before_stream() -> list:
    """The steps that run before the stream, in order: each feeds values into stages."""
    from thresher.pipeline.steps.calibrate import CalibrationStep
    from thresher.pipeline.steps.dedup import DedupStep
    from thresher.pipeline.steps.lines import LinesStep

    return [DedupStep(), LinesStep(), CalibrationStep()]
