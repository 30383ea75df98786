"""Published recipes as named configs (`thresher curate --recipe NAME`).

A recipe is a pipeline YAML shipped here, whose `recipe:` block says what it
reproduces, what differs and which variables it needs (a model path the user gives,
with where the published file lives). `${name}` in the text is filled from
`--set name=VALUE`; a recipe run without one of its variables is refused in one line
that says where to get it. `thresher config --recipe NAME` prints the recipe as
shipped, to copy and edit.
"""

from __future__ import annotations

import re
from importlib import resources

import yaml

from thresher.pipeline.engine.config import Config, ConfigError, parse_config

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def names() -> list[str]:
    return sorted(p.name[:-len(".yaml")] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".yaml"))


def recipe_text(name: str) -> str:
    if name not in names():
        raise ConfigError(f"no recipe {name!r}; the recipes: {', '.join(names())}")
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text()


def parse_sets(values: list[str] | None) -> dict[str, str]:
    """`name=VALUE` pairs from the command line."""
    found = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write --set name=VALUE")
        found[key] = value
    return found


def load_recipe(name: str, variables: dict[str, str]) -> Config:
    """The recipe's config with its variables filled in."""
    text = recipe_text(name)
    declared = (yaml.safe_load(text).get("recipe") or {}).get("variables") or {}
    unknown = sorted(set(variables) - set(declared))
    if unknown:
        raise ConfigError(f"recipe {name}: no variable {', '.join(unknown)}; it takes "
                          f"{', '.join(declared) or 'none'}")
    for variable, where in declared.items():
        if variable not in variables:
            raise ConfigError(f"recipe {name} needs --set {variable}=PATH: {where}")
    filled = _VARIABLE.sub(lambda m: variables[m.group(1)], text)
    return parse_config(yaml.safe_load(filled), f"recipe {name}")
