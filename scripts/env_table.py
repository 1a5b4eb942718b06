"""Write the README's table of environment variables from `Env.variables()` (the one definition of each).

.venv/bin/python scripts/env_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnncompare.env import Env  # noqa: E402

START, END = "| variable | default | meaning |", "## How the code is laid out"


def table() -> str:
    rows = [START, "|---|---|---|"] + [
        f"| `{var}` | {default} | {meaning} |" for var, default, meaning in Env.variables()
    ]
    return "\n".join(rows) + "\n\n"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    a, b = text.index(START), text.index(END)
    readme.write_text(text[:a] + table() + text[b:])
    print("README.md: the table of environment variables is written")


if __name__ == "__main__":
    main()
