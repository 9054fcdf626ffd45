"""End to end in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): ``dynamicrafter ui``
runs as a subprocess on a free local port with a random-weight tiny checkpoint.

Run with ``pytest -m browser``. (The README's picture, with the shipped model: ``tools/ui_screenshot.py``.)
"""

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path

import pytest

from dynamicrafter.config import config_for_tests
from dynamicrafter.media import read_video_frames
from dynamicrafter.testing import tiny_checkpoint

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# without the background-networking switches Chromium's own connections are refused on a closed network
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
T = config_for_tests().unet.temporal_length  # 4
EXAMPLES = Path(str(resources.files("dynamicrafter") / "assets" / "examples"))  # images shipped with the package
MAX_PIXELS = 200_000  # the server's --max-image-pixels: campfire.png (512x320) passes, guitar.jpg (512x512) not
STARTUP_SECONDS = 120
JOB_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``dynamicrafter ui`` in a subprocess; yields its URL and output folder."""
    folder = tmp_path_factory.mktemp("ui-browser")
    checkpoint = tiny_checkpoint(folder)
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dynamicrafter.cli", "ui", "-c", str(checkpoint), "--port",
                             str(port), "--output-dir", str(folder / "out"), "--device", "cpu",
                             "--max-image-pixels", str(MAX_PIXELS)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "0"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}): {(folder / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not answer within {STARTUP_SECONDS} s")
        time.sleep(0.5)
    yield url, folder
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    # these tests run only when selected (-m browser): a missing prerequisite is a failure, not a skip
    try:
        import gradio  # noqa: F401
        from playwright import sync_api
    except ImportError as e:
        pytest.fail(f"browser tests need the ui and browser extras ({e}): pip install -e '.[browser]'")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        yield context
        context.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    page.goto(server[0])
    page.wait_for_selector("#animate-generate")
    yield page
    page.close()


def set_number(page, selector: str, value: int) -> None:
    """Type into a slider's number box (the value is taken when the box loses focus)."""
    box = page.locator(f"{selector} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def fetch_video(page, selector: str, folder: Path) -> Path:
    """Download the video shown in ``selector`` the way the browser got it."""
    video = page.locator(f"{selector} video")
    video.wait_for(state="attached", timeout=JOB_SECONDS * 1000)
    src = video.get_attribute("src")
    assert src, "the video element has no source"
    path = folder / "downloaded.mp4"
    with urllib.request.urlopen(urllib.parse.urljoin(page.url, src), timeout=30) as response:
        path.write_bytes(response.read())
    return path


def test_animate_an_uploaded_image(page, tmp_path):
    frames = T + 2  # more than the model's temporal length: sliding windows
    page.locator("#animate-image input[type=file]").set_input_files(str(EXAMPLES / "campfire.png"))
    page.locator("#animate-prompt textarea").fill("a bonfire is lit in the middle of a field")
    set_number(page, "#animate-steps", 2)
    set_number(page, "#animate-frames", frames)
    page.locator("#animate-generate").click()
    video = fetch_video(page, "#animate-video", tmp_path)
    assert read_video_frames(video).shape == (frames, 64, 64, 3)
    summary = page.locator("#animate-summary")
    summary.get_by_text(f"{frames} frames, 64x64").wait_for()
    assert "seed 123" in summary.inner_text()
    assert page.locator("#animate-seed-used textarea").input_value() == "123"
    page.wait_for_timeout(1000)  # let the first frame paint
    shot = tmp_path / "ui-screenshot.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000


def test_a_non_image_upload_shows_the_error_in_the_page(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not an image")
    page.locator("#animate-image input[type=file]").set_input_files(str(fake))
    page.get_by_text("image 'holiday.png' is not an image; upload a PNG, JPEG, WebP or BMP file").wait_for()
    page.locator("#animate-prompt textarea").fill("anything")
    page.locator("#animate-generate").click()  # generating with it is refused with the same message
    page.get_by_text("is not an image").nth(1).wait_for()
    assert "Traceback" not in page.locator("body").inner_text()
    assert page.locator("#animate-video video").count() == 0


def test_an_image_over_the_pixel_limit_is_refused_in_the_page(page):
    page.locator("#animate-image input[type=file]").set_input_files(str(EXAMPLES / "guitar.jpg"))
    page.get_by_text(f"image 'guitar.jpg' is 512x512 = 262,144 pixels, over the limit of {MAX_PIXELS:,}").wait_for()


def test_loop_with_an_empty_prompt_warns_and_keeps_every_ring_frame(page, tmp_path):
    page.get_by_role("tab", name="Interpolate / Loop").click()
    page.locator("#interpolate-first input[type=file]").set_input_files(str(EXAMPLES / "loop_beach.png"))
    set_number(page, "#interpolate-steps", 2)
    page.locator("#loop-generate").click()
    page.get_by_text("the prompt is empty").wait_for()
    video = fetch_video(page, "#interpolate-video", tmp_path)
    assert read_video_frames(video).shape[0] == T  # the tiny model animates images: a ring loop keeps all frames
