"""What one sync (or review action) ended in: returned to the CLI, the tasks and the status API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.diff import OptionsDiff


@dataclass
class SyncOutcome:
    key: str
    status: str
    version: int | None = None
    options: int | None = None
    diff: OptionsDiff = field(default_factory=OptionsDiff)
    warnings: tuple[str, ...] = ()
    error_kind: str | None = None
    error: str | None = None
    transient: bool = False
    retry_after: float | None = None
    will_retry: bool = False
    run_id: int | None = None
    bytes_fetched: int | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncOutcome:
        return cls(
            key=data["key"],
            status=data["status"],
            version=data.get("version"),
            options=data.get("options"),
            diff=OptionsDiff.from_json(data.get("changes")),
            warnings=tuple(data.get("warnings", ())),
            error_kind=data.get("error_kind"),
            error=data.get("error"),
            will_retry=data.get("will_retry", False),
            run_id=data.get("run_id"),
            bytes_fetched=data.get("bytes_fetched"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "version": self.version,
            "options": self.options,
            **{f"codes_{name}": count for name, count in self.diff.counts().items()},
            "changes": self.diff.to_json(),
            "warnings": list(self.warnings),
            "error_kind": self.error_kind,
            "error": self.error,
            "will_retry": self.will_retry,
            "run_id": self.run_id,
            "bytes_fetched": self.bytes_fetched,
        }
