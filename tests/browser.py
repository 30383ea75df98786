"""Headless Chromium driven over its DevTools protocol, for tests that must see a page
as a browser renders it.

The protocol runs over a pipe (`--remote-debugging-pipe`: Chromium reads commands on
its fd 3 and writes replies on its fd 4, each a JSON message ended by a NUL byte), so
no port, no websocket client and nothing but the standard library is needed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

# Debian's package installs `chromium`; other distributions name it otherwise.
NAMES = ("chromium", "chromium-browser")


class BrowserUnavailable(RuntimeError):
    """No Chromium here, or it would not start: tests that need it skip."""


def find_chromium() -> str | None:
    """THRESHER_CHROMIUM if set, else the first Chromium on the PATH."""
    return os.environ.get("THRESHER_CHROMIUM") or next(
        (path for path in map(shutil.which, NAMES) if path), None)


class Chromium:
    """One headless Chromium with one tab; use as a context manager."""

    def __init__(self, profile: Path, width: int = 1200, height: int = 900,
                 timeout_s: float = 60):
        binary = find_chromium()
        if not binary:
            raise BrowserUnavailable("no Chromium on this machine (Debian: apt-get install "
                                     "chromium; `make test` tries that)")
        self.timeout_s = timeout_s
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []
        self._process = self._start(binary, profile)
        try:
            self._session = self._open_tab(width, height)
        except BrowserUnavailable:
            self.close()
            raise

    def _start(self, binary: str, profile: Path) -> subprocess.Popen:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        flags = ["--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                 # The sandbox needs user namespaces, which containers and root lack; the
                 # page is a local file this test wrote.
                 "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
                 "about:blank"]
        # bash moves the pipe ends to fds 3 and 4 in the child: Popen cannot renumber
        # fds without a preexec_fn, which is unsafe in a process with threads (Ray's).
        script = f'exec "$0" "$@" 3<&{commands_read} 4>&{replies_write}'
        try:
            with open(profile.parent / "chromium.log", "wb") as log:
                return subprocess.Popen(["bash", "-c", script, binary, *flags],
                                        pass_fds=(commands_read, replies_write),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=log)
        except OSError as err:
            os.close(self._commands)
            os.close(self._replies)
            raise BrowserUnavailable(f"could not start {binary}: {err}") from None
        finally:  # the child holds its own copies
            os.close(commands_read)
            os.close(replies_write)

    def _open_tab(self, width: int, height: int) -> str:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", session=session, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)
        return session

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (BrowserUnavailable, OSError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._commands, self._replies):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the protocol ------------------------------------------------------------

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its reply; events that come first are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._commands, json.dumps(message).encode() + b"\0")
        except OSError as err:
            raise BrowserUnavailable(f"Chromium went away: {err}") from None
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._replies], [], [], max(left, 0))
            if not ready:
                raise BrowserUnavailable(f"Chromium did not answer in {self.timeout_s} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise BrowserUnavailable("Chromium exited (see chromium.log next to its "
                                         "profile)")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    # --- what the tests use ------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate and wait until the page and everything it loads has loaded."""
        self.events.clear()
        self.send("Page.navigate", session=self._session, url=url)
        deadline = time.monotonic() + self.timeout_s
        while not self.evaluate("document.readyState === 'complete'"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {self.timeout_s} s")
            time.sleep(0.1)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.send("Runtime.evaluate", session=self._session, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page, not only the window."""
        width, height = self.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        shot = self.send("Page.captureScreenshot", session=self._session, format="png",
                         captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
