"""The real UI in a real browser (Debian's chromium driven by Playwright)."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
ARTIFACTS = Path(os.environ.get("EASYPHOTO_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture
def app_url(data_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "app.py", "--no-browser", "--port", str(port), "--data-dir", str(data_dir)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_page_shows_tabs_and_rejects_a_text_file(app_url, astro_photos, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app_url)
        for tab in ("Photos & Training", "RL", "Generate", "Gallery", "Settings"):
            expect(page.get_by_role("tab", name=tab)).to_be_visible(timeout=20000)
        expect(page.locator("#model-banner")).to_contain_text("Demo model")
        page.locator("#user-id textarea, #user-id input").first.fill("astro")
        expect(page.locator("#user-hint")).to_contain_text("valid user id")
        page.locator("#photo-upload input[type=file]").set_input_files([str(p) for p in astro_photos] + [str(notes)])
        page.wait_for_timeout(1500)
        page.locator("#prepare-run").click()
        expect(page.locator("#rejected")).to_contain_text("not an image", timeout=60000)
        expect(page.locator("#faces-summary")).to_contain_text("accepted", timeout=10000)
        page.screenshot(path=str(ARTIFACTS / "tab-photos.png"), full_page=True)
        for tab in ("RL", "Generate", "Gallery", "Settings"):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / f"tab-{tab.lower()}.png"), full_page=True)
        browser.close()
