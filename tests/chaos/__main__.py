"""`./taskw chaos`: each fault under load on a fresh local stack; prints what customers saw and what was lost.

    python -m tests.chaos [--only postgres,mongodb,kafka,smtp,smtp-refusal]

Asserts nothing: the chaos tests (tests/chaos/test_chaos.py) hold the promises; this prints figures.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from local.stack import Stack, StackSettings
from tests.chaos.driver import FAULTS, table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--only", default=",".join(FAULTS), help=f"faults to run, of {', '.join(FAULTS)}")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; choose from {list(FAULTS)}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from tests.chaos.driver import run_fault

    with tempfile.TemporaryDirectory(prefix="shop-chaos-") as folder:
        stack = Stack(StackSettings(data_dir=Path(folder), port=0, durable=True, environ={}))
        stack.start()
        reports = []
        try:
            for name in names:
                print(f"running: {FAULTS[name].name} ...", file=sys.stderr, flush=True)
                report = run_fault(stack, name)
                reports.append(report)
                for problem in report.problems():
                    print(f"  {report.fault}: {problem}", file=sys.stderr, flush=True)
        finally:
            stack.stop()
    print(table(reports))


if __name__ == "__main__":
    main()
