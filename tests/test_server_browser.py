"""The web page of `cli.py serve` in a real browser (Debian's Chromium via Playwright, headless).

Animate a portrait with a two-frame clip and download the result, move an editing slider and see the picture
change, and upload a text file as the portrait and read the error; the page must fetch nothing from other hosts.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from runtime.media import VideoReader
from tests.server_process import PORTRAIT, Server, start_server, tiny_clip

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
                shutil.which("chromium"))
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
WAIT_S = 300.0


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(models_dir, tmp_path_factory.mktemp("serve-ui") / "work", "--workers", "1")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def page(server: Server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1600})
            tab.set_default_timeout(60_000)
            tab.elsewhere = []  # every request to another host (fonts, CDNs, telemetry) lands here
            tab.on("request", lambda r: tab.elsewhere.append(r.url)
                   if not r.url.startswith((server.url, "data:", "blob:")) else None)
            tab.goto(server.url + "/")
            tab.wait_for_selector("#animate")
            yield tab
        finally:
            browser.close()


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Full-page screenshot under the test's tmp folder (and $LP_TEST_ARTIFACTS when set, for CI to keep)."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("LP_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / name)
    print(f"\nscreenshot: {shot}")
    return shot


def poll(fn, timeout: float = WAIT_S, every: float = 0.5):
    """Call fn until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def test_animate_in_the_browser(page, server: Server, tmp_path: Path) -> None:
    clip = tiny_clip(tmp_path / "clip.mp4")
    page.set_input_files("#source-image input[type=file]", str(PORTRAIT))
    page.set_input_files("#driving-video input[type=file]", str(clip))
    page.wait_for_selector("#source-image img")
    page.wait_for_selector("#driving-video video")
    page.click("#animate")
    progress: list[str] = []

    def playable():
        text = page.evaluate("() => [...document.querySelectorAll('.progress-text, .progress-level-inner')]"
                             ".map(e => e.innerText).join(' ')")
        if text:
            progress.append(text)
        # videoWidth > 0 and no error: Chromium parsed the H.264 track, so it can play it
        return page.evaluate("""() => { const v = document.querySelector('#result-video video');
            return v && v.src && !v.error && v.readyState >= 1 && v.videoWidth > 0 && v.duration > 0 ? v.src : null
        }""")

    src = poll(playable)
    assert any("frames" in t for t in progress), progress  # the bar showed the job's frame count
    video = page.request.get(src)
    assert video.ok
    (tmp_path / "result.mp4").write_bytes(video.body())
    with VideoReader(tmp_path / "result.mp4") as reader:
        assert len(list(reader)) == 2 and round(reader.fps) == 25
    concat = page.evaluate("() => document.querySelector('#concat-video video')?.src")
    assert concat and page.request.get(concat).ok
    save_screenshot(page, tmp_path, "server_ui_animation.png")
    assert page.elsewhere == []


def test_editing_slider_changes_the_picture(page, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Portrait editing").click()
    page.set_input_files("#edit-source input[type=file]", str(PORTRAIT))

    def result_src():
        return page.evaluate("() => document.querySelector('#edit-result img')?.src || null")

    first = poll(result_src)
    eye = page.input_value("#edit-eye-ratio input[type=number]")
    assert float(eye) > 0  # Reset values: the photo's measured eye-open ratio
    track = page.locator("#edit-smile input[type=range]").bounding_box()
    page.mouse.move(track["x"] + track["width"] * 0.2, track["y"] + track["height"] / 2)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(track["x"] + track["width"] * (0.2 + 0.14 * step), track["y"] + track["height"] / 2)
    page.mouse.up()
    last_value = float(page.input_value("#edit-smile input[type=number]"))
    assert last_value > 0.5
    changed = poll(lambda: (src := result_src()) and src != first and src)
    assert changed != first
    save_screenshot(page, tmp_path, "server_ui_editing.png")


def test_text_file_as_portrait_shows_an_error(page, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Animation").click()
    page.click("#clear")
    text = tmp_path / "portrait.png"  # the name claims PNG, the bytes are text
    text.write_text("certainly not a picture\n" * 10)
    page.set_input_files("#source-image input[type=file]", str(text))
    page.set_input_files("#driving-video input[type=file]", str(tiny_clip(tmp_path / "clip.mp4")))
    page.click("#animate")
    message = poll(lambda: page.evaluate("() => [...document.querySelectorAll('.toast-body, .error')]"
                                         ".map(e => e.innerText).join(' ') || null"), timeout=60)
    assert "not an image" in message or "expected an image" in message, message
    save_screenshot(page, tmp_path, "server_ui_error.png")
    assert page.elsewhere == []  # nothing fetched from other hosts during the whole module
