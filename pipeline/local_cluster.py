"""A private Ray head on this machine: its own temp dir, its own auth token, bound to
loopback, and stopped without touching any other Ray on the machine (unlike
`ray stop`, which stops them all).

  start_head(dir, port) -> address     stop_head(dir)     client_env(dir) -> env
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil


def client_env(cluster_dir: str | Path) -> dict:
    """Environment for a driver (or `ray` CLI) that talks to this cluster."""
    cluster_dir = Path(cluster_dir).resolve()
    info = json.loads((cluster_dir / "cluster.json").read_text())
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": info["address"],
            "RAY_AUTH_TOKEN_PATH": str(cluster_dir / "auth_token"),
            "RAY_USAGE_STATS_ENABLED": "0"}


def start_head(cluster_dir: str | Path, port: int = 6390, num_cpus: int | None = None,
               timeout: float = 90) -> str:
    cluster_dir = Path(cluster_dir).resolve()
    cluster_dir.mkdir(parents=True, exist_ok=True)
    token = cluster_dir / "auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    command = [ray_cli, "start", "--head", "--block", f"--port={port}",
               "--node-ip-address=127.0.0.1", f"--temp-dir={ray_temp_dir(cluster_dir)}",
               "--include-dashboard=false", "--disable-usage-stats"]
    if num_cpus:
        command.append(f"--num-cpus={num_cpus}")
    log_path = cluster_dir / "head.log"
    with open(log_path, "w") as log:
        # Its own session: stop_head signals the whole group and nothing else.
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    (cluster_dir / "cluster.json").write_text(json.dumps({"address": address, "pid": head.pid}))
    deadline = time.time() + timeout
    while "Ray runtime started" not in log_path.read_text():
        if head.poll() is not None or time.time() > deadline:
            stop_head(cluster_dir)
            raise RuntimeError(f"Ray head did not start; see {log_path}:\n"
                               + log_path.read_text()[-2000:])
        time.sleep(0.5)
    return address


def ray_temp_dir(cluster_dir: Path) -> str:
    """Ray's own files, under a short path: its socket paths must fit in 107 bytes."""
    return f"/tmp/thresher-{hashlib.sha1(str(cluster_dir).encode()).hexdigest()[:10]}"


def stop_head(cluster_dir: str | Path, grace: float = 40) -> None:
    cluster_dir = Path(cluster_dir).resolve()
    info_path = cluster_dir / "cluster.json"
    if not info_path.exists():
        return
    pid = json.loads(info_path.read_text())["pid"]
    _signal_group(pid, signal.SIGTERM)  # ray start --block drains, then stops its processes
    deadline = time.time() + grace
    while _ours(cluster_dir) and time.time() < deadline:
        time.sleep(0.5)
    _signal_group(pid, signal.SIGKILL)
    for proc in _ours(cluster_dir):
        proc.kill()
    info_path.unlink()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _ours(cluster_dir: Path) -> list[psutil.Process]:
    """Processes of this cluster: those whose command line names its temp dir."""
    marker = ray_temp_dir(cluster_dir)
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid in spared:
                continue
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
