"""Files a stage's workers need, sent through Ray's object store.

A stage names the parameters whose values are local files or folders made on the
driver (`Stage.worker_files`: a trained DataMan student, its teacher annotations).
Before the workers start, each is packed and put in the object store; a worker
unpacks its copy into a folder of its own and builds the stage with that path. A
worker on a node that cannot see the driver's state folder (a KubeRay worker pod)
still loads them.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Shipped:
    """A file or folder in Ray's object store, standing in for its driver path."""

    ref: object  # ray.ObjectRef of the packed bytes
    name: str
    source: str  # the driver's path, for messages


def pack(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(path), arcname=path.name)
    return buffer.getvalue()


def ship(specs: list) -> list:
    """The specs with each worker file replaced by a Shipped copy (on the driver)."""
    import ray

    shipped = []
    for spec in specs:
        params = dict(spec.params)
        for name in spec.cls.worker_files:
            value = params.get(name)
            if value and not isinstance(value, Shipped) and Path(str(value)).exists():
                path = Path(str(value))
                params[name] = Shipped(ray.put(pack(path)), path.name, str(path))
        shipped.append(replace(spec, params=params))
    return shipped


def land(specs: list) -> list:
    """The specs with each Shipped copy unpacked here (in a worker)."""
    landed = []
    for spec in specs:
        if not any(isinstance(value, Shipped) for value in spec.params.values()):
            landed.append(spec)  # nothing to unpack: the same spec, and its built stage
            continue
        import ray

        params = dict(spec.params)
        for name, value in params.items():
            if isinstance(value, Shipped):
                params[name] = str(_unpack(ray.get(value.ref), value.name))
        landed.append(replace(spec, params=params))
    return landed


def _unpack(blob: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="thresher-shipped-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder, filter="data")
    return folder / name
