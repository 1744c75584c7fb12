"""docs/configuration.md is generated from the settings and must not drift from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from shopipe.config import all_settings
from shopipe.configdoc import markdown

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == markdown(), "run: shopipe config docs > docs/configuration.md"


@pytest.mark.parametrize("cls", all_settings())
def test_every_duration_size_and_count_field_names_its_unit(cls: type) -> None:
    for field in dataclasses.fields(cls):
        assert field.metadata.get("help"), f"{field.name} has no help"
        if field.type in ("int", "float"):
            assert field.metadata.get("unit"), f"{cls.__name__}.{field.name} has no unit"
