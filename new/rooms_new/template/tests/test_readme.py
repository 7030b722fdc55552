"""The README's examples: every Python block marked `<!-- tests/test_readme.py runs this block -->` runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- tests/test_readme.py runs this block -->"
BLOCKS = re.findall(rf"^{re.escape(MARK)}\n```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.M | re.S)


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) == README.read_text(encoding="utf-8").count(MARK) >= 1


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block-{n}" for n in range(1, len(BLOCKS) + 1)])
def test_a_readme_block_runs(code: str) -> None:
    exec(compile(code, f"{README.name} block", "exec"), {"__name__": "readme_block"})
