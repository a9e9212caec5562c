"""The whole flow in a real browser (Debian Chromium driven by Playwright), as a newcomer on a CPU box does it:
log in (a wrong password first), choose the Tiny demo preset, load the demo dataset, fix a caption, check, train
while reloading the page, publish to the local Hub server. Screenshots of each tab go to docs/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub_server import running_hub_server
from tests.test_app_api import launch

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PASSWORD = "demo-password-123"
TOKEN = "hf_BrowserPlantedToken0123456789abcdef"
TRAINING_S = 300_000  # ms: the tiny model trains in about 35 s on 2 CPUs; generous for a loaded machine

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install -y chromium)"),
]


@pytest.fixture
def page(tmp_path: Path, tiny_model: Path) -> Iterator:
    from playwright.sync_api import sync_playwright

    ui, url = launch(tmp_path / "data", tiny_model, UI_PASSWORD=PASSWORD)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(30_000)
            tab.goto(url)
            yield tab
            browser.close()
    finally:
        ui.registry.shutdown()
        ui.blocks.close()


def log_in(page, password: str) -> None:
    page.get_by_label("username").fill("newcomer")
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def shoot(page, name: str) -> None:
    """A full-page screenshot for the README, without toasts left over from earlier steps."""
    from playwright.sync_api import expect

    for close in page.locator("button.toast-close").all():
        if close.is_visible():
            close.click()
    expect(page.locator(".toast-item")).to_have_count(0)  # gone, not fading out
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.mark.training
def test_a_newcomer_trains_and_publishes_in_the_browser(page, tmp_path: Path):
    from playwright.sync_api import expect

    log_in(page, "not the password")
    expect(page.get_by_text("Incorrect Credentials")).to_be_visible()
    log_in(page, PASSWORD)
    expect(page.get_by_role("tab", name="Config")).to_be_visible()

    # Config: presets fill the fields; a malformed import is refused and changes nothing.
    base_model = page.get_by_label("Base model")
    page.get_by_label("SDXL").check()
    expect(base_model).to_have_value("stabilityai/stable-diffusion-xl-base-1.0")
    page.get_by_label("Tiny demo (CPU)").check()
    expect(base_model).to_have_value(re.compile(r"models/tiny-sdxl$"))
    page.get_by_label("…or paste it").fill('{"input": {"config": {"lora_rank": 8,')
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text(re.compile("not valid JSON")).first).to_be_visible()
    expect(base_model).to_have_value(re.compile(r"models/tiny-sdxl$"))
    expect(page.get_by_label("LoRA rank")).to_have_value("4")

    # Dataset: the demo, a caption fixed through the gallery, the check.
    open_tab(page, "Dataset")
    page.get_by_role("button", name="Load demo dataset").click()
    expect(page.get_by_text("Page 1 of 1 · 8 images")).to_be_visible()
    expect(page.get_by_label("Trigger word")).to_have_value("sks")
    page.locator("button.thumbnail-item").nth(2).click()
    expect(page.get_by_role("textbox", name="Selected file")).to_have_value("demo_002.png")
    caption = page.get_by_label("Caption", exact=True)
    expect(caption).to_have_value("a blue triangle on a plain background")
    caption.fill("a blue triangle, sks style")
    page.get_by_role("button", name="Save caption").click()
    expect(page.get_by_text("Saved the caption of demo_002.png.")).to_be_visible()
    page.get_by_role("button", name="Check dataset").click()
    expect(page.get_by_text("Check: ready to train")).to_be_visible()
    shoot(page, "dataset")

    open_tab(page, "Config")
    page.get_by_role("button", name="Export job JSON").click()
    expect(page.get_by_text("api.runpod.ai/v2/<ENDPOINT_ID>/run")).to_be_visible()
    shoot(page, "config")

    # Train: start, reload the page mid-run (the run lives on the server), watch the bar reach 100%.
    open_tab(page, "Train")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text(re.compile(r"step \d+/10")).first).to_be_visible(timeout=TRAINING_S)
    page.reload()
    open_tab(page, "Train")
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=TRAINING_S)
    expect(page.get_by_text(re.compile(r"Finished · .*step 10/10"))).to_be_visible()
    expect(page.get_by_text("step 10: sks a red circle").first).to_be_visible()  # a validation image
    shoot(page, "train")

    # Publish: a private repo on the local Hub server; the token is typed into a password field, never shown.
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        open_tab(page, "Publish")
        expect(page.get_by_text(re.compile("Chosen run: "))).to_be_visible()
        expect(page.get_by_label("Private repo")).to_be_checked()
        page.get_by_label("Repo id").fill("tester/demo-lora")
        token = page.get_by_label("Hugging Face token")
        expect(token).to_have_attribute("type", "password")
        token.fill(TOKEN)
        page.get_by_role("button", name="Push to Hub").click()
        expect(page.get_by_text(re.compile(r"Pushed to tester/demo-lora \(private\)"))).to_be_visible(timeout=60_000)
        shoot(page, "publish")
        assert TOKEN not in page.content() and TOKEN not in page.evaluate("document.body.innerText")
    repo = hub.repos["tester/demo-lora"]
    assert repo.private and "pytorch_lora_weights.safetensors" in repo.files
    assert "sks" in repo.files["README.md"].decode()
    assert all((SCREENSHOTS / f"{name}.png").stat().st_size > 10_000 for name in ("config", "dataset", "train",
                                                                                     "publish"))
