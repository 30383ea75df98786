"""A private Ray head on this machine: its own temp dir, its own auth token, bound to
loopback, and stopped without touching any other Ray on the machine (unlike
`ray stop`, which stops them all).

  start_head(dir, port) -> address     stop_head(dir)     client_env(dir) -> env

With a dashboard port the head also runs Ray's job server, so `ray job submit` works
against it (`thresher cluster up/down/env`, `make cluster-up/submit/cluster-down`).
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
    info_path = cluster_dir / "cluster.json"
    if not info_path.exists():
        raise RuntimeError(f"no cluster is running from {cluster_dir} "
                           "(start one with `thresher cluster up` or `make cluster-up`)")
    info = json.loads(info_path.read_text())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": info["address"],
           "RAY_AUTH_TOKEN_PATH": str(cluster_dir / "auth_token"),
           "RAY_USAGE_STATS_ENABLED": "0"}
    if info.get("dashboard"):  # `ray job` commands talk to the job server here
        env["RAY_API_SERVER_ADDRESS"] = info["dashboard"]
    return env


def start_head(cluster_dir: str | Path, port: int = 6390, num_cpus: int | None = None,
               timeout: float = 90, dashboard_port: int | None = None) -> str:
    """Start the head; its address. Port 0 (and dashboard port 0): free ports, tried
    again with others when another process takes one between the pick and Ray's bind
    (Ray cannot be handed a socket that is already bound)."""
    if port and dashboard_port != 0:
        return _start_head(cluster_dir, port, num_cpus, timeout, dashboard_port)
    for attempt in range(3):
        chosen = [port or free_port(), free_port() if dashboard_port == 0 else dashboard_port]
        try:
            return _start_head(cluster_dir, chosen[0], num_cpus, timeout, chosen[1])
        except RuntimeError:
            # Ray does not say why; go again only when a port we picked was taken.
            if attempt == 2 or all(_bindable(p) for p in chosen if p):
                raise
    raise AssertionError("unreachable")


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _start_head(cluster_dir, port, num_cpus, timeout, dashboard_port) -> str:
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
               "--disable-usage-stats"]
    agent_port = free_port() if dashboard_port else None
    if dashboard_port:
        command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard_port}",
                    f"--dashboard-agent-listen-port={agent_port}"]
    else:
        command.append("--include-dashboard=false")
    if num_cpus is not None:  # 0: a head that runs no tasks
        command.append(f"--num-cpus={num_cpus}")
    log_path = cluster_dir / "head.log"
    with open(log_path, "w") as log:
        # Its own session: stop_head signals the whole group and nothing else.
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    dashboard = f"http://127.0.0.1:{dashboard_port}" if dashboard_port else None
    (cluster_dir / "cluster.json").write_text(json.dumps(
        {"address": address, "pid": head.pid, "dashboard": dashboard}))
    deadline = time.time() + timeout
    while "Ray runtime started" not in log_path.read_text():
        if head.poll() is not None or time.time() > deadline:
            stop_head(cluster_dir)
            raise RuntimeError(f"Ray head did not start; see {log_path}:\n"
                               + log_path.read_text()[-2000:])
        time.sleep(0.5)
    if dashboard:  # jobs are accepted once the job server and the head's agent answer
        _wait_for_http(dashboard + "/api/version", deadline, log_path)
        _wait_for_http(f"http://127.0.0.1:{agent_port}/api/local_raylet_healthz", deadline,
                       log_path)
    return address


def start_node(cluster_dir: str | Path, num_cpus: int = 1, timeout: float = 90,
               hide: str | Path | None = None, num_gpus: int = 0) -> subprocess.Popen:
    """A second node joining the head started from `cluster_dir`, on this machine
    (loopback, the head's token), as a node of a real cluster joins: for tests of
    work spread over nodes and of a node lost mid-run. `hide`: a folder this node
    must not see (it gets an empty tmpfs over it in a mount namespace of its own, as
    a worker pod does not see the head's volume; needs root). `num_gpus`: GPUs the node
    declares to Ray (none need exist: for tests of how GPU pools are planned). Stopped
    with the head, or by signalling its process group."""
    cluster_dir = Path(cluster_dir).resolve()
    info = json.loads((cluster_dir / "cluster.json").read_text())
    env = client_env(cluster_dir)
    env.pop("RAY_ADDRESS", None)
    nodes = len(list(cluster_dir.glob("node-*.log")))
    log_path = cluster_dir / f"node-{nodes + 1}.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--block",
               f"--address={info['address']}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--disable-usage-stats"]
    if hide:
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs tmpfs "$1" && shift && exec "$@"', "sh", str(hide), *command]
    with open(log_path, "w") as log:
        node = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while "Ray runtime started" not in log_path.read_text():
        if node.poll() is not None or time.time() > deadline:
            _signal_group(node.pid, signal.SIGKILL)
            raise RuntimeError(f"Ray node did not start; see {log_path}:\n"
                               + log_path.read_text()[-2000:])
        time.sleep(0.5)
    info.setdefault("nodes", []).append(node.pid)
    (cluster_dir / "cluster.json").write_text(json.dumps(info))
    return node


def running(cluster_dir: str | Path) -> dict | None:
    """cluster.json of a head started from this folder that is still alive."""
    info_path = Path(cluster_dir).resolve() / "cluster.json"
    if not info_path.exists():
        return None
    info = json.loads(info_path.read_text())
    return info if psutil.pid_exists(info["pid"]) else None


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_http(url: str, deadline: float, log_path: Path) -> None:
    """The job server answers a little after the head is up; any HTTP answer will do."""
    import urllib.error
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"Ray's job server at {url} did not answer; see {log_path}")
            time.sleep(0.5)


def ray_temp_dir(cluster_dir: Path) -> str:
    """Ray's own files, under a short path: its socket paths must fit in 107 bytes."""
    return f"/tmp/thresher-{hashlib.sha1(str(cluster_dir).encode()).hexdigest()[:10]}"


def stop_head(cluster_dir: str | Path, grace: float = 40) -> None:
    cluster_dir = Path(cluster_dir).resolve()
    info_path = cluster_dir / "cluster.json"
    if not info_path.exists():
        return
    info = json.loads(info_path.read_text())
    groups = [*info.get("nodes", []), info["pid"]]  # the other nodes first, then the head
    for pid in groups:
        _signal_group(pid, signal.SIGTERM)  # ray start --block drains, then stops its processes
    deadline = time.time() + grace
    while _ours(cluster_dir) and time.time() < deadline:
        time.sleep(0.5)
    for pid in groups:
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
