"""Structured, located validation errors: ``{message, code, errors: [{type, detail, location}]}``.

The national catalogue (seed 004) reports validation failures in this shape; datasync uses the
same shape for its own catalogue, settings and publish errors, so a tool reading ``--json`` output
handles every kind of bad input one way. ``location`` is a JSON pointer (RFC 6901), e.g.
``/datasets/3/code_field`` into the catalogue file, or ``/keyword/2`` into a catalogue record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One located problem; ``type`` is a short rule slug (``max_length``, ``enum``, ``unknown_key``...)."""

    type: str
    detail: str
    location: str = ""

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "detail": self.detail, "location": self.location}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Problem:
        return cls(str(data.get("type", "")), str(data.get("detail", "")), str(data.get("location", "")))


def pointer(*parts: str | int) -> str:
    """A JSON pointer to ``parts`` (``~`` and ``/`` escaped as RFC 6901 says)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def problem_document(message: str, code: str, problems: Iterable[Problem]) -> dict[str, Any]:
    """The error document; a message without located problems still lists itself as one problem."""
    errors = [problem.to_json() for problem in problems] or [Problem("invalid", message).to_json()]
    return {"message": message, "code": code, "errors": errors}
