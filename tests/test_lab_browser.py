"""`clipmg lab`'s page driven in headless Chromium (Playwright): an edited prompt changes its class's
recall, a text search shows thumbnails, a confusion cell shows its mistakes. Skipped where no
Playwright, no lab extra or no Chromium is installed (Chromium found as tests/test_report_browser.py
finds it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from clipmg.lab import Lab

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("playwright.sync_api", reason="the browser extra (playwright) is not installed")
pytest.importorskip("starlette", reason="the lab extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the lab extra (starlette, uvicorn) is not installed")


def find_chromium():
    spec = importlib.util.spec_from_file_location("check_report", REPO / "scripts" / "check_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_chromium()


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"]) if executable \
                else playwright.chromium.launch()
        except Exception as error:  # playwright's Error when it has no browser to launch
            if executable is None and "Executable doesn't exist" in str(error):
                pytest.skip("no Chromium: install one (apt install chromium, or playwright install chromium)")
            raise
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        yield page, problems
        browser.close()


def test_the_page_edits_a_prompt_searches_by_text_and_shows_a_cells_mistakes(tiny_dataset, tmp_path, browser_page,
                                                                             one_torch_thread):
    from playwright.sync_api import expect

    from clipmg.lab.server import LabServer
    from tests.test_lab import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "run" / "best", tiny_dataset)
    lab = Lab.open(checkpoint, tiny_dataset / "training" / "train.xlsx", device="cpu", workers=0)
    page, problems = browser_page
    recalls = [row["recall"] for row in lab.state()["per_class"]]
    # A class (not the first) that some frames are rightly given; described exactly as the first
    # class is named, its prompts become the first class's, every tie goes to the first, and its
    # recall falls to 0.
    edited = next(i for i in range(1, len(recalls)) if recalls[i])
    with LabServer(lab, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        page.goto(server.url)
        expect(page.locator("body[data-ready='1']")).to_have_count(1, timeout=20_000)
        cell = page.locator(f"td.recall[data-class='{lab.class_ids[edited]}']")
        expect(cell).to_have_text(f"{recalls[edited]:.3f}")
        page.locator(f"input.subject[data-class='{lab.class_ids[edited]}']").fill(lab.class_names[0])
        expect(cell).to_have_text("0.000", timeout=20_000)
        expect(cell).to_have_class("recall num changed")

        page.locator("#search-input").fill("a person touching the hat")
        page.locator("#search-form button").click()
        thumbs = page.locator("#search-results figure img")
        expect(thumbs).to_have_count(min(24, len(lab.encoded)), timeout=20_000)
        page.wait_for_function("Array.from(document.querySelectorAll('#search-results img')).slice(0, 4)"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=20_000)

        confusion = lab.view.confusion
        true, pred = next((i, j) for i in range(len(confusion)) for j in range(len(confusion))
                          if i != j and confusion[i, j])
        page.locator(f"#confusion td[data-true='{true}'][data-pred='{pred}']").click()
        shown = page.locator("#mistakes figure")
        expect(shown).to_have_count(min(24, int(confusion[true, pred])), timeout=20_000)
        assert set(shown.evaluate_all("els => els.map(e => e.dataset.true + '>' + e.dataset.pred)")) == {
            f"{true}>{pred}"}
        expect(page.locator("#mistakes-title")).to_contain_text(lab.class_names[true])
        page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
    assert problems == []
    assert (tmp_path / "lab.png").stat().st_size > 10_000
