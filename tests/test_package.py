"""The package as PyPI and a new user see it: its metadata, licence, changelog and long description."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pypi_readme_is_the_readme_without_the_space_header_and_with_absolute_links():
    sys.path.insert(0, str(ROOT / "scripts"))
    from pypi_readme import OUT, pypi_readme, source_url

    made = pypi_readme((ROOT / "README.md").read_text(), source_url())
    assert OUT.read_text() == made, "docs/PYPI.md is out of date: run python scripts/pypi_readme.py"
    assert not made.startswith("---") and "sdk_version" not in made.split("\n## ")[0]
    links = re.findall(r"\]\(([^)\s]+)\)", made)
    assert links and all(t.startswith(("https://", "#", "mailto:")) for t in links), links
    assert "![Architectures tab](https://" in made


def test_the_wheel_carries_licence_classifiers_urls_and_the_pypi_page(tmp_path):
    """A real wheel build (setuptools from the package index, as `pip install .` does)."""
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = tmp_path.glob("cnncompare-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        names = zf.namelist()
    head, _, description = meta.partition("\n\n")
    assert "License-Expression: Apache-2.0" in head and "Classifier: Intended Audience :: Education" in head
    assert "Project-URL: Source, https://" in head and "Author: The cnncompare authors" in head
    assert description.startswith("# cnncompare") and "sdk_version" not in description
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    version = re.search(r"^Version: (.+)$", head, re.M).group(1)
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()  # every version has its entry
