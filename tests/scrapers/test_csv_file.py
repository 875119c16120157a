"""The csv source: encodings, delimiters, quoting and columns, over real HTTP (``tests/api_upstream.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scrapers.csv_file import CsvColumns
from scrapers.errors import PermanentError
from scrapers.http import HttpClient
from tests.api_examples import WARDS
from tests.api_upstream import DATAPRESS_HOST, ApiUpstream
from tests.scrapers.sources_helpers import client, entry, pairs, rows
from tests.upstream import Scripted

KIND = "csv"


@pytest.fixture
def http(apis: ApiUpstream) -> Iterator[HttpClient]:
    apis.datapress.datasets["wards"] = {"id": "wards"}
    http_client = client(apis)
    yield http_client
    http_client.close()


def publish(apis: ApiUpstream, body: bytes, name: str = "wards.csv") -> str:
    path = f"/download/wards/{name}"
    apis.datapress.files[path] = body
    return f"https://{DATAPRESS_HOST}{path}"


def test_bom_crlf_quotes_and_doubled_quotes(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, WARDS.encode("utf-8"))
    found = rows(KIND, entry(KIND, url, code_column="ward_code", label_column="ward_name"), http)
    assert pairs(found) == [
        ("E05013970", "Barnet Vale"),
        ("E05013971", "Brunswick Park"),
        ("E05000026", 'Abbey, "Old" Town'),
    ]


def test_label_template_joins_columns(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, WARDS.encode("utf-8"))
    source_entry = entry(KIND, url, code_column="ward_code", label_template="{ward_name} ({borough_name})")
    assert pairs(rows(KIND, source_entry, http))[0] == ("E05013970", "Barnet Vale (Barnet)")


def test_semicolons_and_the_declared_charset(apis: ApiUpstream, http: HttpClient) -> None:
    body = "code;label\n01;Église\n02;Café\n".encode("cp1252")
    url = publish(apis, body, "latin.csv")
    source_entry = entry(KIND, url, code_column="code", label_column="label")
    apis.script(url, Scripted(body=body, headers={"Content-Type": "text/csv; charset=windows-1252"}))
    assert pairs(rows(KIND, source_entry, http)) == [("01", "Église"), ("02", "Café")]


def test_tabs_are_sniffed_and_blank_lines_skipped(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, b"code\tlabel\n\nA\tAlpha\n\nB\tBeta\n\n", "tabs.csv")
    assert pairs(rows(KIND, entry(KIND, url, code_column="code", label_column="label"), http)) == [
        ("A", "Alpha"),
        ("B", "Beta"),
    ]


def test_a_named_delimiter_wins(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, b"code|label, with comma\nA|Alpha, first\n", "pipes.csv")
    source_entry = entry(KIND, url, code_column="code", label_column="label, with comma", delimiter="|")
    assert pairs(rows(KIND, source_entry, http)) == [("A", "Alpha, first")]


def test_missing_columns_are_listed_with_the_columns_there_are(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, WARDS.encode("utf-8"))
    with pytest.raises(PermanentError) as caught:
        rows(KIND, entry(KIND, url, code_column="WD23CD", label_column="ward_name"), http)
    assert caught.value.kind == "missing_column"
    assert "no column 'WD23CD'; it has 'ward_code', 'ward_name', 'borough_name'" in str(caught.value)
    assert url in str(caught.value)


def test_a_template_field_that_is_not_a_column_is_named(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, WARDS.encode("utf-8"))
    source_entry = entry(KIND, url, code_column="ward_code", label_template="{ward_name} ({LAD23NM})")
    with pytest.raises(PermanentError, match="no column 'LAD23NM'"):
        rows(KIND, source_entry, http)


def test_a_row_with_too_few_fields_is_an_error_not_a_shifted_row(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, b"code,label,extra\r\nA,Alpha,x\r\nB,Beta\r\n", "short.csv")
    with pytest.raises(PermanentError) as caught:
        rows(KIND, entry(KIND, url, code_column="code", label_column="label"), http)
    assert caught.value.kind == "bad_csv"
    assert "line 3 has 2 fields, the header has 3" in str(caught.value)


def test_an_unclosed_quote_is_an_error(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, b'code,label\nA,"Alpha\nB,Beta\n', "quote.csv")
    with pytest.raises(PermanentError) as caught:
        rows(KIND, entry(KIND, url, code_column="code", label_column="label"), http)
    assert caught.value.kind == "bad_csv"


@pytest.mark.parametrize("content_type", ["text/html", "application/pdf"])
def test_html_or_pdf_instead_of_csv_is_named(apis: ApiUpstream, http: HttpClient, content_type: str) -> None:
    url = publish(apis, b"code,label\n", "html.csv")
    apis.script(url, Scripted(body=b"<html>Sign in</html>", headers={"Content-Type": content_type}))
    with pytest.raises(PermanentError) as caught:
        rows(KIND, entry(KIND, url, code_column="code", label_column="label"), http)
    assert caught.value.kind == "not_csv"
    assert url in str(caught.value)


def test_an_empty_file_has_no_header(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, b"\r\n", "empty.csv")
    with pytest.raises(PermanentError, match="no header row"):
        rows(KIND, entry(KIND, url, code_column="code", label_column="label"), http)


def test_exactly_one_label_setting() -> None:
    with pytest.raises(ValueError, match="exactly one of label_column and label_template"):
        CsvColumns(code_column="code")
    with pytest.raises(ValueError, match="exactly one of label_column and label_template"):
        CsvColumns(code_column="code", label_column="a", label_template="{b}")
    with pytest.raises(ValueError, match="at least one field"):
        CsvColumns(code_column="code", label_template="no fields")


def test_a_named_column_that_appears_twice_is_ambiguous(apis: ApiUpstream, http: HttpClient) -> None:
    url = publish(apis, b"code,name,name\r\nA,Alpha,Other\r\n", "twice.csv")
    with pytest.raises(PermanentError) as caught:
        rows(KIND, entry(KIND, url, code_column="code", label_column="name"), http)
    assert caught.value.kind == "bad_csv"
    assert "'name' appear more than once" in str(caught.value)
