"""Strict decoding (``scrapers.base.decode_text`` / ``decode_marked``): bad bytes are an error, never U+FFFD."""

from __future__ import annotations

import pytest

from scrapers.base import decode_marked, decode_text, html_charset
from scrapers.errors import PermanentError
from scrapers.http import Document

URL = "https://api.example.org/v1/items/"


def doc(body: bytes, charset: str | None = None) -> Document:
    return Document(url=URL, body=body, charset=charset)


@pytest.mark.parametrize(
    ("body", "charset", "text"),
    [
        ('{"a": "Tŷ"}'.encode(), None, '{"a": "Tŷ"}'),
        (b'\xef\xbb\xbf{"a": 1}', None, '{"a": 1}'),
        (b'\xef\xbb\xbf{"a": 1}', "utf-8", '{"a": 1}'),
        ('{"a": "Tŷ"}'.encode(), "no-such-charset", '{"a": "Tŷ"}'),
        ('{"a": "é"}'.encode("iso-8859-1"), "iso-8859-1", '{"a": "é"}'),
    ],
    ids=["default-utf-8", "bom", "bom-declared", "unknown-charset-is-utf-8", "declared"],
)
def test_valid_bodies_decode(body: bytes, charset: str | None, text: str) -> None:
    assert decode_text(doc(body, charset)) == text


@pytest.mark.parametrize(
    ("body", "charset", "offset"),
    [
        (b'{"a": "caf\xe9"}', None, 10),
        (b'{"a": "caf\xe9"}', "utf-8", 10),
        ('{"a": "é"}'.encode(), "ascii", 7),
        (b'{"a": "\x81"}', "windows-1252", 7),
    ],
    ids=["latin-1-in-utf-8", "declared-utf-8", "utf-8-in-ascii-is-not-re-read", "undefined-windows-1252"],
)
def test_invalid_bytes_are_an_error_naming_the_offset(body: bytes, charset: str | None, offset: int) -> None:
    with pytest.raises(PermanentError) as caught:
        decode_text(doc(body, charset))
    assert caught.value.kind == "decode" and not caught.value.transient
    assert caught.value.message.startswith(f"{URL}: the body is not valid ")
    assert f"the first at byte {offset})" in caught.value.message
    assert "\ufffd" not in caught.value.message


def test_marked_text_stands_a_marker_in_for_each_bad_sequence_only() -> None:
    marked = decode_marked(doc(b"ok \xff and \xfe\xfe, real \xef\xbf\xbd kept"))
    assert marked.marker is not None and marked.bad_count == 3 and marked.bad_offset == 3
    assert marked.text == f"ok {marked.marker} and {marked.marker}{marked.marker}, real \ufffd kept"


def test_a_clean_body_has_no_marker() -> None:
    assert decode_marked(doc(b"plain")).marker is None


def test_a_binary_body_is_garbage_not_text() -> None:
    with pytest.raises(PermanentError) as caught:
        decode_text(doc(b"\x89PNG\r\n\x1a\n\x00\x00"))
    assert caught.value.kind == "garbage"


@pytest.mark.parametrize(
    ("body", "charset", "expected"),
    [
        (b"<meta charset='Shift_JIS'>", None, "shift_jis"),
        (b"<META HTTP-EQUIV='content-type' CONTENT='text/html; charset=windows-1250'>", None, "cp1250"),
        (b"<meta charset='shift_jis'>", "utf-8", "utf-8"),
        (b"<meta charset='latin1'>", None, "cp1252"),
        (b"<meta charset='bogus'>", None, "utf-8"),
        (b"<meta charset='utf-16le'>", None, "utf-8"),
        (b" " * 1100 + b"<meta charset='shift_jis'>", None, "utf-8"),
    ],
    ids=["meta", "http-equiv", "header-wins", "latin-1-is-windows-1252", "unknown", "meta-utf-16", "meta-after-1-kb"],
)
def test_html_charset_follows_the_browser_order(body: bytes, charset: str | None, expected: str) -> None:
    assert html_charset(doc(body, charset)) == expected
