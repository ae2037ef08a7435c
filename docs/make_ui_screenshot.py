"""Take docs/ui.png: the `guidedmae ui` page of a checkpoint, in headless Chromium (the system's).

make demo && python docs/make_ui_screenshot.py runs/demo/checkpoint-last.pt [--scene 14] [--out docs/ui.png]
"""

import argparse
import shutil
import socket

from playwright.sync_api import sync_playwright

from guidedmae.ui.app import serve
from guidedmae.ui.demo import Demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--scene", type=int, default=14, help="a held-out scene with objects in view")
    parser.add_argument("--out", default="docs/ui.png")
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(Demo.load(args.checkpoint), "127.0.0.1", port, block=False)
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#summary :text('held-out scene 0')")
            page.fill("#scene input", str(args.scene))
            page.click("#compare")
            page.wait_for_selector(f"#summary :text('held-out scene {args.scene}')")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
