"""One module per stage. Each module registers its stage by defining it; `STAGES` maps
the names a config uses to their classes. A config may also name any Stage subclass
as `package.module:Class` (a plugin: docs/stages.md, "Writing a stage")."""

from __future__ import annotations

import importlib
import pkgutil

from thresher.stages.base import REGISTRY, Chart, Resources, Stage

_NOT_STAGES = {"base", "testing"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_STAGES:
        importlib.import_module(f"{__name__}.{_module.name}")

STAGES: dict[str, type[Stage]] = REGISTRY


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


__all__ = ["STAGES", "Chart", "Resources", "Stage", "stage_class"]
