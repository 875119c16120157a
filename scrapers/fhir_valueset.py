"""FHIR R4 value set expansions (NHS England Terminology Server, Ontoserver, HAPI): code -> display.

``url`` is the expansion, ``{base}/ValueSet/$expand?url={canonical}[&valueSetVersion=...]``;
datasync adds ``count`` and ``offset`` and pages until ``expansion.total``. A page that ends short
of the total, skips, or disagrees about the total is an error, never a partial list. Inactive
concepts are kept and marked retired; abstract ones (not selectable) are left out. A code is unique
only with its system, so a value set holding one code in two systems needs ``system`` to pick one.

The expansion's identity (value set version, expansion identifier, code system versions) is kept
as the source token: when it is unchanged, one empty page (``count=0``) proves it and no concept
is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import Field, model_validator

from scrapers.base import Source, SourceEntry, SourceParams, source_token
from scrapers.errors import PermanentError, SyncError, TransientError
from scrapers.http import Document, HttpClient, NotModified, Validators
from scrapers.json_api import load_json
from scrapers.normalise import RawOption
from scrapers.oauth import ClientCredentials

ACCEPT = "application/fhir+json, application/json;q=0.9"
EXPAND = re.compile(r"/ValueSet/(?:\$|%24)expand\?(?:.*&)?url=[^&]+", re.IGNORECASE)
PAGING = re.compile(r"[?&](?:count|offset)=", re.IGNORECASE)


class FhirValueSetParams(SourceParams):
    system: str | None = Field(None, min_length=1)
    page_size: int = Field(1000, ge=1, le=10000)
    max_pages: int = Field(500, ge=1)
    token_url: str | None = Field(None, pattern=r"^https?://[^/\s]+")
    client_id_env: str | None = Field(None, min_length=1)
    client_secret_env: str | None = Field(None, min_length=1)
    scope: str | None = None

    @model_validator(mode="after")
    def _all_or_no_credentials(self) -> FhirValueSetParams:
        given = [self.token_url, self.client_id_env, self.client_secret_env]
        if any(given) and not all(given):
            raise ValueError("token_url, client_id_env and client_secret_env go together: set all three or none")
        return self

    @property
    def oauth(self) -> ClientCredentials | None:
        if not (self.token_url and self.client_id_env and self.client_secret_env):
            return None
        return ClientCredentials(self.token_url, self.client_id_env, self.client_secret_env, self.scope)


class FhirValueSet(Source):
    kind = "fhir_valueset"
    source_type = "api"
    params_model = FhirValueSetParams
    accept = ACCEPT

    def check_url(self, url: str) -> str | None:
        if not EXPAND.search(url):
            return "must be a FHIR expansion URL, {base}/ValueSet/$expand?url={canonical}"
        if PAGING.search(url):
            return "must not set count or offset: datasync pages the expansion itself (see page_size)"
        return None

    def fetch(self, entry: SourceEntry, http: HttpClient, validators: Validators | None) -> list[Document]:
        """Every page of the expansion, or none when one empty page shows the stored expansion is current."""
        params: FhirValueSetParams = entry.params
        if validators and validators.token:
            probe = self._page(entry, http, 0, 0)
            if source_token(entry, expansion_token(probe)) == validators.token:
                raise NotModified(entry.url, "FHIR expansion unchanged (same value set version and expansion)")
        pages = [self._page(entry, http, 0, params.page_size)]
        _check_offset(pages[0], 0)
        total = _total(pages[0])
        fetched = len(_contains(pages[0]))
        while fetched < total:
            if len(pages) >= params.max_pages:
                raise PermanentError("too_many_pages", f"{entry.url}: more than {params.max_pages} pages")
            _check_page(pages[-1], params.page_size, fetched, total)
            page = self._page(entry, http, fetched, params.page_size)
            if _total(page) != total:
                raise TransientError(
                    "expansion_changed", f"{page.url}: the expansion total moved from {total} to {_total(page)}"
                )
            _check_offset(page, fetched)
            fetched += len(_contains(page))
            pages.append(page)
        if fetched != total:
            raise PermanentError("bad_page", f"{pages[-1].url}: {fetched} concepts, but expansion.total is {total}")
        pages[0].validators = Validators(token=source_token(entry, expansion_token(pages[0])))
        return pages

    def credential_variables(self, entry: SourceEntry) -> list[str]:
        oauth = entry.params.oauth
        return [oauth.client_id_env, oauth.client_secret_env] if oauth else []

    def secrets(self, entry: SourceEntry) -> list[str]:
        """The credentials and any token obtained with them."""
        oauth = entry.params.oauth
        return oauth.secrets() if oauth else []

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        params: FhirValueSetParams = entry.params
        concepts = [
            (document.url, concept)
            for document in documents
            for concept in _flatten(_contains(document))
            if concept.get("abstract") is not True
        ]
        if params.system is not None:
            concepts = [(url, concept) for url, concept in concepts if concept.get("system") == params.system]
            if not concepts:
                systems = sorted({str(c.get("system")) for d in documents for c in _flatten(_contains(d))})
                raise PermanentError(
                    "no_concepts", f"{entry.url}: no concept in system {params.system!r}; it has {', '.join(systems)}"
                )
        _check_one_system_per_code(entry.url, [concept for _, concept in concepts])
        return [_option(url, concept) for url, concept in concepts]

    def _page(self, entry: SourceEntry, http: HttpClient, offset: int, count: int) -> Document:
        """One page; a 401 renews the token once; an error's OperationOutcome becomes its message."""
        params: FhirValueSetParams = entry.params
        url = f"{entry.url}&count={count}&offset={offset}"
        try:
            try:
                document = self._get(entry, http, url, renew=False)
            except SyncError as error:
                if error.kind != "http_401" or params.oauth is None:
                    raise
                document = self._get(entry, http, url, renew=True)  # the server may have dropped the token
        except SyncError as error:
            raise _explained(error, params) from error
        _expect_value_set(document)
        return document

    def _get(self, entry: SourceEntry, http: HttpClient, url: str, *, renew: bool) -> Document:
        oauth = entry.params.oauth
        headers = {"Authorization": f"Bearer {oauth.bearer(http, renew=renew)}"} if oauth else {}
        return http.get(url, allowed_hosts=entry.allowed_hosts, headers=headers, accept=ACCEPT)


