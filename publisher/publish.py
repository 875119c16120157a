"""Publishing, top to bottom: build the record, check it, then create or minimally patch it.

Per dataset: the record is built from the store and checked locally (an invalid record is stored
as the dataset's error and nothing is sent); a record equal to the one the catalogue last accepted
costs no request at all; otherwise the remote record is read and only the members that differ are
sent as one JSON Merge Patch (or the record is created, falling back to a patch when the catalogue
already holds it). A dataset that left the catalogue file is patched to ``Withdrawn``.

Store sessions are short and never span a request, so publishing never holds the store's write
lock while the catalogue is slow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models.datasets import table_of
from models.schema import DatasetVersion, Publication
from models.types import utcnow
from models.upsert import load_dataset, spec_from_dataset
from publisher.client import CatalogueApiError, CatalogueClient, ClientConfig
from publisher.merge_patch import json_equal, merge_patch
from publisher.record import RECORD_RULES, Contact, DatasetFacts, build_record, check_record
from worker.catalogue import Catalogue
from worker.problems import Problem, pointer, problem_document
from worker.settings import Settings

SERVER_MEMBERS = frozenset({"identifier", "created"})  # the catalogue assigns these; never patched
MANAGED_MEMBERS = frozenset(RECORD_RULES) - SERVER_MEMBERS


class PublishConfigError(Exception):
    """Publishing cannot start: the settings are missing or the selection is wrong (exit 2)."""

    def __init__(self, message: str, code: str, errors: list[Problem]) -> None:
        super().__init__(message)
        self.document = problem_document(message, code, errors)


@dataclass
class PublishOutcome:
    key: str
    status: str
    catalogue_id: str | None = None
    patch: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "rejected", "invalid")

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "catalogue_id": self.catalogue_id,
            "patch": self.patch,
            "error": self.error,
        }


@dataclass
class Publisher:
    """Everything a publish run needs; the API client is opened only when a request is due."""

    catalogue: Catalogue
    sessions: sessionmaker[Session]
    settings: Settings
    client_factory: Callable[[], CatalogueClient] | None = None
    _client: CatalogueClient | None = field(default=None, init=False)

    def client(self) -> CatalogueClient:
        if self._client is None:
            self._client = (self.client_factory or (lambda: client_from_settings(self.settings)))()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def client_from_settings(settings: Settings) -> CatalogueClient:
    return CatalogueClient(client_config(settings))


def client_config(settings: Settings) -> ClientConfig:
    """The API client's configuration; raises ``PublishConfigError`` naming every missing setting."""
    url, client_id, secret = settings.publish_url, settings.publish_client_id, settings.publish_client_secret
    if not (url and client_id and secret):
        given = {
            "DATASYNC_PUBLISH_URL": url,
            "DATASYNC_PUBLISH_CLIENT_ID": client_id,
            "DATASYNC_PUBLISH_CLIENT_SECRET": secret,
        }
        missing = [name for name, value in given.items() if not value]
        raise PublishConfigError(
            f"{'publishing is off' if not url else 'publishing is not configured'}: set {', '.join(missing)}",
            "settings_invalid",
            [Problem("missing", f"{name} is not set", pointer(name)) for name in missing],
        )
    base = url.rstrip("/")
    return ClientConfig(
        base_url=base,
        token_url=settings.publish_token_url or f"{base}/ClientAuth/get-token",
        client_id=client_id,
        client_secret=secret.get_secret_value(),
        user_agent=settings.user_agent,
        timeout=(settings.connect_timeout, settings.read_timeout),
        max_attempts=settings.publish_max_attempts,
        backoff_seconds=settings.publish_retry_backoff_seconds,
        wait_max_seconds=settings.publish_retry_wait_max_seconds,
    )


def select_keys(publisher: Publisher, keys: list[str] | None) -> list[str]:
    """Named keys, or (None) every catalogue dataset plus every published one that left the catalogue."""
    in_catalogue = [entry.key for entry in publisher.catalogue.entries]
    with publisher.sessions() as session:
        published = [
            p.dataset_key for p in session.scalars(select(Publication).where(Publication.catalogue_id.is_not(None)))
        ]
    if keys is None:
        return in_catalogue + sorted(set(published) - set(in_catalogue))
    unknown = [key for key in keys if key not in in_catalogue and key not in published]
    if unknown:
        raise PublishConfigError(
            f"{publisher.catalogue.path}: no dataset with key {', '.join(map(repr, unknown))}",
            "catalogue_invalid",
            [Problem("unknown_dataset", f"no dataset with key {key!r}", pointer("datasets")) for key in unknown],
        )
    return list(dict.fromkeys(keys))


