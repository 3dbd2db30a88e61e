"""Drive Debian's headless Chromium through the DevTools protocol over a pipe (no extra package).

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3 and write
replies and events to descriptor 4, each message a JSON object ended by a NUL byte. Used by the report
browser test and by ``docs/screenshots.py``::

    with Chromium() as b:
        b.open(index.as_uri())
        n = b.eval("document.querySelectorAll('img.thumb').length")
        png = b.screenshot()
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with one page; ``timeout`` bounds every wait (seconds)."""

    def __init__(self, binary: str | None = None, *, width: int = 1280, height: int = 900, timeout: float = 60.0,
                 profile: str | Path | None = None) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("chromium not found")
        self.width, self.height, self.timeout = width, height, timeout
        self._tmp = None if profile is not None else tempfile.TemporaryDirectory(prefix="vl-chromium-")
        self.profile = Path(profile) if profile is not None else Path(self._tmp.name)
        self._id = 0
        self._buf = b""
        self.events: list[dict] = []
        self.session: str | None = None

    # --- process and pipe -------------------------------------------------------------------------
    def __enter__(self) -> "Chromium":
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes to us
            r, w = os.dup(to_child_r), os.dup(from_child_w)  # (the pipe may already sit on fd 3 or 4)
            os.dup2(r, 3)
            os.dup2(w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=fds, close_fds=False)  # our other fds are non-inheritable (PEP 446)
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next((t for t in targets if t["type"] == "page"), None)
            tid = page["targetId"] if page else self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=tid, flatten=True)["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close", {}, session=False)
                    self.proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired, BrowserError):
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.proc.stderr:
                self.proc.stderr.close()
            if self._tmp is not None:
                self._tmp.cleanup()

    def _send(self, method: str, params: dict, *, session: bool = True) -> int:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session and self.session:
            msg["sessionId"] = self.session
        try:
            os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise BrowserError(f"chromium is gone ({exc})") from None
        return self._id

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError("chromium closed the pipe: " + self._stderr_tail())
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=5)
            return (self.proc.stderr.read() or b"").decode(errors="replace")[-2000:]
        except Exception:  # noqa: BLE001 - diagnostics only
            return ""

    def call(self, method: str, **params) -> dict:
        """Send a command and return its result (events that arrive meanwhile go to ``self.events``)."""
        mid = self._send(method, params, session=not method.startswith(("Target.", "Browser.")))
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, pred=lambda params: True) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for k, ev in enumerate(self.events):
                if ev["method"] == method and pred(ev.get("params", {})):
                    del self.events[: k + 1]
                    return ev["params"]
            msg = self._read(deadline)
            if "method" in msg:
                self.events.append(msg)

    # --- page helpers -----------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def eval(self, expression: str):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise BrowserError(f"page script failed: {r['exceptionDetails'].get('exception', {}).get('description') or r['exceptionDetails']}")
        return r["result"].get("value")

    def url(self) -> str:
        return self.eval("location.href")

    def _centre(self, selector: str) -> list[float]:
        """The viewport centre of the first element matching ``selector``, scrolled into view."""
        box = self.eval(f"(function(){{var e=document.querySelector({json.dumps(selector)});"
                        "if(!e) return null; e.scrollIntoView({block:'center'}); var r=e.getBoundingClientRect();"
                        "return [r.left + r.width/2, r.top + r.height/2];})()")
        if box is None:
            raise BrowserError(f"no element matches {selector}")
        return box

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the first element matching ``selector``."""
        box = self._centre(selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def click_and_wait(self, selector: str) -> None:
        """Click (as :meth:`click`) something that opens another page, and wait for that page's load event."""
        self.events.clear()
        self.click(selector)
        self.wait_event("Page.loadEventFired")

    def hover(self, selector: str) -> None:
        box = self._centre(selector)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input and type ``text`` as key events (what a person does)."""
        self.eval(f"(function(){{var e=document.querySelector({json.dumps(selector)}); e.focus(); e.select();}})()")
        self.call("Input.insertText", text=text)

    def allow_downloads(self, folder: str | Path) -> None:
        self.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(folder), eventsEnabled=True)

    def wait_download(self) -> dict:
        """The ``Browser.downloadProgress`` event of a finished download (raises on cancel)."""
        params = self.wait_event("Browser.downloadProgress", lambda p: p.get("state") in ("completed", "canceled"))
        if params["state"] != "completed":
            raise BrowserError(f"download {params.get('guid')} was cancelled")
        return params

    def screenshot(self, *, full_page: bool = False, selector: str | None = None, margin: int = 8) -> bytes:
        """A PNG of the viewport, of the whole page, or of the element ``selector`` (plus ``margin`` pixels)."""
        params: dict = {"format": "png"}
        if selector is not None:
            r = self.eval(f"(function(){{var r=document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                          "return [r.left + scrollX, r.top + scrollY, r.width, r.height];})()")
            params.update(captureBeyondViewport=True,
                          clip={"x": max(0, r[0] - margin), "y": max(0, r[1] - margin), "width": r[2] + 2 * margin,
                                "height": r[3] + 2 * margin, "scale": 1})
        elif full_page:
            m = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": m["width"], "height": m["height"], "scale": 1})
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
