"""Rebuild the committed test fixtures under tests/fixtures with the real frameworks.

    python scripts/make_fixtures.py            # every group
    python scripts/make_fixtures.py keras2     # one group

Each group is a module scripts/fixtures/<group>.py with a function make(out_dir: Path)
writing into tests/fixtures/<group>/ (and a README.md there saying how each file was made).
Fixed seeds: running it twice gives the same tensors.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
GROUPS_DIR = Path(__file__).resolve().parent / "fixtures"


def groups() -> list[str]:
    return sorted(p.stem for p in GROUPS_DIR.glob("*.py") if not p.stem.startswith("_"))


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.path.insert(0, str(GROUPS_DIR.parent))
    wanted = argv or groups()
    unknown = set(wanted) - set(groups())
    if unknown:
        print(f"unknown fixture groups {sorted(unknown)}; known: {groups()}", file=sys.stderr)
        return 2
    for name in wanted:
        out = FIXTURES / name
        out.mkdir(parents=True, exist_ok=True)
        importlib.import_module(f"fixtures.{name}").make(out)
        print(f"made {name} fixtures in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
