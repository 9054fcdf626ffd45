#!/usr/bin/env python
"""The README's picture of the web UI: ``dynamicrafter ui`` with the shipped small model, one animation of a shipped
example image, screenshotted in headless Chromium (Debian's /usr/bin/chromium driven by Playwright: ``pip install -e
".[browser]"``; nothing is downloaded).

    python tools/ui_screenshot.py docs/ui-screenshot.png
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import resources
from pathlib import Path

EXAMPLE = ("shapes_left.png", "a striped purple diamond shape sliding left in front of a softly shaded gray backdrop")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"dynamicrafter ui exited with code {server.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            time.sleep(1)
    sys.exit(f"dynamicrafter ui did not answer at {url} within {TIMEOUT_S} s")


def screenshot(url: str, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    image = Path(str(resources.files("dynamicrafter") / "assets" / "examples")) / EXAMPLE[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.locator("#animate-image input[type=file]").set_input_files(str(image))
        page.locator("#animate-prompt textarea").fill(EXAMPLE[1])
        page.locator("#animate-generate").click()
        page.locator("#animate-video video").wait_for(state="attached", timeout=TIMEOUT_S * 1000)
        page.wait_for_timeout(1500)  # let a frame paint
        page.screenshot(path=str(out), full_page=False)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen([sys.executable, "-m", "dynamicrafter.cli", "ui", "--port", str(port),
                                   "--output-dir", folder, "--device", "cpu"], stdout=subprocess.DEVNULL)
        try:
            wait_for(f"http://127.0.0.1:{port}/", server)
            screenshot(f"http://127.0.0.1:{port}/", args.out, args.chromium)
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
