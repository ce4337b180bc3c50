"""A real browser on the search page: headless Debian Chromium driven by chromedriver (selenium).

The test setup installs chromium + chromium-driver with apt-get when they are missing.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def ensure_chromium() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        cmd = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver"
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=900)
        chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
        assert chromium and driver, f"could not install chromium/chromium-driver: {r.stderr[-500:]}"
    return chromium, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = ensure_chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              "--window-size=1280,1000", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def site(stack):
    from werkzeug.serving import make_server

    from mmsearch.web_ui.app import create_app

    cfg = stack["cfg"].model_copy(update={"image_root": stack["images"],
                                          "web": stack["cfg"].web.model_copy(update={"retrieval_url": stack["url"]})})
    server = make_server("127.0.0.1", 0, create_app(cfg), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def loaded_tiles(driver):
    """The result tiles' images once the page showing them has loaded (False until then, for WebDriverWait)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        if driver.execute_script("return document.readyState") != "complete":
            return False
        return driver.find_elements(By.CSS_SELECTOR, "#results .tile img") or False
    except StaleElementReferenceException:
        return False


def test_search_switch_scene_upload_and_escaping(browser, site, stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(site + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("text document 42 about subject 6")
    # pin the rerank arm (the random tiny cross-encoder would reorder), through the page's debug field
    browser.find_element(By.CSS_SELECTOR, "form.search details.debug-force summary").click()
    browser.find_element(By.CSS_SELECTOR, "form.search input[name=force]").send_keys("rerank:none")
    browser.find_element(By.ID, "go").click()
    wait.until(EC.presence_of_element_located((By.ID, "results")))
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    assert cards, browser.page_source[-2000:]
    # the expected document, not any document: its id and its own text, in the first card
    assert cards[0].find_element(By.CSS_SELECTOR, "a.result-link").get_attribute("data-doc") == "t42"
    assert cards[0].find_element(By.CSS_SELECTOR, ".text").text == "text document 42 about subject 6"
    debug = browser.find_element(By.ID, "debug").text
    assert "embed" in debug and "rerank = none" in debug

    # each tab and each search is a page load: wait for the old page to go before touching the new one
    old_box = browser.find_element(By.ID, "q")
    browser.find_element(By.ID, "tab-text2image").click()
    wait.until(EC.staleness_of(old_box))
    box = wait.until(EC.presence_of_element_located((By.ID, "q")))
    box.clear()
    box.send_keys("a picture")
    browser.find_element(By.ID, "go").click()
    wait.until(EC.url_contains("q=a+picture"))
    imgs = wait.until(lambda d: loaded_tiles(d))
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs[:3])

    old_box = browser.find_element(By.ID, "q")
    browser.find_element(By.ID, "tab-image2image").click()
    wait.until(EC.staleness_of(old_box))
    upload = wait.until(EC.presence_of_element_located((By.ID, "image")))
    upload.send_keys(str(stack["images"] / "17.png"))  # the page script submits on change
    wait.until(EC.staleness_of(upload))
    first = wait.until(lambda d: loaded_tiles(d))[0].get_attribute("src")
    assert first.endswith("/images/17.png")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "image2image.png"))

    browser.get(site + "/?scene=text2text&force=rerank%3Anone&q=%3Cscript%3Ealert(1)%3C%2Fscript%3E+hostile+document")
    wait.until(EC.presence_of_element_located((By.ID, "results")))
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .card .text")]
    assert "<script>alert(1)</script> hostile document" in texts  # shown as text, never run
    assert browser.execute_script("return document.querySelectorAll('#results script').length") == 0
    browser.save_screenshot(str(ARTIFACTS / "search.png"))
    assert (ARTIFACTS / "search.png").stat().st_size > 1000
