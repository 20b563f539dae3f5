"""A real server on 127.0.0.1 and Debian's headless Chromium driven by Selenium.

Without Chromium these tests skip on a developer machine but FAIL in CI (CI=true), where
`.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.registry import DEFAULT_ROOT
from tests.conftest import ADMIN_TOKEN, free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def e2e_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's store: a copy of the committed one, so tests can register, promote and start rollouts."""
    root = tmp_path_factory.mktemp("e2e") / "store"
    shutil.copytree(DEFAULT_ROOT, root, ignore=shutil.ignore_patterns(".*"))
    return root


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory, e2e_store: Path) -> Iterator[str]:
    """A real server over `e2e_store`, its mutations enabled with `tests.conftest.ADMIN_TOKEN`."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "MODELHOUSE_DEVICE": "cpu", "MODELHOUSE_LOG_LEVEL": "WARNING",
           "MODELHOUSE_STORE_DIR": str(e2e_store), "MODELHOUSE_ADMIN_TOKEN": ADMIN_TOKEN}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        message = f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1100,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()
