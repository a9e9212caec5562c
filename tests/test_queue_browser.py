"""The run workspace in a real browser (Debian Chromium driven by Playwright): trainings queued behind a running
one on a CPU box (one slot), reordered, one taken out, the app restarted with the queue intact, the rest trained
to the end; the sample grid of a finished run (a row per checkpoint labelled with its step, each image with its
own prompt) and the log box following its tail. Screenshots of the Runs view with a queue and of the sample grid
go to docs/screenshots/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.test_app_api import launch
from tests.test_app_browser import ARGS, CHROMIUM, open_tab, shoot

TRAINING_MS = 300_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.training,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def queue_with_steps(page, registry, steps: int) -> str:
    """Set the job's length on the Config tab and add it to the queue; the queued run's id."""
    from playwright.sync_api import expect

    before = len(registry.queued())
    open_tab(page, "Config")
    page.get_by_label("Steps or epochs").fill(str(steps))
    open_tab(page, "Train")
    page.get_by_role("button", name="Add to queue").click()
    expect(page.get_by_text(re.compile(rf"queued \({before + 1} of {before + 1}\)"))).to_be_visible()
    return registry.queued()[-1].id


def queued_ids(page, known: list[str]) -> list[str]:
    """The runs of `known` the Queue table shows, in its order (first to start first)."""
    text = page.locator("#queue-table").inner_text()
    return sorted((run for run in known if run in text), key=text.index)


def pick_queued(page, run_id: str) -> None:
    box = page.locator("#queue-choice input")
    box.click()
    page.get_by_role("option", name=re.compile(re.escape(run_id))).click()


def test_queue_reorder_remove_restart_then_train_and_the_sample_grid(tmp_path: Path, tiny_model: Path):
    from playwright.sync_api import expect, sync_playwright

    data = tmp_path / "data"
    ui, url = launch(data, tiny_model)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url)
            open_tab(page, "Dataset")
            page.get_by_role("button", name="Load demo dataset").click()
            expect(page.get_by_text("Page 1 of 1 · 8 images")).to_be_visible()

            # A long run holds the CPU's one slot, so the runs added next wait in the queue.
            open_tab(page, "Config")
            page.get_by_label("Steps or epochs").fill("200")
            open_tab(page, "Train")
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_text(re.compile(r"Started run"))).to_be_visible()
            holder = ui.registry.training()
            assert holder is not None
            grid_run = queue_with_steps(page, ui.registry, 10)  # the demo's length: samples at steps 5 and 10
            first = queue_with_steps(page, ui.registry, 2)
            second = queue_with_steps(page, ui.registry, 2)

            open_tab(page, "Runs")
            ids = [grid_run, first, second]
            expect(page.locator("#queue-table")).to_contain_text(second)
            assert queued_ids(page, ids) == [grid_run, first, second]
            pick_queued(page, second)
            page.get_by_role("button", name="↑ Up").click()
            page.wait_for_function(f"() => {{ const t = document.querySelector('#queue-table').innerText; "
                                   f"return t.indexOf('{second}') < t.indexOf('{first}'); }}")
            assert queued_ids(page, ids) == [grid_run, second, first]
            pick_queued(page, first)
            page.get_by_role("button", name="Remove from queue").click()
            expect(page.get_by_text(re.compile(f"Removed run {first} from the queue"))).to_be_visible()
            expect(page.locator("#queue-table")).not_to_contain_text(first)
            assert queued_ids(page, ids) == [grid_run, second]
            shoot(page, "runs-queue")

            # Restart: the running one is stopped with the app; the queue goes on in the next app.
            ui.registry.shutdown()
            ui.blocks.close()
            ui, url = launch(data, tiny_model)
            page.goto(url)
            open_tab(page, "Runs")
            expect(page.locator("#queue-table")).to_contain_text(second)
            expect(page.locator("#queue-table")).not_to_contain_text(grid_run)  # the head started at once
            assert queued_ids(page, ids) == [second]
            assert ui.registry.training() is not None and ui.registry.training().id == grid_run
            assert first not in page.locator("#runs-table").inner_text()

            # The rest trains to the end, in queue order.
            def status(run_id: str) -> str:
                record = ui.registry.history.get(run_id)
                return record.status if record else ""

            for run_id in (grid_run, second):
                start = time.monotonic()
                while status(run_id) not in ("succeeded", "failed", "cancelled") and \
                        time.monotonic() - start < TRAINING_MS / 1000:
                    time.sleep(2)
                assert status(run_id) == "succeeded", (run_id, status(run_id))
            assert status(holder.id) != "succeeded"
            expect(page.locator("#queue-table")).not_to_contain_text(second)

            # The sample grid of the run with samples: a row per checkpoint, each image with its own prompt.
            page.locator("#runs-table").get_by_text(grid_run).first.click()
            open_tab(page, "Train")
            grid = page.locator("#sample-videos")
            expect(grid.locator("tr[data-step]")).to_have_count(2, timeout=30_000)
            expect(grid.locator("th")).to_have_text(["step 5", "step 10"])
            expect(grid.locator("figcaption")).to_have_text(["sks a red circle", "sks a blue triangle"] * 2)
            assert grid.locator("img").evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")
            box = grid.bounding_box()
            assert box is not None and box["height"] < 1000  # compact: both checkpoints fit on one screen
            expect(page.get_by_text(re.compile(r"Finished in .*: 10 steps"))).to_be_visible()
            summary = page.locator("body").inner_text()
            assert str(data) not in summary and str(tmp_path) not in summary  # no server path on the page
            assert f"jobs/{grid_run}" in summary  # the chosen run's folder, relative to the data folder

            # The log box follows its tail.
            log = page.get_by_label("Log", exact=True)
            at_end = log.evaluate("t => t.scrollHeight <= t.clientHeight || "
                                  "t.scrollTop + t.clientHeight >= t.scrollHeight - 4")
            assert at_end
            grid.scroll_into_view_if_needed()
            shoot(page, "sample-grid")
            browser.close()
    finally:
        ui.registry.shutdown()
        ui.blocks.close()
