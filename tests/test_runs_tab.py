"""The Runs tab in a real browser (Chromium, 1280 px wide): a demo run trained, the app restarted (a new app on the
same data folder: nothing of the run in memory), the run opened from the Runs tab, its files downloaded under its
name, pushed to the local Hub server from the Publish tab, tried in the Playground, then deleted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from gradio_client import Client

from app.history import COLUMNS
from app.runs_tab import QUEUE_COLUMNS
from core.outputs import LORA_FILE
from tests.support.hub_server import running_hub_server
from tests.test_app_api import launch, tiny_preset_form, wait_for
from tests.test_app_browser import ARGS, CHROMIUM, SCREENSHOTS

TOKEN = "hf_RunsTabPlantedToken0123456789abcdefX"
REPO = "tester/restarted-run-lora"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.training,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def train_demo(data_root: Path, tiny_model: Path) -> dict:
    """The Tiny demo preset on the demo dataset, at its fewest steps (2, a checkpoint at 2, no validation image),
    trained by a first app that is then closed."""
    ui, url = launch(data_root, tiny_model)
    try:
        client = Client(url, verbose=False, download_files=False)
        values = {**tiny_preset_form(client, trigger="sks"), "length": 2, "checkpoint_step_interval": 2,
                  "validation_prompt": ""}
        client.predict(**values, api_name="/start_training")
        return wait_for(lambda: (s := client.predict(api_name="/run_status"))["status"] != "running" and s,
                        timeout_s=300, what="the demo training")
    finally:
        ui.registry.shutdown()
        ui.blocks.close()


def header_lines(page) -> list[float]:
    """Each header cell of the tables on the open tab: its height in lines of its own text (1: not broken)."""
    return page.evaluate("""() => [...document.querySelectorAll('thead th')]
        .filter(th => th.offsetParent !== null && th.innerText.trim())
        .map(th => { const s = getComputedStyle(th.querySelector('span, div') || th);
                     const line = parseFloat(s.lineHeight) || parseFloat(s.fontSize) * 1.3;
                     const box = (th.querySelector('span') || th).getBoundingClientRect();
                     return box.height / line; })""")


def test_a_run_trained_before_a_restart_is_opened_downloaded_published_and_tried(tmp_path, tiny_model):
    from playwright.sync_api import expect, sync_playwright

    data_root = tmp_path / "data"
    trained = train_demo(data_root, tiny_model)
    assert trained["status"] == "succeeded", trained.get("error")
    run_id = trained["id"]
    lora = Path(trained["job_dir"]) / "output" / LORA_FILE
    trained_bytes = lora.read_bytes()

    ui, url = launch(data_root, tiny_model)  # the restart
    try:
        assert ui.registry.training() is None and ui.registry.last_trained() is None
        with sync_playwright() as playwright, running_hub_server(tmp_path, token=TOKEN) as hub:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.set_default_timeout(30_000)
            page.goto(url)

            page.get_by_role("tab", name="Runs").click()
            table = page.locator("#runs-table")
            expect(table.get_by_test_id("cell-0-0")).to_have_text(run_id)  # the only run
            expect(table.get_by_test_id("cell-0-2")).to_have_text("succeeded")
            table.get_by_test_id("cell-0-0").click()  # a row chooses its run
            details = page.get_by_text(re.compile(f"Run `?{run_id}`?: succeeded, 2/2 steps"))
            expect(details).to_be_visible()

            downloads = {}
            for name in (f"{run_id}.json", f"{run_id}-lora.safetensors"):  # the buttons say what they give
                with page.expect_download() as caught:
                    page.get_by_role("button", name=f"⬇ {name}").click()
                downloads[name] = caught.value
            job, weights = downloads[f"{run_id}.json"], downloads[f"{run_id}-lora.safetensors"]
            assert job.suggested_filename == f"{run_id}.json"
            assert weights.suggested_filename == f"{run_id}-lora.safetensors"
            assert json.loads(Path(job.path()).read_text())["input"]["trigger_word"] == "sks"
            assert Path(weights.path()).read_bytes() == trained_bytes

            page.get_by_role("tab", name="Publish").click()
            expect(page.get_by_text(f"Chosen run: {run_id}")).to_be_visible()
            page.get_by_label("Repo id").fill(REPO)
            page.get_by_label("Hugging Face token").fill(TOKEN)
            page.get_by_role("button", name="Push to Hub").click()
            expect(page.get_by_text(re.compile(f"Pushed to {REPO} \\(private\\)"))).to_be_visible(timeout=120_000)
            assert TOKEN not in page.content()

            # The table after the push: the repo's id, not its URL; headers on one line at 1280 px.
            page.get_by_role("tab", name="Runs").click()
            expect(table.get_by_test_id("cell-0-5")).to_have_text(REPO)
            assert "http" not in table.inner_text()
            lines = header_lines(page)  # the runs table's and the queue's
            assert len(lines) == len(COLUMNS) + len(QUEUE_COLUMNS) and max(lines) < 1.6, lines
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "runs.png"), full_page=True)
            page.get_by_role("tab", name="Train").click()  # its history table: the same rows, the same widths
            expect(page.get_by_text("tester/restarted-run-lora").first).to_be_attached()
            lines = header_lines(page)
            assert len(lines) == len(COLUMNS) and max(lines) < 1.6, lines

            page.get_by_role("tab", name="Playground").click()
            page.get_by_label("Prompt", exact=True).fill("sks a red circle")
            steps = page.get_by_role("spinbutton", name=re.compile("Steps"))
            steps.fill("2")
            steps.press("Enter")
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text(re.compile(r"Done in \d"))).to_be_visible(timeout=300_000)
            expect(page.get_by_text("final LoRA · seed 42").first).to_be_attached()

            # Delete: asked first, then the run's folder and record are gone (what went to the Hub stays).
            page.get_by_role("tab", name="Runs").click()
            page.get_by_role("button", name="Delete run…").click()
            expect(page.get_by_text(re.compile(f"Delete run {run_id} and its LoRA"))).to_be_visible()
            page.get_by_role("button", name="Keep it").click()
            assert lora.is_file()
            page.get_by_role("button", name="Delete run…").click()
            page.get_by_role("button", name="Delete it").click()
            expect(page.get_by_text(f"Deleted run {run_id}.")).to_be_visible()
            expect(table.get_by_test_id("cell-0-0")).to_have_count(0)
            browser.close()
        assert not Path(trained["job_dir"]).exists() and ui.registry.runs() == [] and ui.registry.chosen() is None
        repo = hub.repos[REPO]
        assert repo.private and repo.files[LORA_FILE] == trained_bytes
    finally:
        ui.registry.shutdown()
        ui.blocks.close()
