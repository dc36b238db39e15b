"""The README stays true: its configuration table and commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from functions.shared.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_the_code_reads_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    assert set(SETTINGS) - documented == set()


def test_the_two_commands_are_the_ones_ci_runs() -> None:
    assert "./taskw start" in README and "./taskw test" in README
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README


def test_every_task_the_readme_mentions_exists() -> None:
    taskfile = (ROOT / "Taskfile.yml").read_text()
    for task in set(re.findall(r"\./taskw ([a-z:]+)", README)):
        assert re.search(rf"^  {re.escape(task)}:$", taskfile, flags=re.MULTILINE), task
