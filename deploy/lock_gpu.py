"""The `gpu` extra's whole resolution, as pip computes it, in constraints-gpu.txt.

    python deploy/lock_gpu.py          # resolve `.[gpu]` and write constraints-gpu.txt
    python deploy/lock_gpu.py --check  # exit 1 when `.[gpu]` does not resolve, or when
                                       # its resolution is not the one in the file
    python deploy/lock_gpu.py --source tools/vllm-src   # the locked vLLM's source
                                       # package, unpacked there (for the API check)

pip resolves with `--dry-run`: it reads the packages' metadata from the index and
downloads none of the big wheels (vLLM, CUDA torch). The GPU image installs this
resolution (deploy/Dockerfile.gpu), so what CI resolved is what the image gets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints-gpu.txt"
HEADER = ("# The resolution of thresher's `gpu` extra (vLLM and what it needs), written by\n"
          "# `python deploy/lock_gpu.py`; deploy/Dockerfile.gpu installs with it.\n")


def resolve(constraints: Path | None = None) -> dict[str, str]:
    """{package: version} pip would install for `.[gpu]` on this Python, or SystemExit
    with pip's own explanation when it cannot resolve."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                   "--quiet", "--report", str(report), f"{ROOT}[gpu]"]
        if constraints is not None:
            command += ["-c", str(constraints)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines()
                      if not line.startswith("WARNING: Location")]
            raise SystemExit("pip cannot resolve thresher[gpu]:\n" + "\n".join(errors[-40:]))
        installs = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
            for i in installs if i["metadata"]["name"].lower() != "thresher"}


def read_lock(path: Path = LOCK) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def fetch_source(dest: Path, package: str = "vllm") -> Path:
    """The locked release's source distribution from the package index (its sha256
    checked), unpacked into dest/<package>-<version>/; kept when already there. It
    is the release itself, read without installing it (its wheel is 336 MB of CUDA
    kernels; the source is 47 MB)."""
    version = read_lock()[package]
    folder = dest / f"{package}-{version}"
    if (folder / "PKG-INFO").is_file():
        return folder
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    request = urllib.request.Request(f"{index}/{package}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        files = json.load(reply)["files"]
    [sdist] = [f for f in files if f["filename"] == f"{package}-{version}.tar.gz"]
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / sdist["filename"]
    with urllib.request.urlopen(sdist["url"], timeout=600) as reply, open(archive, "wb") as out:
        shutil.copyfileobj(reply, out)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != sdist["hashes"]["sha256"]:
        archive.unlink()
        raise SystemExit(f"{archive.name}: sha256 {digest} is not the index's")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="resolve with the lock as constraints and compare; write nothing")
    parser.add_argument("--source", type=Path, metavar="DIR",
                        help="unpack the locked vLLM's source package into DIR")
    args = parser.parse_args()
    if args.source:
        print(fetch_source(args.source))
        return 0
    if args.check:
        resolved = resolve(LOCK)
        locked = read_lock()
        differ = sorted(f"{name}: locked {locked.get(name)}, resolved {version}"
                        for name, version in resolved.items() if locked.get(name) != version)
        if differ:
            print("constraints-gpu.txt is not the resolution of .[gpu] (rerun "
                  "`python deploy/lock_gpu.py`):\n  " + "\n  ".join(differ), file=sys.stderr)
            return 1
        print(f"thresher[gpu] resolves: {len(resolved)} packages, vllm {resolved['vllm']}, "
              f"torch {resolved['torch']}, transformers {resolved['transformers']}, "
              f"numpy {resolved['numpy']}")
        return 0
    resolved = resolve()
    LOCK.write_text(HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(resolved.items())))
    print(f"wrote {LOCK.name}: {len(resolved)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
