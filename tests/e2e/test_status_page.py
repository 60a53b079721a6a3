"""The poller's status page in a real headless browser (Debian's chromium + chromedriver).

The emulator, ingest, the dispatcher and the poller run as processes on the real broker; the
emulator keeps a batch in progress for several seconds, so the page must show the in-flight
batch's row and its progress value must move without a reload. Screenshots at desktop and
phone width go to ``artifacts/`` under the repository (gitignored; CI keeps them).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from batchpipe.shared.kafka import ensure_topics
from tests.conftest import make_test_settings
from tests.e2e.harness import Pipeline

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
T = TypeVar("T")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot(driver: Any, name: str, width: int, height: int) -> Path:
    """A full-page screenshot at ``width`` CSS pixels (the page laid out at that width)."""
    import base64

    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(0.5)
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": max(height, full), "scale": 1},
        },
    )
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    settings = make_test_settings(
        kafka_bootstrap, batch_max_wait_seconds=1.0, poll_interval_seconds=0.5, poll_max_rps=50.0
    )
    asyncio.run(ensure_topics(settings))
    running = Pipeline(settings, tmp_path, emulator_args=["--processing-seconds", "12"])
    try:
        running.start()
    except Exception:
        running.stop()
        raise
    yield running
    running.stop()


def test_status_page_shows_a_batch_in_flight_and_its_progress(
    pipeline: Pipeline, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    poller = f"http://127.0.0.1:{pipeline.settings.poller_http_port}"
    conversations = [[{"role": "user", "content": f"Question {i}?"}] for i in range(40)]
    claude = [{"messages": c, "model": "claude-3-5-haiku-latest"} for c in conversations[:12]]
    for payload in ({"data": conversations}, {"data": claude}):
        response = httpx.post(f"{pipeline.ingest_url}/requests", json=payload, timeout=30)
        assert response.status_code == 202, response.text

    browser.get(f"{poller}/")
    assert browser.title == "batchpipe poller status"
    rows = "#batch-rows tr[data-batch-id]"

    def openai_bar() -> Any:
        for row in browser.find_elements(By.CSS_SELECTOR, rows):
            if row.find_element(By.CSS_SELECTOR, ".provider").text == "openai":
                return row
        return None

    row = wait_for(openai_bar, 60, f"an openai batch row on the page; {pipeline.logs()}")
    batch_id = row.get_attribute("data-batch-id")
    assert batch_id and batch_id in row.find_element(By.CSS_SELECTOR, ".id").text
    assert row.find_element(By.CSS_SELECTOR, ".model").text == "gpt-4o-mini"
    bar = row.find_element(By.CSS_SELECTOR, "[role=progressbar]")
    assert bar.get_attribute("aria-valuemax") == "40"
    first = int(bar.get_attribute("aria-valuenow"))
    updates = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates"))

    def moved() -> int | None:
        now = int(bar.get_attribute("aria-valuenow"))
        return now if now > first else None

    later = wait_for(moved, 20, f"the progress of {batch_id} to move from {first}")
    assert first < later <= 40
    assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-updates")) > updates
    assert "live" in browser.find_element(By.ID, "live-text").text
    # the requests waiting: a count of the dispatcher group's lag once it is readable
    waiting = wait_for(
        lambda: (t := browser.find_element(By.ID, "waiting").text).isdigit() and t,
        20,
        "the requests waiting to be batched",
    )
    assert int(waiting) >= 0
    assert browser.find_element(By.ID, "cost").text.startswith("$")
    desktop = screenshot(browser, "status-page.png", 1280, 900)

    # phone width: the row becomes a card, nothing wider than the screen
    phone = screenshot(browser, "status-page-phone.png", 390, 844)
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways at 390px by {overflow}px"
    assert browser.find_element(
        By.CSS_SELECTOR, f'{rows}[data-batch-id="{batch_id}"]'
    ).is_displayed()

    # the batch finishes: its row goes, its results are counted
    wait_for(
        lambda: not browser.find_elements(By.CSS_SELECTOR, f'{rows}[data-batch-id="{batch_id}"]'),
        60,
        f"{batch_id} to leave the page",
    )
    published = wait_for(
        lambda: int(browser.find_element(By.ID, "published").text.replace(",", "") or 0) >= 40,
        30,
        "the published results",
    )
    assert published
    screenshot(browser, "status-page-after.png", 1280, 900)
    assert desktop.stat().st_size > 0 and phone.stat().st_size > 0
