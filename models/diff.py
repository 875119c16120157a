"""What changed between two options lists, in the terms operators think in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptionsDiff:
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    relabelled: dict[str, tuple[str, str]] = field(default_factory=dict)
    reordered: bool = False

    @classmethod
    def between(cls, old: dict[str, str], new: dict[str, str], *, compare_order: bool = True) -> OptionsDiff:
        """``compare_order=False`` when ``old`` came back in an order that is not the source's (jsonb)."""
        common = [code for code in new if code in old]
        return cls(
            added={code: label for code, label in new.items() if code not in old},
            removed={code: label for code, label in old.items() if code not in new},
            relabelled={code: (old[code], new[code]) for code in common if old[code] != new[code]},
            reordered=compare_order and common != [code for code in old if code in new],
        )

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.relabelled or self.reordered)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed), "relabelled": len(self.relabelled)}

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "relabelled": {code: {"from": old, "to": new} for code, (old, new) in self.relabelled.items()},
            "reordered": self.reordered,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> OptionsDiff:
        if not data:
            return cls()
        return cls(
            added=dict(data.get("added", {})),
            removed=dict(data.get("removed", {})),
            relabelled={code: (pair["from"], pair["to"]) for code, pair in data.get("relabelled", {}).items()},
            reordered=bool(data.get("reordered", False)),
        )
