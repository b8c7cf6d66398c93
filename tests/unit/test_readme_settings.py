"""The README documents every setting (they drifted before: 18 of 29 were listed)."""

from __future__ import annotations

from pathlib import Path

from app.core.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [name for name in Settings.model_fields if f"`GATEKEEPER_{name.upper()}`" not in text]
    assert not missing, f"settings missing from README.md: {missing}"
