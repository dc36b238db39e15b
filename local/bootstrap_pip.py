"""Installs pip into a venv created --without-pip, from pip's own wheel on PyPI."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

INDEX = os.environ.get("PIP_BOOTSTRAP_JSON", "https://pypi.org/pypi/pip/json")


def main() -> None:
    with urllib.request.urlopen(INDEX, timeout=60) as response:
        release = json.load(response)
    wheel = next(
        f for f in release["urls"] if f["packagetype"] == "bdist_wheel" and f["filename"].endswith("py3-none-any.whl")
    )
    with urllib.request.urlopen(wheel["url"], timeout=120) as response:
        payload = response.read()
    if hashlib.sha256(payload).hexdigest() != wheel["digests"]["sha256"]:
        sys.exit(f"bootstrap_pip: checksum mismatch for {wheel['filename']}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, wheel["filename"])
        with open(path, "wb") as out:
            out.write(payload)
        # A wheel is a zip that Python can run: pip installs itself from its own wheel.
        subprocess.run(
            [sys.executable, f"{path}/pip", "install", "--quiet", "--no-index", path],
            check=True,
        )


if __name__ == "__main__":
    main()
