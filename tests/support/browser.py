"""Headless Chromium for page tests: Debian's chromium and chromium-driver, via Selenium."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.debian import ensure_commands

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1300,1800")


@contextmanager
def headless_chromium() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = ensure_commands({"chromium": "chromium", "chromedriver": "chromium-driver"})
    browser, driver = found["chromium"], found["chromedriver"]
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()
