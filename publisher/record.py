"""A dataset as a national-catalogue record (seed 004), and the checks the catalogue would make.

The record is built from the store's row (what the platform shows), the catalogue file's
``[publish]`` defaults and a few settings. It is checked locally against every length limit,
enumeration and member list of the seed before anything is sent, so an invalid record is reported
with its field and rule and the catalogue never sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.upsert import DatasetSpec
from publisher.defaults import ACCESS_RIGHTS, RECORD_TYPES, SECURITY_CLASSIFICATIONS, PublishDefaults
from scrapers.errors import redact
from worker.problems import Problem, pointer

STATUSES = ("Draft", "Published", "Withdrawn", "Deleted")
DESCRIPTION_LIMIT = 4096
DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
NAMED_FREQUENCIES = {1.0: "hourly", 24.0: "daily", 168.0: "weekly", 720.0: "monthly", 8760.0: "annually"}


@dataclass(frozen=True)
class Contact:
    """The contact point from settings, used when the ``[publish]`` table names none."""

    name: str = ""
    email: str = ""


@dataclass(frozen=True)
class DatasetFacts:
    """What a record says about one dataset: the store row's metadata and when it was issued and last changed."""

    spec: DatasetSpec
    issued: datetime
    modified: datetime


def build_record(
    facts: DatasetFacts, defaults: PublishDefaults, contact: Contact, dataset_api_url: str | None
) -> dict[str, Any]:
    """The full record datasync wants the catalogue to hold for this dataset (status ``Published``)."""
    spec = facts.spec
    record: dict[str, Any] = {
        "supplierIdentifier": spec.key,
        "modified": timestamp(facts.modified),
        "issued": timestamp(facts.issued),
        "status": "Published",
        "title": spec.name,
        "description": plain_text(spec.description) or f"{spec.name}: an option list kept current by datasync.",
        "type": defaults.type,
        "theme": list(defaults.themes),
        "keyword": list(spec.tags),
        "contactPoint": _contact_point(defaults, contact),
        "license": defaults.licence.model_dump(),
        "publisher": defaults.publisher,
        "creator": defaults.creator_for(spec.category),
        "securityClassification": defaults.security_classification,
        "accessRights": defaults.access_rights,
        "distribution": _distributions(spec, dataset_api_url),
        "updateFrequency": update_frequency(spec.sync_frequency_hours),
    }
    return {name: value for name, value in record.items() if value not in (None, [])}


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain_text(text: str) -> str:
    """Descriptions go out as plain text: markup dropped, whitespace runs collapsed."""
    if "<" in text:
        from bs4 import BeautifulSoup  # only for markup; `status` and `sync` read this module without it

        text = BeautifulSoup(text, "html.parser").get_text(" ")
    return " ".join(text.split())


def update_frequency(hours: float | None) -> str | None:
    if hours is None:
        return None
    if hours in NAMED_FREQUENCIES:
        return NAMED_FREQUENCIES[hours]
    if hours >= 48 and hours % 24 == 0:
        return f"every {hours / 24:g} days"
    return f"every {hours:g} hours"


def _contact_point(defaults: PublishDefaults, contact: Contact) -> list[dict[str, str]]:
    if defaults.contact_point:
        return [point.model_dump() for point in defaults.contact_point]
    if contact.email:
        return [{"name": contact.name or contact.email, "email": contact.email, "role": "contact"}]
    return []


def _distributions(spec: DatasetSpec, dataset_api_url: str | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if dataset_api_url:
        found.append(
            {
                "title": "Dataset API",
                "description": "The option list as JSON from the platform's dataset API",
                "accessURL": f"{dataset_api_url.rstrip('/')}/{spec.key}/",
                "format": "API",
                "mediaType": ["application/json"],
            }
        )
    source = spec.reference_url
    if source and redact(source) == source:  # a URL carrying a credential is never published
        if spec.source_type == "api":
            where = {"accessURL": source, "format": "API", "mediaType": ["application/json"]}
        else:
            where = {"downloadURL": source, "format": "Web page", "mediaType": ["text/html"]}
        found.append({"title": "Source", "description": "The upstream source the list is kept current from", **where})
    return found


# --- The catalogue's rules (seed 004), checked before sending -------------------------------------

Check = Callable[[Any, str], Iterator[Problem]]


def _string(limit: int | None = None, choices: tuple[str, ...] = ()) -> Check:
    def check(value: Any, where: str) -> Iterator[Problem]:
        if not isinstance(value, str):
            yield Problem("type", f"{where} must be a string", where)
        elif limit is not None and len(value) > limit:
            yield Problem("max_length", f"{where} is {len(value)} characters long; the limit is {limit}", where)
        elif choices and value not in choices:
            yield Problem("enum", f"{where} is {value!r}; allowed: {', '.join(choices)}", where)

    return check


def _date_time(value: Any, where: str) -> Iterator[Problem]:
    if not isinstance(value, str) or not DATE_TIME.fullmatch(value):
        yield Problem("date_time", f"{where} must be an ISO 8601 date-time string", where)


def _array(item: Check) -> Check:
    def check(value: Any, where: str) -> Iterator[Problem]:
        if not isinstance(value, list):
            yield Problem("type", f"{where} must be an array", where)
            return
        for index, element in enumerate(value):
            yield from item(element, f"{where}/{index}")

    return check


def _object(members: dict[str, Check] | None) -> Check:
    """An object with exactly these optional members (any members when ``members`` is None)."""

    def check(value: Any, where: str) -> Iterator[Problem]:
        if not isinstance(value, dict):
            yield Problem("type", f"{where or 'the record'} must be an object", where)
            return
        if members is None:
            return
        for name, element in value.items():
            inner = where + pointer(name)
            if name not in members:
                yield Problem("unknown_member", f"{inner} is not a member the catalogue knows", inner)
            else:
                yield from members[name](element, inner)

    return check


RECORD_RULES: dict[str, Check] = {
    "title": _string(200),
    "type": _string(choices=RECORD_TYPES),
    "accessRights": _string(choices=ACCESS_RIGHTS),
    "contactPoint": _array(_object({"name": _string(), "email": _string(), "role": _string()})),
    "created": _date_time,
    "creator": _string(75),
    "description": _string(DESCRIPTION_LIMIT),
    "identifier": _string(50),
    "issued": _date_time,
    "license": _object(None),
    "keyword": _array(_string(75)),
    "modified": _date_time,
    "publisher": _string(75),
    "securityClassification": _string(choices=SECURITY_CLASSIFICATIONS),
    "status": _string(choices=STATUSES),
    "supplierIdentifier": _string(50),
    "theme": _array(_string()),
    "distribution": _array(
        _object(
            {
                "accessService": _array(_string()),
                "accessURL": _string(),
                "description": _string(),
                "downloadURL": _string(),
                "format": _string(),
                "mediaType": _array(_string()),
                "title": _string(),
            }
        )
    ),
    "updateFrequency": _string(),
}


def check_record(record: dict[str, Any]) -> list[Problem]:
    """Every way ``record`` breaks the catalogue's rules, each located by a JSON pointer."""
    return list(_object(RECORD_RULES)(record, ""))
