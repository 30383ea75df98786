"""The `gpu` extra installs: pip resolves `.[gpu]` against the package index with the
project's own pins (a dry run: metadata only, none of the big wheels), and the
resolution is the one the GPU image installs (constraints-gpu.txt)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_extra_resolves_to_the_locked_releases():
    done = subprocess.run([sys.executable, str(ROOT / "deploy" / "lock_gpu.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vllm 0.33.0" in done.stdout


def test_gpu_image_and_cpu_setup_install_with_their_constraints():
    pin = re.search(r'^gpu = \["vllm==([\d.]+)"\]', (ROOT / "pyproject.toml").read_text(), re.M)
    lock = (ROOT / "constraints-gpu.txt").read_text()
    assert pin and f"vllm=={pin.group(1)}\n" in lock
    assert "-c constraints-gpu.txt -e '.[gpu]'" in (ROOT / "deploy" / "Dockerfile.gpu").read_text()
    assert "-c constraints-cpu.txt -e" in (ROOT / "Makefile").read_text()
    cpu = dict(line.split("==") for line in (ROOT / "constraints-cpu.txt").read_text().split()
               if "==" in line)
    from importlib.metadata import version

    for name, wanted in cpu.items():  # what make setup installed here
        assert version(name).split("+")[0] == wanted, name
