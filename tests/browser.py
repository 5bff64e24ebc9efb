"""A headless Chromium driven over the DevTools protocol on a pipe: no driver package, no network port.

Used by the tests that open pages pevl writes. :func:`find_chromium` locates Debian's ``chromium`` and installs
it with apt-get where that is possible (root, apt-get present, ``PEVL_NO_BROWSER_INSTALL`` unset).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> tuple[str | None, str]:
    """The browser's path, installing Debian's package if possible; else ``None`` and the reason."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found, ""
    if os.environ.get("PEVL_NO_BROWSER_INSTALL"):
        return None, "chromium is not installed (and PEVL_NO_BROWSER_INSTALL is set)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "chromium is not installed and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    for command in (install, ["apt-get", "update", "-q"], install):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(command)}` timed out"
        if command is install and done.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium"), ""
    return None, f"installing chromium with apt-get failed: {done.stderr.strip().splitlines()[-1:]}"


class Browser:
    """One headless browser; :meth:`open` gives a page. Use as a context manager."""

    def __init__(self, executable: str, profile: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "chromium.log"
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "--hide-scrollbars",
                 "--allow-file-access-from-files"]  # fmt: skip
        # fd 3 is what the browser reads commands from, fd 4 where it writes: our stdin and stdout pipes.
        shell = 'exec 3<&0 4>&1 0</dev/null 1>&2; exec "$@"'
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["sh", "-c", shell, "sh", executable, *flags], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log)  # fmt: skip
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events: list[dict[str, Any]] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self._messages.put(json.loads(raw))

    def send(self, method: str, params: dict[str, Any] | None = None, page: str | None = None) -> dict[str, Any]:
        """Send one command and wait (with the timeout) for its result; events seen meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = page
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        """Wait (with the timeout) for the next event ``method``."""
        deadline = time.monotonic() + self.timeout
        for i, event in enumerate(self._events):
            if event.get("method") == method:
                return self._events.pop(i)
        while True:
            event = self._messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if event.get("method") == method:
                return event
            self._events.append(event)

    def events(self, *methods: str) -> list[dict[str, Any]]:
        """Every event of these kinds received so far (after draining what has arrived)."""
        while not self._messages.empty():
            self._events.append(self._messages.get_nowait())
        return [e for e in self._events if e.get("method") in methods]

    def open(self, url: str, width: int, height: int, mobile: bool) -> str:
        """A new page of that viewport with console, log and page events on, loaded from ``url``; its page id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", page=page)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, page)  # fmt: skip
        self.send("Page.navigate", {"url": url}, page)
        self.wait_event("Page.loadEventFired")
        return page

    def evaluate(self, page: str, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, page)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, page: str, path: Path, quality: int = 40) -> Path:
        """A JPEG of the viewport (small on purpose: a test artefact)."""
        data = self.send("Page.captureScreenshot", {"format": "jpeg", "quality": quality}, page)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser (and wait for it, briefly)."""
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