def expansion_token(document: Document) -> str | None:
    """What identifies this expansion's content, or None when the server says too little to tell."""
    value_set = load_json(document)
    expansion = value_set["expansion"]
    if not (value_set.get("version") or expansion.get("identifier")):
        return None
    used = sorted(
        str(parameter.get("valueUri") or parameter.get("valueString"))
        for parameter in expansion.get("parameter") or []
        if isinstance(parameter, dict) and parameter.get("name") in ("version", "used-codesystem")
    )
    parts = [value_set.get("url"), value_set.get("version"), expansion.get("identifier"), expansion.get("total"), used]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def _expect_value_set(document: Document) -> None:
    payload = load_json(document)
    kind = payload.get("resourceType") if isinstance(payload, dict) else type(payload).__name__
    if kind == "OperationOutcome":
        raise PermanentError("operation_outcome", f"{document.url}: {outcome_text(payload)}")
    if kind != "ValueSet":
        raise PermanentError("unexpected_shape", f"{document.url}: expected a FHIR ValueSet, got {kind}")
    if not isinstance(payload.get("expansion"), dict):
        raise PermanentError("unexpected_shape", f"{document.url}: the ValueSet has no expansion")


def outcome_text(outcome: dict[str, Any]) -> str:
    """An OperationOutcome's issues as one line: severity, code and the server's own words."""
    issues = [issue for issue in outcome.get("issue") or [] if isinstance(issue, dict)]
    texts = []
    for issue in issues:
        details = issue["details"] if isinstance(issue.get("details"), dict) else {}
        words = issue.get("diagnostics") or details.get("text") or "no details"
        texts.append(f"{issue.get('severity', 'error')} {issue.get('code', 'unknown')}: {words}")
    return "OperationOutcome: " + ("; ".join(texts) or "no issues given")


def _explained(error: SyncError, params: FhirValueSetParams) -> SyncError:
    """The HTTP error with the server's OperationOutcome text, and which credentials a 401/403 refused."""
    message = error.message
    try:
        payload = json.loads(error.body.decode("utf-8")) if error.body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        payload = None
    if isinstance(payload, dict) and payload.get("resourceType") == "OperationOutcome":
        message = f"{message}: {outcome_text(payload)}"
    if error.kind in ("http_401", "http_403"):
        oauth = params.oauth
        message += (
            f" (the token for {oauth.client_id_env} from {oauth.token_url} was refused)"
            if oauth
            else " (the server wants a token: set token_url, client_id_env and client_secret_env)"
        )
    return type(error)(error.kind, message, retry_after=error.retry_after)


def _total(document: Document) -> int:
    total = load_json(document)["expansion"].get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise PermanentError("unexpected_shape", f"{document.url}: the expansion has no expansion.total")
    return total


def _contains(document: Document) -> list[Any]:
    contains = load_json(document)["expansion"].get("contains") or []
    if not isinstance(contains, list):
        raise PermanentError("unexpected_shape", f"{document.url}: expansion.contains is not a list")
    return contains


def _check_page(document: Document, page_size: int, fetched: int, total: int) -> None:
    """A page before the last must be full: a short one means the server lost concepts."""
    if len(_contains(document)) < page_size:
        raise PermanentError(
            "short_page",
            f"{document.url}: a page of {len(_contains(document))} concepts (asked for {page_size}) "
            f"with {total - fetched} of {total} still to come",
        )


def _check_offset(document: Document, offset: int) -> None:
    reported = load_json(document)["expansion"].get("offset", offset)
    if reported != offset:
        raise PermanentError("bad_page", f"{document.url}: asked for offset {offset}, the page starts at {reported}")


def _flatten(contains: list[Any]) -> Iterator[dict[str, Any]]:
    for concept in contains:
        if not isinstance(concept, dict):
            raise PermanentError("unexpected_shape", f"an expansion entry is {type(concept).__name__}, not an object")
        yield concept
        yield from _flatten(concept.get("contains") or [])


def _check_one_system_per_code(url: str, concepts: list[dict[str, Any]]) -> None:
    systems: dict[str, str] = {}
    for concept in concepts:
        code, system = str(concept.get("code")), str(concept.get("system"))
        if systems.setdefault(code, system) != system:
            raise PermanentError(
                "mixed_systems",
                f"{url}: code {code!r} is in {systems[code]} and in {system}; set system to choose one",
            )


def _option(url: str, concept: dict[str, Any]) -> RawOption:
    code, display = concept.get("code"), concept.get("display")
    if not isinstance(code, str) or not code:
        raise PermanentError("missing_field", f"{url}: a concept has no code")
    if not isinstance(display, str) or not display:
        raise PermanentError("missing_field", f"{url}: concept {code!r} has no display")
    return RawOption(code=code, label=display, retired=concept.get("inactive") is True)
