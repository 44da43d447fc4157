"""Drive the dashboard in a real browser: Debian's chromium through its chromedriver (selenium),
headless, and a charge point on a thread of its own that answers the gateway's CALLs."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[1]
# DASHBOARD_SCREENSHOTS=docs/img .venv/bin/pytest tests/test_dashboard_browser.py refreshes the docs' pictures
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


def browser() -> webdriver.Chrome:
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "the browser tests need Debian's chromium and chromium-driver (scripts/test installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The browser console's errors since the last call. An /api/v5 answer that is not 2xx (401 to a
    wrong password, 400 to a broken config, 404 from an endpoint this gateway lacks) is logged by
    chromium as a failed load, and the page shows it: those are not errors of the page. Anything
    else is: a script error, a CSP violation, an asset that did not load."""
    found = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        if entry.get("source") == "network" and "/api/v5/" in entry["message"]:
            continue
        found.append(entry["message"])
    return found


def wait(driver: webdriver.Chrome, css: str, text: str | None = None, timeout: float = 15) -> WebElement:
    if text is None:
        return WebDriverWait(driver, timeout).until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    WebDriverWait(driver, timeout).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return driver.find_element(By.CSS_SELECTOR, css)


def click(driver: webdriver.Chrome, css: str, timeout: float = 15) -> None:
    """Click what `css` names once it is there. A list the page renders again (after a save, a cancel,
    a refresh) can replace the element between the find and the click: then find it again."""
    def clicked(d: webdriver.Chrome) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    WebDriverWait(driver, timeout).until(clicked)


def wait_gone(driver: webdriver.Chrome, css: str, timeout: float = 15) -> None:
    WebDriverWait(driver, timeout).until(lambda d: not d.find_elements(By.CSS_SELECTOR, css))


def log_in(driver: webdriver.Chrome, base: str, user: str = "admin", password: str = "public") -> None:
    driver.get(base + "/")
    wait(driver, "#login-user").send_keys(user)
    driver.find_element(By.CSS_SELECTOR, "#login-password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login-submit").click()


def set_text(driver: webdriver.Chrome, element: WebElement, text: str) -> None:
    """Replace a text field's content as typing would end (large texts: typing them key by key is slow)."""
    driver.execute_script("arguments[0].value = arguments[1];"
                          "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", element, text)


def screenshot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"dashboard-{name}.png"
    driver.save_screenshot(str(path))
    if SCREENSHOTS:
        target = ROOT / SCREENSHOTS
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return path


class ChargePoint:
    """An OCPP 1.6 charge point on a thread: sends what the test says, answers every CALL Accepted,
    keeps every frame it received."""

    def __init__(self, url: str, proto: str = "ocpp1.6") -> None:
        self.ws: ClientConnection = connect(url, subprotocols=[proto])  # type: ignore[list-item]
        self.received: list[Any] = []
        self.closed = threading.Event()
        self._seq = 0
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()

    def _answer(self) -> None:
        try:
            for raw in self.ws:
                frame = orjson.loads(raw)
                self.received.append(frame)
                if frame[0] == 2:
                    self.ws.send(orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode())
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def call(self, action: str, payload: dict[str, Any]) -> None:
        self._seq += 1
        self.ws.send(orjson.dumps([2, f"t{self._seq}", action, payload]).decode())

    def close(self) -> None:
        self.ws.close()
        self._thread.join(5)


@contextmanager
def charge_point(url: str, proto: str = "ocpp1.6") -> Iterator[ChargePoint]:
    cp = ChargePoint(url, proto)
    try:
        yield cp
    finally:
        cp.close()
