"""Mapping flat records (CSV rows, ArcGIS feature attributes) to options by field name.

One code field, and either one label field or a ``label_template`` such as
``"{ward_name} ({borough_name})"``. The fields are checked against what the source actually has
before any row is read, so a renamed column fails naming the columns that exist instead of
producing a list of blanks.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scrapers.errors import PermanentError
from scrapers.normalise import RawOption


@dataclass(frozen=True)
class FieldMap:
    code: str
    label: str | None = None
    template: str | None = None

    @property
    def needed(self) -> tuple[str, ...]:
        """Every field a row must have, code first, in the order the catalogue names them."""
        names = [self.code, *([self.label] if self.label else template_fields(self.template or ""))]
        return tuple(dict.fromkeys(names))

    def check(self, available: Iterable[str], where: str, noun: str = "column") -> None:
        have = list(available)
        missing = [name for name in self.needed if name not in have]
        if missing:
            raise PermanentError(
                "missing_column",
                f"{where}: no {noun} {', '.join(map(repr, missing))}; it has {', '.join(map(repr, have)) or 'none'}",
            )

    def option(self, record: Mapping[str, Any]) -> RawOption:
        """The row as an option; the fields were checked with ``check`` first."""
        code = _text(record[self.code])
        if self.template is not None:
            label = self.template.format_map({name: _text(record[name]) for name in self.needed})
        else:
            label = _text(record[self.label or self.code])
        return RawOption(code=code, label=label)


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names a label template uses (a bad template is a ``ValueError``)."""
    names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    if any(not name or any(char in name for char in ".[]") for name in names):
        raise ValueError("placeholders must name a field, e.g. {ward_name} (no dots, brackets or empty braces)")
    return names


def check_template(template: str | None) -> str | None:
    """Validator for ``label_template`` catalogue keys: at least one placeholder, all named."""
    if template is not None and not template_fields(template):
        raise ValueError("must name at least one field in braces, e.g. '{ward_name} ({borough_name})'")
    return template


def _text(value: Any) -> str:
    """Codes and labels as the source shows them; a null is empty (normalise reports the row)."""
    return "" if value is None else str(value)