def keys_with_new_versions(publisher: Publisher) -> list[str]:
    """For the beat task: datasets whose current version was neither published nor rejected yet, and
    published datasets that left the catalogue but are not withdrawn yet."""
    entries = publisher.catalogue.by_key()
    with publisher.sessions() as session:
        columns = table_of(session).table.c
        versions = {key: version for key, version in session.execute(select(columns.key, columns.version))}
        publications = {p.dataset_key: p for p in session.scalars(select(Publication))}
    keys = []
    for key in select_keys(publisher, None):
        known = publications.get(key)
        if key not in entries:
            if known is not None and known.status != "Withdrawn":
                keys.append(key)
        elif key in versions and (
            known is None or versions[key] not in (known.published_version, known.rejected_version)
        ):
            keys.append(key)
    return keys


def publish_new_versions(
    catalogue: Catalogue, sessions: sessionmaker[Session], settings: Settings
) -> list[PublishOutcome]:
    """The beat task's work (``DATASYNC_PUBLISH_AUTO``): every dataset with a version the catalogue has not seen."""
    publisher = Publisher(catalogue, sessions, settings)
    try:
        return publish_many(publisher, keys_with_new_versions(publisher))
    finally:
        publisher.close()


def publish_many(publisher: Publisher, keys: list[str], *, dry_run: bool = False) -> list[PublishOutcome]:
    if not dry_run:
        client_config(publisher.settings)  # fail before any work when publishing is off
    return [publish_one(publisher, key, dry_run=dry_run) for key in keys]


def publish_one(publisher: Publisher, key: str, *, dry_run: bool = False) -> PublishOutcome:
    """Bring one dataset's catalogue record in line with the store; never raises for API problems."""
    desired, version, known = _desired(publisher, key)
    if desired is None:
        return PublishOutcome(key, "skipped", known.catalogue_id if known else None)
    problems = check_record(desired)
    if problems:
        return _record_failure(publisher, key, version, "invalid", _invalid(key, problems))
    if known is not None and known.catalogue_id and known.record is not None and json_equal(known.record, desired):
        if known.error_message is not None:
            _record_success(publisher, key, known.catalogue_id, desired, version, clear_only=True)
        return PublishOutcome(key, "unchanged", known.catalogue_id)
    if dry_run:
        return _preview(key, desired, known)
    try:
        catalogue_id, status, patch = _send(publisher.client(), key, desired, known.catalogue_id if known else None)
    except CatalogueApiError as error:
        outcome = "rejected" if error.status == 400 else "failed"
        return _record_failure(publisher, key, version, outcome, _api_problem(key, error))
    _record_success(publisher, key, catalogue_id, desired, version)
    return PublishOutcome(key, status, catalogue_id, patch)


def publish_errors(session: Session, key: str) -> dict[str, Any] | None:
    """The dataset's last publish error as ``{message, code, errors}``, or None."""
    return publication_error(session.get(Publication, key))


def publications_with_errors(session: Session) -> dict[str, dict[str, Any]]:
    """Every dataset's stored publish error by key, in one query (for ``status``)."""
    failed = session.scalars(select(Publication).where(Publication.error_message.is_not(None)))
    return {publication.dataset_key: error for publication in failed if (error := publication_error(publication))}


def publication_error(publication: Publication | None) -> dict[str, Any] | None:
    if publication is None or publication.error_message is None:
        return None
    problems = [Problem.from_json(item) for item in publication.errors or []]
    return problem_document(publication.error_message, publication.error_code or "publish_failed", problems)


