"""Render a run's report.html in headless chromium and save a PNG screenshot (plus a JSON record).

    python bench/report_screenshot.py [RUN_DIR]   (default runs/demo)

The report is rendered fresh from the run's files into a temporary directory (the run directory is
left untouched), then opened with file:// in a throwaway chromium profile with networking
background services off, so the screenshot proves the page needs nothing outside itself.
Needs Debian's chromium (`apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from silverbullet.report import load_run  # noqa: E402
from silverbullet.report.html import render_html  # noqa: E402

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium not found: apt-get install -y chromium")


def screenshot(html: str, out: Path, width: int, height: int) -> dict:
    chromium = find_chromium()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        profile = Path(tmp) / "profile"
        cmd = [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out.resolve()}",
            f"--window-size={width},{height}",
            page.as_uri(),
        ]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        seconds = time.time() - t0
    if proc.returncode != 0 or not out.is_file():
        sys.exit(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    return {"chromium": version, "render_seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/demo")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "report_screenshot.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = load_run(Path(args.run_dir))
    html = render_html(data)
    render_s = time.time() - t0
    info = screenshot(html, out, args.width, args.height)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {
        "command": "python bench/report_screenshot.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "run_dir": str(args.run_dir),
        "run": data.summary.get("run"),
        "n": data.summary["n"],
        "flips": len(data.flips),
        "html_bytes": len(html.encode("utf-8")),
        "external_refs": html.count("http://") + html.count("https://"),
        "report_seconds": round(render_s, 2),
        "window": [args.width, args.height],
        "png": str(out.relative_to(ROOT)) if out.resolve().is_relative_to(ROOT) else str(out),
        "png_bytes": out.stat().st_size,
        "python": platform.python_version(),
        **info,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
