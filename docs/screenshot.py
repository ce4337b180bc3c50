"""Regenerate docs/demo-text2image.png from a running demo (`make demo`) with headless Chromium.

    .venv/bin/python docs/screenshot.py [--url http://localhost:8090] [--query "an insect that makes honey"]

The README's picture is the text->image page for an everyday description, both A/B layers forced
to the fine-tuned model and the fused recall (pictures + captions), debug panel included.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://localhost:8090")
    ap.add_argument("--query", default="an insect that makes honey")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "demo-text2image.png")
    args = ap.parse_args()
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    with tempfile.TemporaryDirectory() as profile:
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--window-size=1280,1100", "--hide-scrollbars", f"--user-data-dir={profile}"):
            opts.add_argument(a)
        d = webdriver.Chrome(service=Service(driver), options=opts)
        try:
            q = urllib.parse.urlencode({"scene": "text2image", "q": args.query, "force": "model:finetuned,recall:fused"})
            d.get(f"{args.url}/?{q}")
            d.execute_script("return Promise.all([...document.images].map(i => i.complete ? 0 :"
                             " new Promise(r => { i.onload = i.onerror = r; })))")
            d.save_screenshot(str(args.out))
        finally:
            d.quit()
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