def _desired(publisher: Publisher, key: str) -> tuple[dict[str, Any] | None, int | None, Publication | None]:
    """The record the catalogue should hold (None: nothing to publish), the version it reflects, and our row."""
    entry = publisher.catalogue.by_key().get(key)
    with publisher.sessions() as session:
        known = session.get(Publication, key)
        dataset = load_dataset(session, key)
        if entry is None or dataset is None or dataset.owned_by_people:
            if known is None or known.record is None or not known.catalogue_id:
                return None, None, known
            return {**known.record, "status": "Withdrawn"}, known.published_version, known
        changed = session.scalar(select(func.max(DatasetVersion.created_at)).where(DatasetVersion.dataset_key == key))
        facts = DatasetFacts(spec_from_dataset(dataset), dataset.row["created_at"], changed or dataset.updated_at)
        version = dataset.version
    settings = publisher.settings
    contact = Contact(settings.publish_contact_name, settings.publish_contact_email)
    return build_record(facts, publisher.catalogue.publish, contact, settings.publish_dataset_api_url), version, known


def _send(
    client: CatalogueClient, key: str, desired: dict[str, Any], catalogue_id: str | None
) -> tuple[str, str, dict[str, Any] | None]:
    """Create or patch; returns the catalogue id, the outcome status and the members sent."""
    remote = client.get_dataset(catalogue_id) if catalogue_id else None
    if catalogue_id is None or remote is None:
        if desired["status"] != "Withdrawn":
            created = client.create_dataset(desired)
            if created is not None:
                return created, "created", desired
        catalogue_id, remote = _find(client, key)
    current = {name: value for name, value in remote.items() if name in MANAGED_MEMBERS and value is not None}
    patch = merge_patch(current, desired)
    if not patch:
        return catalogue_id, "unchanged", None
    client.patch_dataset(catalogue_id, patch)
    return catalogue_id, "withdrawn" if desired["status"] == "Withdrawn" else "updated", patch


def _find(client: CatalogueClient, key: str) -> tuple[str, dict[str, Any]]:
    """The record the catalogue already holds for ``key`` (after a 409 ``DM00014``, or a lost id)."""
    catalogue_id = client.find_by_supplier_identifier(key)
    remote = client.get_dataset(catalogue_id) if catalogue_id else None
    if catalogue_id is None or remote is None:
        raise CatalogueApiError("not_found", f"the catalogue has no record with supplier identifier {key!r}")
    return catalogue_id, remote


def _preview(key: str, desired: dict[str, Any], known: Publication | None) -> PublishOutcome:
    """A dry run compares with the record the catalogue last accepted; it sends no request."""
    if known is None or not known.catalogue_id or known.record is None:
        return PublishOutcome(key, "would_create", None, desired)
    status = "would_withdraw" if desired["status"] == "Withdrawn" else "would_update"
    return PublishOutcome(key, status, known.catalogue_id, merge_patch(known.record, desired))


def _invalid(key: str, problems: list[Problem]) -> dict[str, Any]:
    details = "; ".join(f"{p.location}: {p.detail} ({p.type})" for p in problems)
    return problem_document(
        f"dataset {key!r}: record not valid for the catalogue: {details}", "record_invalid", problems
    )


def _api_problem(key: str, error: CatalogueApiError) -> dict[str, Any]:
    details = "".join(f"; {p.location}: {p.detail}" for p in error.problems)
    return problem_document(f"dataset {key!r}: {error.message}{details}", error.code, error.problems)


def _record_success(
    publisher: Publisher,
    key: str,
    catalogue_id: str,
    record: dict[str, Any],
    version: int | None,
    *,
    clear_only: bool = False,
) -> None:
    with publisher.sessions() as session, session.begin():
        publication = session.get(Publication, key) or Publication(dataset_key=key)
        if not clear_only:
            now = utcnow()
            publication.catalogue_id, publication.record, publication.status = catalogue_id, record, record["status"]
            publication.published_version, publication.published_at, publication.attempted_at = version, now, now
        publication.error_code = publication.error_message = publication.errors = publication.rejected_version = None
        session.add(publication)


def _record_failure(
    publisher: Publisher, key: str, version: int | None, status: str, document: dict[str, Any]
) -> PublishOutcome:
    """Store the error where ``status`` and ``publish --json`` read it; a rejection waits for a new version."""
    with publisher.sessions() as session, session.begin():
        publication = session.get(Publication, key) or Publication(dataset_key=key)
        publication.attempted_at = utcnow()
        publication.error_code, publication.error_message = document["code"], document["message"]
        publication.errors = document["errors"]
        if status in ("invalid", "rejected"):
            publication.rejected_version = version
        session.add(publication)
        catalogue_id = publication.catalogue_id
    return PublishOutcome(key, status, catalogue_id, error=document)
