"""The picture of the page in docs/service.md: serve an index, upload one image in headless Chromium, save a PNG.

    python benchmarks/screenshot.py --index idx/mnist --image digit.png [--k 12] [--out docs/serve.png]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--out", default="docs/serve.png")
    a = p.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "hashing", "serve", "--index", a.index, "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().split(" at ", 1)[1].split()[0]
    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,700", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: "items" in d.find_element(By.ID, "status").text)
        k = driver.find_element(By.ID, "k")
        k.clear()
        k.send_keys(str(a.k))
        driver.find_element(By.ID, "file").send_keys(str(Path(a.image).resolve()))
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            f"const i = [...document.querySelectorAll('#grid img')]; return i.length === {a.k} && "
            "i.every(x => x.complete && x.naturalWidth > 0)"))
        time.sleep(0.3)
        driver.save_screenshot(a.out)
        print(f"wrote {a.out}")
    finally:
        driver.quit()
        server.send_signal(signal.SIGTERM)
        server.wait()


if __name__ == "__main__":
    main()
