"""The page of `hashing serve` in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) uploads a digit and sees k thumbnails with their labels;
a file whose name is HTML shows as text and runs nothing. Where the browser, Selenium or the service's
extras are missing it skips, saying why, except in CI (CI=true), where that is a failure."""

import shutil
from pathlib import Path

import pytest

from conftest import Server, importorskip_or_fail, skip_or_fail, write_digit_folder

pytestmark = pytest.mark.system          # a real service process and a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
EVIL = "<img src=x onerror=window.pwned=1>.png"   # no quotes: browsers send them as %22


@pytest.fixture(scope="session", autouse=True)
def webdriver():
    """Selenium's webdriver, once the service's extras, Selenium and Chromium are known to be here.
    Session-scoped and autouse so that it is asked first, before the model of folder_index is trained."""
    importorskip_or_fail("fastapi")
    module = importorskip_or_fail("selenium.webdriver")
    if not CHROMIUM or not DRIVER:
        skip_or_fail("no Chromium here: `apt-get install chromium chromium-driver` (as root; .ci/run does it)")
    return module


def browser(webdriver):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def folder_index(digits_run, tmp_path_factory):
    """Class folders of digits, one file named like HTML, indexed with the digits model."""
    from hashing.workflows.index import build_index

    root = write_digit_folder(tmp_path_factory.mktemp("pics") / "pics", limit=60) / "train"
    evil = root / "three" / EVIL
    shutil.copy(next((root / "three").glob("*.png")), evil)
    out = tmp_path_factory.mktemp("idx") / "pics"
    build_index(digits_run, str(out), images=root, progress=False)
    return out, evil


def test_the_page_shows_k_neighbours_with_labels_and_escapes_names(webdriver, folder_index):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    index, evil = folder_index
    driver = browser(webdriver)
    try:
        with Server("--index", index) as server:
            driver.get(server.url + "/")
            WebDriverWait(driver, 30).until(lambda d: "items" in d.find_element(By.ID, "status").text)
            k = driver.find_element(By.ID, "k")
            k.clear()
            k.send_keys("6")
            driver.find_element(By.ID, "file").send_keys(str(evil))
            WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .hit")) == 6)
            WebDriverWait(driver, 60).until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"))
            cards = driver.find_elements(By.CSS_SELECTOR, "#grid .hit")
            labels = [c.find_element(By.CLASS_NAME, "label").text for c in cards]
            names = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
            assert set(labels) <= names, labels                          # the folders' class names
            assert labels[0] == "three"
            assert "distance 0" in cards[0].text
            # the file named like HTML: shown as its text, never run
            assert driver.find_element(By.ID, "query-name").text == evil.name
            assert any(EVIL in c.find_element(By.CLASS_NAME, "src").text for c in cards)
            assert driver.execute_script("return window.pwned") is None
            assert not driver.find_elements(By.CSS_SELECTOR, "#grid img[src='x']")
            # an error from the API shows as a line, not a broken page
            k.clear()
            k.send_keys("999")
            driver.find_element(By.ID, "file").send_keys(str(evil))
            WebDriverWait(driver, 30).until(lambda d: "422" in d.find_element(By.ID, "error").text)
            assert Path(server.url).name                                  # served from loopback, nothing else
            logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
            assert not [entry for entry in logs if "http" in entry.get("message", "")
                        and "127.0.0.1" not in entry["message"] and "localhost" not in entry["message"]]
    finally:
        driver.quit()
