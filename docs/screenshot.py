"""Render `connector demo`'s terminal output to docs/images/demo.png.

Run it from anywhere, with the environment where connector is installed::

    python docs/screenshot.py                 # writes docs/images/demo.png
    python docs/screenshot.py --out /tmp/demo.png --keep-html

It runs the demo, writes its output into a terminal-looking HTML page, and photographs the
page with Debian's headless chromium (installed with apt-get when /usr/bin/chromium is
missing and we are root; Playwright cannot download browsers here). The tests never need it.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "images" / "demo.png"
CHROMIUM = "/usr/bin/chromium"
WIDTH = 1100

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>connector demo</title>
<style>
  html, body {{ margin: 0; padding: 0; background: #1e1f24; }}
  .bar {{ height: 36px; background: #33353d; display: flex; align-items: center;
          padding: 0 14px; font: 13px/1 "DejaVu Sans", sans-serif; color: #c9ccd4; }}
  .dot {{ width: 12px; height: 12px; border-radius: 50%; margin-right: 8px; }}
  .title {{ flex: 1; text-align: center; margin-right: 60px; }}
  pre {{ margin: 0; padding: 16px 20px 20px; color: #d7dae0; white-space: pre-wrap;
         word-break: break-all; font: 14px/21px "DejaVu Sans Mono", "Liberation Mono",
         monospace; }}
  .prompt {{ color: #7fb4ff; }}
  .ok {{ color: #7ed491; font-weight: bold; }}
  .fail {{ color: #ff7b72; font-weight: bold; }}
  .last {{ color: #ffffff; font-weight: bold; }}
  .dim {{ color: #9aa0ab; }}
</style></head>
<body>
<div class="bar"><span class="dot" style="background:#ff5f57"></span>
<span class="dot" style="background:#febc2e"></span>
<span class="dot" style="background:#28c840"></span>
<span class="title">connector demo</span></div>
<pre id="term">{body}</pre>
<script>document.body.setAttribute("data-height",
  Math.ceil(document.documentElement.scrollHeight));</script>
</body></html>
"""


def demo_command() -> list[str]:
    """Return how to run `connector demo`: the script on PATH, beside this Python, or -c."""
    found = shutil.which("connector")
    if found:
        return [found, "demo"]
    beside = Path(sys.executable).with_name("connector")
    if beside.exists():
        return [str(beside), "demo"]
    return [sys.executable, "-c", "import sys; from connector.cli import main; "
            "sys.argv[0] = 'connector'; main()", "demo"]


def run_demo() -> tuple[int, str]:
    """Run the demo with no CONNECTOR_* settings leaking in; return (exit code, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    with tempfile.TemporaryDirectory(prefix="connector-shot-") as cwd:
        proc = subprocess.run(demo_command(), cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def to_html(output: str) -> str:
    """Colour the demo's lines the way a terminal would and wrap them in the page."""
    lines = [f'<span class="prompt">$</span> connector demo']
    for line in output.rstrip("\n").splitlines():
        text = html.escape(line)
        if line.startswith("ok "):
            text = '<span class="ok">ok</span>' + text[2:]
        elif line.startswith("FAIL"):
            text = '<span class="fail">FAIL</span>' + text[4:]
        elif line.startswith("demo: "):
            text = f'<span class="last">{text}</span>'
        elif line.startswith(("sandbox:", "connector:")):
            text = f'<span class="dim">{text}</span>'
        lines.append(text)
    return PAGE.format(body="\n".join(lines))


def chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0:
        sys.exit(f"{CHROMIUM} is missing; install it with: sudo apt-get install -y chromium")
    print("installing chromium with apt-get ...", file=sys.stderr)
    quiet = {"stdout": subprocess.DEVNULL}
    subprocess.run(["apt-get", "update", "-qq"], check=True, **quiet)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, **quiet,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return CHROMIUM


def chromium_args(binary: str, profile: str, height: int) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
            f"--window-size={WIDTH},{height}"]


def page_height(binary: str, page: Path, fallback: int) -> int:
    """Load the page once and read back the height its own script measured."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.run([*chromium_args(binary, profile, fallback), "--dump-dom",
                               page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'data-height="(\d+)"', proc.stdout)
    return int(match.group(1)) if match else fallback


def screenshot(binary: str, page: Path, out: Path, height: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.run([*chromium_args(binary, profile, height),
                               f"--screenshot={out}", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not out.exists():
        sys.exit(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    parser.add_argument("--keep-html", action="store_true", help="keep and print the HTML page")
    parser.add_argument("--allow-failure", action="store_true",
                        help="take the picture even when the demo fails")
    args = parser.parse_args(argv)

    code, output = run_demo()
    print(output, end="")
    if code != 0 and not args.allow_failure:
        print(f"connector demo exited {code}; no screenshot taken", file=sys.stderr)
        return 1
    binary = chromium()
    workdir = Path(tempfile.mkdtemp(prefix="connector-shot-"))
    page = workdir / "demo.html"
    page.write_text(to_html(output))
    estimate = 36 + 36 + 21 * (output.count("\n") + 2)
    height = page_height(binary, page, estimate)
    screenshot(binary, page, args.out.resolve(), height)
    print(f"wrote {args.out} ({WIDTH}x{height})")
    if args.keep_html:
        print(f"kept {page}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
