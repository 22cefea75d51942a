"""A real browser for the page tests: Debian's headless Chromium, driven over the DevTools protocol.

Small on purpose: start Chromium with its own throw-away profile, open its one tab, and send the
handful of DevTools commands the tests need (navigate, evaluate, cookies, screenshot, window size).
No WebDriver and no browser download: the Chromium a kiosk runs is the one tested.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def chromium_or_skip() -> str:
    """The browser's path; outside CI a machine without it skips, in CI its absence fails."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    pytest.skip("chromium not installed")


class Browser:
    """One headless Chromium tab. ``with Browser() as b: b.goto(url); b.eval("document.title")``."""

    def __init__(self, width: int = 800, height: int = 480) -> None:
        self.width, self.height = width, height
        self._profile = Path(tempfile.mkdtemp(prefix="maskgate-chromium-"))
        self._proc: subprocess.Popen | None = None
        self._ws = None
        self._id = 0

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        args = [chromium_or_skip(), "--headless=new", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}",
                "about:blank"]  # fmt: skip
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # CI runs as root, where Chromium's sandbox refuses to start
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self._ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=10)
        self.send("Page.enable")
        self.send("Network.enable")
        self.resize(self.width, self.height)
        return self

    def __exit__(self, *exc) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)

    def send(self, method: str, **params: Any) -> dict:
        """One DevTools command and its result; events that arrive meanwhile are dropped."""
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def resize(self, width: int, height: int) -> None:
        """The viewport a screen of this size gives a full-screen page."""
        self.width, self.height = width, height
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)  # fmt: skip

    def goto(self, url: str, timeout: float = 15.0) -> None:
        """Navigate and wait until the document is parsed (a live picture never finishes loading)."""
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        time.sleep(0.2)
        while self.eval("document.readyState") == "loading":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {timeout:g} s")
            time.sleep(0.1)

    def eval(self, expression: str) -> Any:
        """A JavaScript expression's value in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll an expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression[:80]} stayed false for {timeout:g} s")
            time.sleep(0.1)

    def cookies(self) -> list[dict]:
        return self.send("Network.getCookies")["cookies"]

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
