"""The explorer page in a real browser: headless Chromium (Debian's ``chromium``), driven by Playwright
with the system browser (``.ci/run`` installs both; no ``playwright install`` download).

The page is opened from a file URL with the network off and every non-file request refused: a page
that needed a CDN would break here.
"""

import os
import shutil
import struct

import pytest

from inceptorch.cli import main

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs Debian's "
                                                          "chromium package; or set CHROMIUM_PATH)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def _offline_page(browser, errors, refused):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})

    def only_files(route):
        if route.request.url.startswith(("file://", "data:", "about:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_files)
    context.set_offline(True)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return context, page


def test_clicking_a_block_shows_its_picture_and_branches(browser, tmp_path):
    html = tmp_path / "googlenet_paper.html"
    assert main(["explore", "googlenet_paper", "--out", str(html)]) == 0
    errors, refused = [], []
    context, page = _offline_page(browser, errors, refused)
    page.goto(html.resolve().as_uri())
    assert page.title() == "inceptorch: googlenet_paper"
    expect = sync_api.expect
    branches = page.locator('tr.branch[data-parent="inception3a"]')
    expect(branches.first).to_be_hidden()
    expect(page.locator("#block-view")).to_be_hidden()

    page.click('#model-picture g[id="block-inception3a"]')  # the block's box in the whole-model picture

    expect(page.locator("#block-view")).to_be_visible()
    expect(page.locator("#block-title")).to_have_text("inception3a")
    picture = page.locator(".block-picture:visible")
    expect(picture).to_have_count(1)
    expect(picture.locator("svg")).to_be_visible()
    expect(picture).to_contain_text("5x5 conv, 32")
    expect(picture).to_contain_text("12,443,648 MACs")
    expect(branches).to_have_count(4)
    for i, (branch, layers) in enumerate([("branch1", "1x1 conv 192->64"), ("branch2", "3x3 conv 96->128"),
                                          ("branch3", "5x5 conv 16->32"), ("branch4", "3x3 max pool")]):
        expect(branches.nth(i)).to_be_visible()
        expect(branches.nth(i)).to_contain_text(branch)
        expect(branches.nth(i)).to_contain_text(layers)
    expect(page.locator('tr.branch[data-parent="inception4a"]').first).to_be_hidden()

    page.click('tr.block-row[data-block="inception4e"]')  # a row of the table opens its block too
    expect(page.locator("#block-title")).to_have_text("inception4e")
    expect(page.locator(".block-picture:visible")).to_contain_text("5x5 conv, 128")
    expect(page.locator('tr.branch[data-parent="inception4e"]').first).to_be_visible()

    page.click('tr.block-row[data-block="inception4e"]')  # a second click on the row closes it
    expect(page.locator('tr.branch[data-parent="inception4e"]').first).to_be_hidden()
    page.click('#model-picture g[id="block-inception3a"]')  # the picture only ever opens
    expect(branches.first).to_be_visible()
    expect(page.locator("#block-title")).to_have_text("inception3a")
    page.evaluate("() => window.scrollTo(0, 0)")
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1400, 1000)
    assert len(data) > 50_000  # pictures and table drawn, not a blank page
    if os.environ.get("EXPLORER_SCREENSHOT"):
        shutil.copy(shot, os.environ["EXPLORER_SCREENSHOT"])
    assert errors == [] and refused == []  # the page ran clean and asked for nothing outside its file
    assert page.evaluate("() => fetch('http://example.com/x').then(() => true, () => false)") is False  # offline
    context.close()
