"""Screenshots of the Dagster UI of a data directory, taken by headless Chromium (``make screenshots``).

Starts the local instance's webserver and daemon (:class:`eap_assets.local.LocalDagster`, the same
``dagster dev`` that ``make run`` uses; a running ``make ui`` on the instance is reused), then Debian's
Chromium (``apt-get install chromium``), driven over its DevTools protocol, renders each page to a
PNG: the asset lineage, one partitioned asset's partitions, a training table's metadata and the
automation page (its sensors shown stopped: the UI is started as ``make run`` starts it, automation
off). The pages show what the instance holds: point ``--data-dir`` / ``--dagster-home`` at a
materialised run.

    .venv/bin/python deployment/ui_screenshots.py [--data-dir data] [--dagster-home .dagster_home] [--out docs/img]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

#: (file name, UI path, what it shows) of each screenshot.
PAGES: tuple[tuple[str, str, str], ...] = (
    ("asset_graph.png", "/assets/paper_comparison?view=lineage&lineageScope=upstream&lineageDepth=12",
     "the asset lineage up to paper_comparison"),
    ("eap_dataset_partitions.png", "/assets/eap_dataset?view=partitions&partition=L5_TTPC1_cADpyr232_1%7C3drot",
     "eap_dataset: 13 cells x 4 rotations, one partition's materialisation and metadata"),
    ("training_table.png", "/assets/training_table", "training_table: its latest materialisation and metadata"),
    ("automation.png", "/automation", "the automation condition sensor and the new_cell_models sensor"),
)

#: Flags for Chromium on these machines: headless as root, and none of its background connections
#: (refused by the closed network, which slows every start).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1")


def chromium() -> str:
    """Path of the Chromium binary (SystemExit with the install command when there is none)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: install Debian's (`apt-get install chromium`) and rerun")


class Browser:
    """Headless Chromium driven over the DevTools protocol (``websockets``): navigate, click, capture."""

    def __init__(self, binary: str, width: int, height: int):
        from eap_assets.local import free_port

        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self.port = free_port()
        self.process = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile.name}",
                                         f"--remote-debugging-port={self.port}", f"--window-size={width},{height}",
                                         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.calls, self.ws, self.connection = 0, None, contextlib.ExitStack()
        deadline = time.monotonic() + 60
        while self.ws is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as answer:
                    pages = [t for t in json.loads(answer.read()) if t["type"] == "page"]
                if pages:
                    from websockets.sync.client import connect

                    self.ws = self.connection.enter_context(connect(pages[0]["webSocketDebuggerUrl"],
                                                                    max_size=256 * 2**20))
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise RuntimeError("Chromium's DevTools endpoint did not come up") from None
                time.sleep(0.5)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def shoot(self, url: str, out: Path, settle_s: float) -> Path:
        """Open ``url``, let the UI load for ``settle_s``, dismiss the community pop-up, write the PNG ``out``
        (whole or not at all)."""
        self.call("Page.navigate", url=url)
        time.sleep(settle_s)
        if self.evaluate(SKIP_POPUP):
            time.sleep(1.5)
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        if len(png) < 10_000:
            raise RuntimeError(f"{url}: the screenshot is blank ({len(png)} bytes)")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(png)
        os.replace(tmp, out)
        return out

    def close(self) -> None:
        self.connection.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.profile.cleanup()


#: Clicks "Skip" on Dagster's "Join the Dagster community" pop-up, if shown; true when it was.
SKIP_POPUP = """(() => { const b = [...document.querySelectorAll('button')].find(e => e.textContent.trim() === 'Skip');
  if (b) { b.click(); return true; } return false; })()"""


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="the data directory the UI shows (EAP_ASSETS_DATA_DIR)")
    parser.add_argument("--dagster-home", default=".dagster_home", help="the Dagster instance (DAGSTER_HOME)")
    parser.add_argument("--out", default="docs/img", help="folder of the PNGs")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--settle-s", type=float, default=8.0, help="seconds each page gets to load and render")
    args = parser.parse_args(argv)
    binary = chromium()
    os.environ["EAP_ASSETS_DATA_DIR"] = str(Path(args.data_dir).resolve())
    os.environ["DAGSTER_HOME"] = str(Path(args.dagster_home).resolve())
    from eap_assets.local import LocalDagster, ensure_dagster_home

    home = ensure_dagster_home()
    written = []
    with LocalDagster(home) as dagster:
        base = f"http://{dagster.host}:{dagster.port}"
        browser = Browser(binary, args.width, args.height)
        try:
            for name, path, what in PAGES:
                written.append(browser.shoot(base + path, Path(args.out) / name, args.settle_s))
                print(f"{written[-1]}: {what}", flush=True)
        finally:
            browser.close()
    return written


if __name__ == "__main__":
    main()
