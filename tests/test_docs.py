"""The README's configuration table and .env.example list every variable memoryd reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READ = re.compile(r'e\.\w+\(\s*"([A-Z][A-Z0-9_]+)"')


def _variables() -> set[str]:
    names = set(READ.findall((ROOT / "memoryd" / "config.py").read_text()))
    assert len(names) > 20, "the pattern no longer finds the variables in config.py"
    return names


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_variable_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = sorted(name for name in _variables() if name not in text)
    assert not missing, f"{document} does not mention {missing}"
