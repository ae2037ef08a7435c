"""Take docs/ui.png: the `guidedmae ui` page of a checkpoint in headless Chromium (the system's), at
1440x900, after Compare on the page's opening scene and Compare across scenes; and time both clicks.

make demo && python docs/make_ui_screenshot.py runs/demo/checkpoint-last.pt [--out docs/ui.png] [--repeat 10]

Times are from the click until the page shows the answer (both pictures; the table over the scenes),
the server in this process with the command's one thread.
"""

import argparse
import shutil
import socket
import statistics
import time

import torch
from playwright.sync_api import sync_playwright

from guidedmae.ui.app import serve
from guidedmae.ui.demo import Demo


def _timed_click(page, button: str, shown: str, argument=None) -> float:
    """Seconds from clicking `button` until the JavaScript function `shown` (of `argument`) holds."""
    start = time.perf_counter()
    page.click(button)
    page.wait_for_function(shown, arg=argument, timeout=120_000, polling="raf")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="docs/ui.png")
    parser.add_argument(
        "--repeat", type=int, default=10, help="Compare clicks timed (their median is printed)"
    )
    parser.add_argument("--scenes", type=int, default=200, help="scenes of the across-scenes panel")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as `guidedmae ui` serves the demo run (its run.threads)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(Demo.load(args.checkpoint), "127.0.0.1", port, block=False)
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#summary :text('held-out scene')", timeout=120_000)
            # Each seed draws another split of the budget: both pictures change.
            pictures = []
            for seed in range(1, args.repeat + 1):
                before = [page.get_attribute(f"#{side}-figure img", "src") for side in ("left", "right")]
                page.fill("#seed input", str(seed))
                changed = (
                    "before => ['left', 'right'].every((side, index) => {"
                    " const shown = document.querySelector(`#${side}-figure img`);"
                    " return shown && shown.complete && shown.src !== before[index]; })"
                )
                pictures.append(_timed_click(page, "#compare", changed, before))
            page.fill("#seed input", "0")
            page.click("#compare")
            page.wait_for_selector("#summary :text('Computed')", timeout=120_000)
            page.fill("#scenes input", str(args.scenes))
            across = _timed_click(
                page,
                "#compare-across",
                "() => document.querySelector('#across-table').innerText.includes('Over held-out')",
            )
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.close()
    print(
        f"wrote {args.out}; Compare until both pictures: median {statistics.median(pictures):.2f} s "
        f"(min {min(pictures):.2f}, max {max(pictures):.2f}, {len(pictures)} clicks); across {args.scenes} "
        f"scenes: {across:.1f} s"
    )


if __name__ == "__main__":
    main()
