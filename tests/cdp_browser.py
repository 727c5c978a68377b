"""A headless Chromium driven over the Chrome DevTools Protocol with aiohttp (no extra dependency):
launch with a fresh profile, navigate, evaluate JavaScript, wait for conditions, take screenshots.

`find_chromium()` returns the browser's path or None; tests skip with a reason when it is missing
(scripts/setup.sh installs Debian's `chromium` where apt is available)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import time
from pathlib import Path

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,1000",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    for name in (os.environ.get("POUW_CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and (p := shutil.which(name)):
            return p
    return None


class Browser:
    """One page of a headless Chromium. Use `async with Browser.launch(path, profile_dir) as b`."""

    def __init__(
        self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse
    ):
        self.proc, self.session, self.ws = proc, session, ws
        self._ids = itertools.count(1)

    @classmethod
    async def launch(cls, path: str, profile: Path, timeout: float = 30.0) -> "Browser":
        profile.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            path,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.returncode is not None or time.monotonic() > end:
                proc.kill()
                raise RuntimeError(f"chromium did not start (exit {proc.returncode})")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        session = aiohttp.ClientSession()
        try:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json()
            page = next(t for t in targets if t["type"] == "page")
            ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        except BaseException:
            await session.close()
            proc.kill()
            raise
        b = cls(proc, session, ws)
        await b.send("Page.enable")
        await b.send("Runtime.enable")
        return b

    async def __aenter__(self) -> "Browser":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self.ws.close()
            await self.session.close()
        finally:
            if self.proc.returncode is None:
                self.proc.terminate()
                try:
                    await asyncio.wait_for(self.proc.wait(), 10)
                except asyncio.TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()

    async def send(self, method: str, **params) -> dict:
        mid = next(self._ids)
        await self.ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"devtools connection closed: {msg.type}")
            d = json.loads(msg.data)
            if d.get("id") == mid:
                if "error" in d:
                    raise RuntimeError(f"{method}: {d['error']}")
                return d.get("result", {})

    async def eval(self, expr: str):
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(
                f"page error in {expr!r}: {r['exceptionDetails'].get('text')} "
                f"{r['exceptionDetails'].get('exception', {}).get('description', '')}"
            )
        return r["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def wait(self, expr: str, timeout: float = 20.0, what: str | None = None):
        """Poll until the expression is truthy; returns its value."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                last = await self.eval(expr)
            except RuntimeError:
                last = None
            if last:
                return last
            await asyncio.sleep(0.1)
        body = await self.eval("document.body ? document.body.innerText.slice(0, 800) : ''")
        raise AssertionError(f"timed out waiting for {what or expr}; page says: {body!r}")

    async def screenshot(self, path: Path) -> Path:
        r = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path
