"""Start-up time of the `connector` command: `connector --help` and `connector plugins`.

Each command runs --repeat times as a fresh process (after one unmeasured warm-up run that
fills the OS file cache and the .pyc files), with every bundled plugin loaded (no
CONNECTOR_LOAD_PLUGINS / CONNECTOR_BLOCK_PLUGINS), from a temp dir so no connector.db or
key file of the checkout is touched. Prints min, median and max wall time of each, and the
modules `connector --help` imports (python -X importtime, the ten slowest cumulative).
The issue's target: `connector --help` under 0.5 s.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import (  # noqa: E402
    CONNECTOR, PYTHON, TempDir, median, on_sigterm, print_machine, run_main,
)

COMMANDS = {"connector --help": ["--help"], "connector plugins": ["plugins"]}


def clean_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CONNECTOR_LOAD_PLUGINS", "CONNECTOR_BLOCK_PLUGINS",
                        "CONNECTOR_PLUGINS_DIR")}
    env["CONNECTOR_DATABASE_URL"] = f"sqlite:///{tmp / 'connector.db'}"
    return env


def time_once(args, env, cwd) -> float:
    t0 = time.perf_counter()
    subprocess.run([CONNECTOR, *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def slowest_imports(env, cwd, count: int = 10) -> list[tuple[float, str]]:
    """Top-level packages by cumulative import time when `connector --help` runs."""
    code = "import sys; from connector.cli import main; sys.argv=['connector','--help']; main()"
    proc = subprocess.run([PYTHON, "-X", "importtime", "-c", code], env=env, cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    best: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.split(":", 1)[1].split("|")
        name = name.strip()
        if "." in name and not name.startswith("connector."):
            continue  # a submodule: its package's figure includes it
        best[name] = max(best.get(name, 0.0), int(cumulative) / 1e6)
    return sorted(((s, n) for n, s in best.items()), reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each (default 7)")
    args = parser.parse_args()
    on_sigterm()
    print_machine()
    results = {}
    with TempDir("bench-startup-") as tmp:
        env = clean_env(tmp)
        for name, cmd in COMMANDS.items():
            time_once(cmd, env, tmp)  # warm-up
            times = [time_once(cmd, env, tmp) for _ in range(args.repeat)]
            results[name] = times
            print(f"{name}: median {1000 * median(times):.0f} ms (min "
                  f"{1000 * min(times):.0f}, max {1000 * max(times):.0f}, n={len(times)})")
        print("slowest top-level imports of `connector --help` (cumulative):")
        for seconds, module in slowest_imports(env, tmp):
            print(f"  {1000 * seconds:6.0f} ms  {module}")
    helptime = median(results["connector --help"])
    verdict = "meets" if helptime < 0.5 else "misses"
    print(f"startup: --help {1000 * helptime:.0f} ms ({verdict} the 500 ms target), plugins "
          f"{1000 * median(results['connector plugins']):.0f} ms")
    return 0


if __name__ == "__main__":
    run_main(main)
