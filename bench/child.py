"""Run one side of a benchmark in a child process and measure its memory."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


def measure_child(command: list[str], name: str) -> dict:
    """Run `command`, whose last stdout line is a JSON result, and add `peak_rss_mb`:
    the largest sum of RSS over the child and all its descendants (Ray's raylet and
    workers, worker pools, ...), sampled every 0.1 s."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output, peak = watch(child)
    if child.returncode:
        raise SystemExit(f"{name} failed with exit code {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak / 2**20
    return result


def watch(child: subprocess.Popen) -> tuple[str | None, int]:
    """Wait for the child: (its stdout, when piped; the peak sum of RSS over it and
    its descendants, sampled every 0.1 s)."""
    peak = [0]

    def sample():
        root = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    sampler.join()
    return output, peak[0]


def curate(crawl: str, out: str, config_text: str, cpus: int) -> tuple[float, dict]:
    """`thresher curate` with this config, as a user runs it: (wall seconds, the run's
    manifest)."""
    config = Path(out + ".yaml")
    config.write_text(config_text)
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("thresher")), "--log-level", "WARNING",
                    "curate", "-i", crawl, "-o", out, "-c", str(config), "--no-progress",
                    "--num-cpus", str(cpus)], check=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads(next(Path(out).glob("runs/*/manifest.json")).read_text())
