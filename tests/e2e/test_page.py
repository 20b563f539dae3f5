"""The web page in a real browser: draw, upload, type, and read the registry, through the public API."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.digit_photos import noisy_photo
from models.paths import data_dir
from models.registry import ModelRegistry
from tests.conftest import ADMIN_TOKEN, png_bytes
from tests.e2e.conftest import SCREENSHOTS

SHARED = data_dir()
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
COPY = "e2e-copy"


def wait_text(browser, element_id: str, predicate, timeout: float = 15.0) -> str:
    """The element's text once `predicate` accepts it; fails with the last text seen after `timeout`."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, timeout).until(lambda d: predicate(d.find_element("id", element_id).text))
    except TimeoutException:
        pytest.fail(f"#{element_id} never matched; it says {browser.find_element('id', element_id).text!r}")
    return browser.find_element("id", element_id).text


def wait_css(browser, selector: str, predicate, timeout: float = 15.0) -> str:
    """Like `wait_text`, for the first element matching a CSS selector."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def text(d) -> str | None:
        found = d.find_elements("css selector", selector)
        return found[0].text if found else None

    try:
        WebDriverWait(browser, timeout).until(lambda d: (t := text(d)) is not None and predicate(t))
    except TimeoutException:
        pytest.fail(f"{selector} never matched; it says {text(browser)!r}")
    return text(browser)


def wait_tab(browser, name: str, timeout: float = 15.0):
    """The tab `tab-NAME`: photo tabs appear only once the page has read `GET /models`, so wait for it."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout).until(lambda d: d.find_elements("id", f"tab-{name}") or False)[0]
    except TimeoutException:
        tabs = [t.get_attribute("id") for t in browser.find_elements("css selector", "[role=tab]")]
        pytest.fail(f"#tab-{name} never appeared; the page has {tabs}")


def open_tab(browser, url: str, name: str) -> None:
    browser.get(url)
    wait_tab(browser, name).click()


