"""Screenshots of the dashboards of a finished run, for the README (not part of CI).

    apt-get install -y chromium            # once
    .venv/bin/python docs/screenshots.py runs/<name> [--out docs/img]

Starts `launch.py dashboard RUN_DIR`, lets headless Chromium render each page (TensorBoard's scalars filtered
to the objective, optuna-dashboard's study list and first study), writes one PNG per page, and stops the
dashboards with SIGINT (what Ctrl-C sends).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WINDOW = "1400,900"
RENDER_MS = 20000  # virtual time Chromium gives the pages' scripts to fetch and draw


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("no Chromium: apt-get install -y chromium")


def read_urls(process: subprocess.Popen) -> dict[str, str]:
    urls = {}
    for line in process.stdout:
        print(line, end="")
        if line.startswith(("TensorBoard:", "Optuna dashboard:")):
            urls[line.split(":")[0]] = line.split()[-1]
        if line.startswith("run:"):
            return urls
    sys.exit("launch.py dashboard stopped before printing its URLs")


def shoot(browser: str, url: str, png: Path) -> None:
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={WINDOW}", f"--virtual-time-budget={RENDER_MS}", f"--screenshot={png}", url],
                   check=True, capture_output=True, timeout=180)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    process = subprocess.Popen([sys.executable, "launch.py", "dashboard", args.run_dir], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        urls = read_urls(process)
        tensorboard, optuna_ui = urls["TensorBoard"], urls["Optuna dashboard"]
        shoot(browser, f"{tensorboard}#scalars&tagFilter=objective&_smoothingWeight=0", out / "tensorboard.png")
        shoot(browser, f"{optuna_ui}dashboard", out / "optuna-studies.png")
        with urllib.request.urlopen(f"{optuna_ui}api/studies", timeout=10) as response:
            first = json.load(response)["study_summaries"][0]
        shoot(browser, f"{optuna_ui}dashboard/studies/{first['study_id']}", out / "optuna-study.png")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
