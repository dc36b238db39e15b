"""The test run itself: fastest suites first, and every marker pyproject.toml declares is used."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.conftest import SUITES, TESTS_DIR

OPTIONS = tomllib.loads((TESTS_DIR.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]


def test_every_folder_of_tests_has_its_place_in_the_order() -> None:
    """A suite the order does not name would run after the chaos suite, the slowest."""
    skipped = {Path(p).name for p in OPTIONS["norecursedirs"]}
    folders = {p.parent.relative_to(TESTS_DIR).parts[0] for p in TESTS_DIR.glob("*/**/test_*.py")}
    assert folders - skipped == set(SUITES)
    assert SUITES[0] == "unit" and SUITES[-1] == "chaos"


def test_every_declared_marker_is_used() -> None:
    declared = {line.split(":")[0] for line in OPTIONS["markers"]}
    sources = "\n".join(path.read_text() for path in TESTS_DIR.rglob("test_*.py"))
    used = set(re.findall(r"pytest\.mark\.([a-z_]+)", sources))
    assert declared - used == set()
