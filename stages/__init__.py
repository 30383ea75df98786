"""One module per stage. `STAGES` maps the names a config uses to their classes;
a config may also name any Stage subclass as `package.module:Class`."""

from __future__ import annotations

import importlib

from thresher.stages.base import Resources, Stage
from thresher.stages.ccnet import CCNetPerplexity
from thresher.stages.dataman import DataManRating
from thresher.stages.dedup import Dedup
from thresher.stages.harm import HarmfulPerplexity
from thresher.stages.heuristics import HeuristicFilters
from thresher.stages.lang import LanguageID
from thresher.stages.url import URLBlocklist
from thresher.stages.wrap import WrapRephrase

STAGES: dict[str, type[Stage]] = {
    cls.name: cls for cls in (URLBlocklist, Dedup, LanguageID, HeuristicFilters, CCNetPerplexity,
                                 HarmfulPerplexity, DataManRating, WrapRephrase)}


def stage_class(name: str) -> type[Stage]:
    """The class for a stage name or a `module:Class` path; ValueError if unknown."""
    if name in STAGES:
        return STAGES[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import stage {name!r}: {err}") from err
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise ValueError(f"{name!r} is not a thresher Stage subclass")
        return cls
    raise ValueError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGES))}")


__all__ = ["STAGES", "Resources", "Stage", "stage_class"]
