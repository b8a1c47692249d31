"""Open an HTML report of clipmg in headless Chromium (Playwright) and check it renders cleanly.

    python scripts/check_report.py report.html [--thumbnails N] [--screenshot out.png]

Fails (exit 1) on a console error, a page error or a failed request (the page must need nothing
outside itself), on a gallery image that did not decode, and, with --thumbnails, when the gallery
shows another number of thumbnails. Chromium: Playwright's own (`playwright install chromium`),
or the system's (Debian's `chromium` package), found on PATH or through CHROMIUM_PATH.
tests/test_report_browser.py runs it where a browser is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

SYSTEM_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """A system Chromium to drive, or None (then Playwright's own is tried)."""
    if os.environ.get("CHROMIUM_PATH"):
        return os.environ["CHROMIUM_PATH"]
    return next((shutil.which(name) for name in SYSTEM_BROWSERS if shutil.which(name)), None)


def check_report(page_file: str | os.PathLike, screenshot: str | os.PathLike | None = None,
                 width: int = 1280) -> dict:
    """Render the page; returns problems (console errors, page errors, failed requests),
    thumbnails (gallery images), broken (images that did not decode), classes (per-class rows)
    and cells (confusion cells)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        executable = find_chromium()
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"]) if executable \
            else playwright.chromium.launch()
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
            page.on("request", lambda request: problems.append(f"external request: {request.url}")
                    if not request.url.startswith(("file:", "data:")) else None)
            page.goto(Path(page_file).resolve().as_uri(), wait_until="load")
            result = {
                "thumbnails": page.locator("figure.miss img").count(),
                "broken": page.evaluate("Array.from(document.querySelectorAll('figure.miss img'))"
                                        ".filter(img => !img.complete || img.naturalWidth === 0).length"),
                "classes": page.locator("tr.class-row").count(),
                "cells": page.locator("table.heat td").count(),
            }
            if screenshot:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {**result, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--thumbnails", type=int, help="the number of gallery thumbnails expected")
    parser.add_argument("--screenshot", help="write a full-page PNG here")
    args = parser.parse_args(argv)
    result = check_report(args.report, args.screenshot)
    print(json.dumps(result, indent=2))
    bad = result["problems"] or result["broken"] or (
        args.thumbnails is not None and result["thumbnails"] != args.thumbnails)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
