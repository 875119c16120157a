"""Shared helpers for the source-kind tests against ``tests/api_upstream.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scrapers import SOURCES
from scrapers.http import Document, HttpClient, UrlRewrites, Validators, host_of
from scrapers.normalise import RawOption
from tests.api_upstream import ApiUpstream


@dataclass
class Entry:
    key: str
    url: str
    allowed_hosts: frozenset[str]
    params: Any


def entry(kind: str, url: str, *extra_hosts: str, **params: Any) -> Entry:
    source = SOURCES[kind]
    assert source.check_url(url) is None, source.check_url(url)
    return Entry("test_list", url, frozenset({host_of(url), *extra_hosts}), source.params_model(**params))


def client(apis: ApiUpstream) -> HttpClient:
    return HttpClient(user_agent="datasync-tests/1.0", rewrites=UrlRewrites(apis.rewrites()))


def fetch(kind: str, source_entry: Entry, http: HttpClient, validators: Validators | None = None) -> list[Document]:
    return SOURCES[kind].fetch(source_entry, http, validators)


def rows(kind: str, source_entry: Entry, http: HttpClient) -> list[RawOption]:
    source = SOURCES[kind]
    return source.parse(source_entry, source.fetch(source_entry, http, None))


def pairs(found: list[RawOption]) -> list[tuple[str, str]]:
    return [(row.code, row.label) for row in found]
