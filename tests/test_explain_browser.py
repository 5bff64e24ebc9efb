"""`pevl explain`'s index.html in a real browser (headless Chromium): figures load, no console errors, readable
at a phone's width and a desktop's. Chromium is found or installed by the set-up; skipped with the reason where
that is impossible, and required where ``PEVL_REQUIRE_BROWSER=1`` (CI)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from browser import Browser, find_chromium
from pevl.cli import main as cli_main

pytestmark = pytest.mark.slow  # explains a real video, then starts a browser

LABELS = ["tai chi", "clean and jerk", "arm wrestling"]
VIEWPORTS = {"phone": (390, 844, True), "desktop": (1280, 900, False)}
PAGE_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0,
                                          width: i.getBoundingClientRect().width})),
  viewport: window.innerWidth,
  scroll: document.documentElement.scrollWidth,
  smallest: Math.min(...[...document.querySelectorAll('h1, p, td, th, li, figcaption')]
                        .map(e => parseFloat(getComputedStyle(e).fontSize))),
  title: document.title,
})"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path, reason = find_chromium()
    if path is None:
        if os.environ.get("PEVL_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " but PEVL_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def explained(tmp_path_factory, shared_data) -> Path:
    """`pevl explain` of a real video with a tiny model, comparison and timeline figures included."""
    from model_helpers import tiny_model
    from pevl.engine.checkpoint import save_checkpoint
    from pevl.engine.config import RunConfig

    root = tmp_path_factory.mktemp("explain")
    checkpoints = []
    for preset in ("pevl_tiny", "vl_tiny"):
        model = tiny_model(preset, num_classes=3)
        checkpoints.append(save_checkpoint(root / preset, model_state=model.state_dict(), epoch=1, step=1,
                                           config=RunConfig().to_dict(), extra={"classes": LABELS,
                                           "model_config": model.config.to_dict()}))  # fmt: skip
    out = root / "page"
    video = shared_data / "videos" / "k400_tai_chi.mp4"
    code = cli_main(["explain", str(video), "--checkpoint", str(checkpoints[0]), "--compare", str(checkpoints[1]),
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_explain_page_in_headless_chromium(chromium, explained, viewport, tmp_path):
    width, height, mobile = VIEWPORTS[viewport]
    figures = json.loads((explained / "explain.json").read_text())["figures"]
    assert len(figures) >= 4
    with Browser(chromium, tmp_path / "profile") as browser:
        page = browser.open((explained / "index.html").as_uri(), width, height, mobile)
        state = json.loads(browser.evaluate(page, PAGE_STATE))
        shot = browser.screenshot(page, tmp_path / f"explain_{viewport}.jpg")
        problems = [e["params"] for e in browser.events("Runtime.exceptionThrown")]
        problems += [e["params"] for e in browser.events("Runtime.consoleAPICalled")
                     if e["params"]["type"] in ("error", "assert")]  # fmt: skip
        problems += [e["params"]["entry"] for e in browser.events("Log.entryAdded")
                     if e["params"]["entry"]["level"] == "error"]  # fmt: skip
    assert problems == []
    assert sorted(i["src"] for i in state["images"]) == sorted(figures)
    assert all(i["loaded"] for i in state["images"]), state["images"]
    assert state["viewport"] == width  # the page lays out at the device's width (a viewport meta tag)
    assert state["scroll"] <= width  # nothing wider than the screen: no sideways scrolling
    assert all(0 < i["width"] <= width for i in state["images"])
    assert state["smallest"] >= 12  # no text below 12 CSS px
    assert state["title"].startswith("pevl explain")
    assert 1_000 < shot.stat().st_size < 150_000  # a small artefact
    artefacts = os.environ.get("PEVL_TEST_ARTIFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(artefacts) / shot.name)
