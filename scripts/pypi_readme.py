"""PyPI's page for cnncompare: README.md without the Space's YAML header, its relative links made absolute.

    python scripts/pypi_readme.py          # writes docs/PYPI.md (pyproject.toml's `readme`)
    python scripts/pypi_readme.py --check  # exit 1 when docs/PYPI.md is not README.md's current version

Images link to the raw file on the project's Source URL (pyproject.toml's [project.urls]), other files to their page.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "PYPI.md"
_LINK = re.compile(r"(!?)\[([^\]]*)\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def source_url() -> str:
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    return urls["Source"].rstrip("/")


def pypi_readme(text: str, base: str) -> str:
    """`text` (README.md) without its leading `---` YAML block, every relative link and image made absolute."""
    if text.startswith("---\n"):
        text = text[text.index("\n---\n", 4) + 5 :].lstrip("\n")

    def absolute(m: re.Match) -> str:
        bang, label, target = m.groups()
        kind = "raw" if bang else "blob"
        return f"{bang}[{label}]({base}/{kind}/main/{target.removeprefix('./')})"

    return _LINK.sub(absolute, text)


def main(argv: list[str]) -> int:
    made = pypi_readme((ROOT / "README.md").read_text(), source_url())
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != made:
            print("docs/PYPI.md is out of date: run python scripts/pypi_readme.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(made)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