def draw(browser, strokes: list[list[tuple[int, int]]]) -> None:
    """Pointer-event strokes on the canvas; points are in canvas pixels (280x280) from its top-left."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.actions.interaction import POINTER_PEN

    canvas = browser.find_element("id", "digit-canvas")
    scale = canvas.size["width"] / 280
    pen = PointerInput(POINTER_PEN, "pen")
    actions = ActionBuilder(browser, mouse=pen)
    for stroke in strokes:
        x0, y0 = stroke[0]
        actions.pointer_action.move_to(canvas, int((x0 - 140) * scale), int((y0 - 140) * scale))
        actions.pointer_action.pointer_down()
        for (xa, ya), (xb, yb) in zip(stroke, stroke[1:]):
            for t in np.linspace(0.1, 1.0, 8):  # intermediate pointermove events, as a real pen sends
                x, y = xa + (xb - xa) * t, ya + (yb - ya) * t
                actions.pointer_action.move_to(canvas, int((x - 140) * scale), int((y - 140) * scale))
        actions.pointer_action.pointer_up()
    actions.perform()


def test_drawing_a_seven_on_the_canvas(browser, server_url):
    open_tab(browser, server_url, "digits")
    draw(browser, [[(70, 60), (140, 60), (210, 60), (180, 130), (150, 200), (130, 250)]])
    # Classification runs while drawing too (debounced): wait for the answer to the whole stroke.
    verdict = wait_text(browser, "digit-verdict", lambda t: t.startswith("It's a 7"))
    assert verdict.startswith("It's a 7"), verdict
    assert len(browser.find_elements("css selector", "#digit-bars li")) == 10
    assert browser.find_element("id", "digit-seen").get_attribute("src").startswith("data:image/png;base64,")
    browser.save_screenshot(str(SCREENSHOTS / "digits-drawn.png"))
    browser.find_element("id", "digit-clear").click()
    assert browser.find_element("id", "digit-verdict").text == "Draw something."


def test_an_answer_arriving_after_clear_is_not_shown(browser, server_url):
    open_tab(browser, server_url, "digits")
    # A slow network: every API answer reaches the page 800 ms late.
    browser.execute_script(
        "const real = window.fetch;"
        "window.fetch = async (...args) => { const r = await real(...args);"
        " await new Promise((ok) => setTimeout(ok, 800)); return r; };"
    )
    draw(browser, [[(70, 60), (210, 60), (130, 250)]])
    # Let the debounced request leave (150 ms), then clear while its answer is still on the way.
    browser.execute_script("return new Promise((ok) => setTimeout(ok, 400));")
    browser.find_element("id", "digit-clear").click()
    browser.execute_script("return new Promise((ok) => setTimeout(ok, 1500));")
    assert browser.find_element("id", "digit-verdict").text == "Draw something."
    assert browser.find_elements("css selector", "#digit-bars li") == []


def test_uploading_a_photo_of_a_digit(browser, server_url, mnist_test, tmp_path):
    images, labels = mnist_test
    photo = tmp_path / "digit.jpg"
    photo.write_bytes(noisy_photo(images[0], np.random.default_rng(0)))
    open_tab(browser, server_url, "digits")
    browser.find_element("id", "digit-file").send_keys(str(photo))
    verdict = wait_text(browser, "digit-verdict", lambda t: t.startswith("It's a"))
    assert verdict.startswith(f"It's a {labels[0]}")
    browser.save_screenshot(str(SCREENSHOTS / "digits-photo.png"))


def test_api_errors_are_shown_as_readable_messages(browser, server_url, tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    open_tab(browser, server_url, "digits")
    browser.find_element("id", "digit-file").send_keys(str(not_an_image))
    message = wait_text(browser, "digits-error", lambda t: bool(t))
    assert "not a supported image" in message


def test_models_tab_shows_the_digits_accuracy_and_a_version(browser, server_url):
    from selenium.webdriver.support.ui import WebDriverWait

    production = httpx.get(f"{server_url}/models/digits").json()["aliases"]["production"]
    open_tab(browser, server_url, "models")
    tables = wait_text(browser, "models-tables", lambda t: "digits" in t)
    assert "test accuracy: 99.53%" in tables
    assert browser.find_elements("css selector", "details.version img") == []  # loaded only when opened
    browser.find_element("css selector", f"tr[data-task='digits'][data-version='{production}']").click()
    details = f"details[data-task='digits'][data-version='{production}']"
    detail = wait_css(browser, details, lambda t: "parameters" in t)
    assert browser.find_element("css selector", details).get_attribute("open") is not None
    assert "61,706 parameters" in detail and "Conv2d" in detail
    images = browser.find_elements("css selector", f"{details} .artifacts img")
    assert {img.get_attribute("alt").split(" of ")[0] for img in images} >= {"learning curves", "confusion matrix"}
    curves = next(img for img in images if img.get_attribute("alt").startswith("learning curves"))
    WebDriverWait(browser, 15).until(lambda d: d.execute_script("return arguments[0].complete", curves))
    assert browser.execute_script("return arguments[0].naturalWidth", curves) > 0
    links = {a.text: a.get_attribute("href") for a in browser.find_elements("css selector", f"{details} .files a")}
    assert links["history.json"].endswith(f"/models/digits/{production}/artifacts/history.json")
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element("css selector", details))
    browser.save_screenshot(str(SCREENSHOTS / "models.png"))


@pytest.fixture(scope="module")
def digits_copy(e2e_store: Path, server_url: str) -> str:
    """A second digits version in the server's store: production's weights and files under another id (the
    server sees it on its next request)."""
    import torch

    from models.runtime import load_model

    registry = ModelRegistry(e2e_store)
    if COPY not in registry.versions("digits"):
        production = load_model(registry, "digits", "production", torch.device("cpu"))
        keep = {"kind", "architecture", "labels", "preprocessing", "metrics", "training", "lineage", "serving"}
        artifacts = {name: registry.artifact_path("digits", production.version, name)
                     for name in production.manifest.artifacts}
        registry.register("digits", production.network, production.manifest.model_dump(include=keep),
                          artifacts=artifacts, version=COPY)
    return COPY


def test_models_tab_shows_a_canary_and_a_shadow(browser, server_url, digits_copy, mnist_test):
    images, _ = mnist_test
    rollouts = f"{server_url}/models/digits/aliases/production"
    response = httpx.post(f"{rollouts}/canary", headers=AUTH, timeout=60,
                          json={"version": digits_copy, "percent": 20, "max_p99_ms": 60000})
    assert response.status_code == 200, response.text
    shadow = httpx.post(f"{rollouts}/shadow", headers=AUTH, timeout=60, json={"version": digits_copy, "percent": 100})
    assert shadow.status_code == 200, shadow.text
    try:
        for image in images[:30]:  # some traffic, for the canary to count
            httpx.post(f"{server_url}/models/digits/predict", files={"file": ("d.png", png_bytes(image), "image/png")},
                       timeout=30).raise_for_status()
        open_tab(browser, server_url, "models")
        line = wait_css(browser, ".task[data-task='digits'] .aliases li[data-alias='production']",
                        lambda t: "canary:" in t)
        production = response.json()["version"]
        assert re.fullmatch(rf"production → {production}; canary: {digits_copy} at 20% "
                            r"\(\d+ requests, \d+ errors(, p99 [\d.]+ ms)?\); "
                            rf"shadow: {digits_copy} at 100% \((agreement [\d.]+ over \d+|nothing compared yet), "
                            r"\d+ dropped\)", line), line
        other_tasks = browser.find_elements("css selector", ".task[data-task='rnn'] .aliases li")
        assert other_tasks and all("canary" not in li.text for li in other_tasks)
        browser.execute_script("arguments[0].scrollIntoView()",
                               browser.find_element("css selector", ".task[data-task='digits']"))
        browser.save_screenshot(str(SCREENSHOTS / "models-canary.png"))
    finally:
        httpx.delete(f"{rollouts}/shadow", headers=AUTH, timeout=60)
        httpx.delete(f"{rollouts}/canary", headers=AUTH, timeout=60)


def test_models_tab_shows_the_history_after_a_promotion(browser, server_url, digits_copy, e2e_store):
    if httpx.get(f"{server_url}/models/digits/history").status_code == 404:
        pytest.skip("GET /models/{task}/history is not served yet (issue 18): this test runs once it is")
    production = httpx.get(f"{server_url}/models/digits").json()["aliases"]["production"]
    registry = ModelRegistry(e2e_store)
    for _ in range(21):  # older events than the page shows (it reads the history from disk on each request)
        registry.record_event("digits", "rollback", actor="e2e", alias="staging", from_version=digits_copy,
                              to_version=production, reason="an older event")
    response = httpx.post(f"{server_url}/models/digits/{digits_copy}/promote", headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    try:
        open_tab(browser, server_url, "models")
        history = ".task[data-task='digits'] .history"
        wait_css(browser, history, lambda t: digits_copy in t)
        headings = [th.text for th in browser.find_elements("css selector", f"{history} th")]
        assert headings == ["time (UTC)", "event", "alias", "from → to", "actor", "reason"]
        newest = [td.text for td in browser.find_elements("css selector", f"{history} tbody tr:first-child td")]
        assert newest[1:4] == ["promote", "production", f"{production} → {digits_copy}"], newest
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", newest[0]) and newest[4], newest
        assert len(browser.find_elements("css selector", f"{history} tbody tr")) == 20
        note = browser.find_element("css selector", f"{history} .note")
        assert note.text == "The latest 20 events; older ones are in the whole history."
        assert note.find_element("tag name", "a").get_attribute("href") == f"{server_url}/models/digits/history"
        browser.execute_script("arguments[0].scrollIntoView()", browser.find_element("css selector", history))
        browser.save_screenshot(str(SCREENSHOTS / "models-history.png"))
    finally:
        httpx.post(f"{server_url}/models/digits/{production}/promote", headers=AUTH, timeout=60)


def test_models_tab_without_the_rollout_endpoints(browser, server_url):
    """An alias or history endpoint that fails leaves its part out; the rest of the tab still shows."""
    browser.get(server_url)
    browser.execute_script(
        "const real = window.fetch;"
        "window.fetch = (url, ...rest) => /\\/(aliases\\/|history)/.test(url)"
        " ? Promise.resolve(new Response('{}', { status: 404 })) : real(url, ...rest);"
    )
    browser.find_element("id", "tab-models").click()
    digits = wait_css(browser, ".task[data-task='digits']", lambda t: "History unavailable." in t)
    assert "test accuracy: 99.53%" in digits
    line = browser.find_element("css selector", ".task[data-task='digits'] .aliases li[data-alias='production']").text
    assert re.fullmatch(r"production → \S+", line), line
    assert browser.find_element("id", "models-error").text == ""


def test_keyboard_moves_between_tabs(browser, server_url):
    from selenium.webdriver.common.keys import Keys

    browser.get(server_url)
    wait_tab(browser, "components")  # the photo tabs are in
    following = browser.find_element("css selector", '#tab-digits + [role="tab"]')  # the next one, whichever it is
    browser.find_element("id", "tab-digits").send_keys(Keys.ARROW_RIGHT)
    assert following.get_attribute("aria-selected") == "true"
    assert browser.find_element("id", following.get_attribute("aria-controls")).is_displayed()
    assert not browser.find_element("id", "panel-digits").is_displayed()


def test_word_completion_as_you_type(browser, server_url):
    from selenium.webdriver.support.ui import Select

    open_tab(browser, server_url, "words")
    box = browser.find_element("id", "words-prefix")
    box.send_keys("hel")
    words = wait_text(browser, "words-bars", lambda t: t.count("hel") >= 3)
    assert all(line.startswith("hel") for line in words.splitlines() if not line.endswith("%"))
    browser.save_screenshot(str(SCREENSHOTS / "words.png"))
    Select(browser.find_element("id", "words-version")).select_by_value("seed")
    box.clear()
    box.send_keys("g")
    assert wait_text(browser, "words-bars", lambda t: t.startswith("green")).startswith("green")


def test_imagenet_tab_classifies_a_sample_photo(browser, server_url):
    open_tab(browser, server_url, "imagenet")
    browser.find_element("id", "imagenet-file").send_keys(str(SHARED / "imagenet-samples" / "teapot.jpg"))
    verdict = wait_text(browser, "imagenet-verdict", lambda t: "%" in t)
    assert verdict.startswith("teapot"), verdict
    assert len(browser.find_elements("css selector", "#imagenet-bars li")) == 5
    assert browser.find_element("id", "imagenet-preview").is_displayed()
    browser.save_screenshot(str(SCREENSHOTS / "imagenet.png"))


def test_components_tab_classifies_a_validation_photo(browser, server_url):
    photo = sorted((SHARED / "components" / "validation" / "relay").glob("*.jpg"))[0]
    open_tab(browser, server_url, "components")
    browser.find_element("id", "components-file").send_keys(str(photo))
    verdict = wait_text(browser, "components-verdict", lambda t: "%" in t)
    assert verdict.startswith("relay"), verdict
    assert len(browser.find_elements("css selector", "#components-bars li")) == 3
    browser.save_screenshot(str(SCREENSHOTS / "components.png"))


def test_cifar10_tab_classifies_a_test_photo(browser, server_url):
    photo = SHARED / "cifar10" / "test" / "ship" / "0000.jpg"
    open_tab(browser, server_url, "cifar10")
    assert browser.find_element("id", "tab-cifar10").text == "CIFAR-10"
    browser.find_element("id", "cifar10-file").send_keys(str(photo))
    verdict = wait_text(browser, "cifar10-verdict", lambda t: "%" in t)
    assert verdict.startswith("ship"), verdict
    assert len(browser.find_elements("css selector", "#cifar10-bars li")) == 3


def test_components_tab_flags_a_photo_that_is_no_component(browser, server_url):
    open_tab(browser, server_url, "components")
    browser.find_element("id", "components-file").send_keys(str(SHARED / "imagenet-samples" / "volcano.jpg"))
    verdict = wait_text(browser, "components-verdict", lambda t: "%" in t)
    assert "not confidently any class it knows" in verdict
