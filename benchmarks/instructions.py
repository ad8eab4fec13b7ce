"""Instructions per durable step, counted by valgrind's callgrind: a figure that does not move
with the machine's load, for telling a change's cost apart from noise.

Usage: python benchmarks/instructions.py [--store memory|sqlite|postgres] [--python PY]
           [--postgres URL]

Runs one workflow of trivial activities (``sdk_durable.noops``, by ``durable.execute``) under
``valgrind --tool=callgrind`` twice, with 10 and with 510 steps, each in a fresh process on a
fresh store, and prints ``(count(510) - count(10)) / 500``: the instructions one step costs
this process, start-up and imports cancelled out. On Postgres only the client is counted (the
server is another process), and the count varies by a few per cent between runs (how often the
event loop polls depends on the server's timing). ``--python``: the interpreter of another
virtual environment, to count another installed version of durable (run this from outside the
checkout so that it imports the installed one).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from suite import SERVER, _fresh_database

SMALL, LARGE = 10, 510

_CHILD = """
import sys, anyio, durable
sys.path.insert(0, sys.argv[3])  # this folder: the workflow of the suite's scenarios
from sdk_durable import noops
from durable.backends import MemoryStore, SQLStore

async def main(n: int, url: str) -> None:
    store = MemoryStore() if url == "memory" else SQLStore(url)
    async with store:
        await durable.execute(noops, n, id="x", store=store)

anyio.run(main, int(sys.argv[1]), sys.argv[2])
"""


def _count(python: str, steps: int, url: str, workdir: Path) -> int:
    script = workdir / "child.py"
    script.write_text(_CHILD)
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, str(script),
         str(steps), url, str(Path(__file__).parent)],
        cwd=workdir, capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("memory", "sqlite", "postgres"), default="sqlite")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--postgres", default=SERVER, help="server to create databases on")
    args = parser.parse_args()
    counts = []
    for steps in (SMALL, LARGE):
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if args.store == "postgres":
                with _fresh_database(args.postgres) as url:
                    counts.append(_count(args.python, steps, url, workdir))
            else:
                url = "memory" if args.store == "memory" else f"sqlite:///{workdir / 's.db'}"
                counts.append(_count(args.python, steps, url, workdir))
    per_step = (counts[1] - counts[0]) / (LARGE - SMALL)
    print(f"{args.store}: {per_step / 1000:,.0f}k instructions per step")


if __name__ == "__main__":
    main()
