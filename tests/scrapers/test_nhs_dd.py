"""The NHS Data Dictionary page parser, on small inline pages and on random or truncated HTML."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapers.base import html_charset
from scrapers.errors import PermanentError, TransientError
from scrapers.http import Document
from scrapers.nhs_dd import NhsDataDictionary, parse_page, require_whole_page
from scrapers.normalise import RawOption, normalise
from tests.conftest import expected_result
from tests.fixtures.make_nhs_dd_fixtures import DATASETS, PAGES, VARIANT_DATASETS, dataset_key, slug_of

URL = "https://www.datadictionary.nhs.uk/data_elements/test_element.html"
FIXTURE_PAGES = (
    Path(__file__).resolve().parents[1] / "fixtures" / "upstream" / "www.datadictionary.nhs.uk" / "data_elements"
)


def page(body: str, *, title: str = "TEST ELEMENT") -> Document:
    html = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><header><nav><ul><li><a href='/'>Home</a></li></ul></nav></header>"
        f"<main><h1 class='title topictitle1'>{title}</h1>{body}</main></body></html>"
    )
    return Document(url=URL, body=html.encode("utf-8"), content_type="text/html", charset="utf-8")


def table(header: tuple[str, str] | str, *rows: str, thead: bool = True) -> str:
    head = header if isinstance(header, str) else f"<tr><th>{header[0]}</th><th>{header[1]}</th></tr>"
    if thead:
        return f"<table class='table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return f"<table>{head}{''.join(rows)}</table>"


def row(code: str, label: str, attrs: str = "") -> str:
    return f"<tr{attrs}><td>{code}</td><td>{label}</td></tr>"


def pairs(rows: list[RawOption]) -> list[tuple[str, str]]:
    return [(r.code, r.label) for r in rows]


AKA = table(("Context", "Alias"), row("Plural", "ETHNIC CATEGORIES"), row("Short", "Ethnicity"))
WHERE_USED = (
    "<table><thead><tr><th>Type</th><th>Link</th><th>How used</th></tr></thead><tbody>"
    + "".join(f"<tr><td>Data Set</td><td><a href='/x{i}'>DATA SET {i}</a></td><td>used</td></tr>" for i in range(30))
    + "</tbody></table>"
)


# --- header recognition ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ("Code", "Description"),
        ("National Code", "National Code Definition"),
        ("Default Code", "Default Code Definition"),
        ("CODE", "DESCRIPTION"),
        ("Code", "Meaning"),
    ],
)
def test_header_wording_variants_are_code_tables(header: tuple[str, str]) -> None:
    rows = parse_page(page(table(header, row("01", "One"), row("02", "Two"))))
    assert pairs(rows) == [("01", "One"), ("02", "Two")]


def test_td_strong_header_row_without_thead() -> None:
    header = "<tr><td><strong>Code</strong></td><td><strong>Description</strong></td></tr>"
    rows = parse_page(page(table(header, row("A", "White"), row("B", "Mixed"), thead=False)))
    assert pairs(rows) == [("A", "White"), ("B", "Mixed")]


def test_also_known_as_and_where_used_tables_are_ignored() -> None:
    body = (
        f"<h2>Also Known As</h2>{AKA}<h2>National Codes</h2>"
        f"{table(('Code', 'Description'), row('1', 'Yes'), row('2', 'No'))}<h2>Where Used</h2>{WHERE_USED}"
    )
    rows = parse_page(page(body))
    assert pairs(rows) == [("1", "Yes"), ("2", "No")]


def test_every_code_table_on_the_page_is_read_in_page_order() -> None:
    body = (
        table(("Code", "Description"), row("A", "Alpha"))
        + "<p>Between the tables</p>"
        + table(("Code", "Description"), row("B", "Beta"))
    )
    assert pairs(parse_page(page(body))) == [("A", "Alpha"), ("B", "Beta")]


# --- rows -----------------------------------------------------------------------------------------


def test_group_heading_rows_are_skipped() -> None:
    rows = parse_page(
        page(
            table(
                ("Code", "Description"),
                "<tr><td colspan='2'><strong>White</strong></td></tr>",
                row("A", "British"),
                "<tr><th colspan='2'>Mixed</th></tr>",
                row("D", "White and Black Caribbean"),
                row("", "<strong>Asian or Asian British</strong>"),
                row("&nbsp;", "<em>Other</em>"),
                row("H", "Indian"),
            )
        )
    )
    assert pairs(rows) == [("A", "British"), ("D", "White and Black Caribbean"), ("H", "Indian")]


def test_cell_text_is_rendered_like_a_browser() -> None:
    rows = parse_page(
        page(
            table(
                ("Code", "Description"),
                row(" 01 ", "<a href='/patient.html'>PATIENT</a>s discharged to&nbsp;their<br/>usual address"),
                row("02", "<p>Transferred to a</p><p><a href='/hp.html'>Hospital Provider</a> &amp; ward</p>"),
                row("<span>2A</span>", "Line one\n     line two"),
            )
        )
    )
    assert pairs(rows) == [
        ("01", "PATIENTs discharged to their usual address"),
        ("02", "Transferred to a Hospital Provider & ward"),
        ("2A", "Line one line two"),
    ]


def test_codes_keep_leading_zeros() -> None:
    rows = parse_page(page(table(("Code", "Description"), row("01", "a"), row("001", "b"), row("1", "c"))))
    assert [r.code for r in rows] == ["01", "001", "1"]


def test_nested_table_rows_are_not_read_twice() -> None:
    nested = "<table><tr><td>inner</td><td>cell</td></tr></table>"
    rows = parse_page(page(table(("Code", "Description"), row("01", f"Outer {nested}"), row("02", "Two"))))
    assert [r.code for r in rows] == ["01", "02"]


def test_declared_charset_is_used() -> None:
    html = "<table><tr><th>Code</th><th>Description</th></tr><tr><td>01</td><td>Café</td></tr></table>"
    document = Document(url=URL, body=html.encode("iso-8859-1"), charset="iso-8859-1")
    assert pairs(parse_page(document)) == [("01", "Café")]


# --- retired codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retired_row",
    [
        row("02", "Old", " class='retired'"),
        row("02", "Old", " class='row Retired-code'"),
        row("<del>02</del>", "<del>Old</del>"),
        row("02", "<s>Old</s>"),
        row("02", "<strike>Old</strike>"),
        row("<span style='text-decoration: line-through'>02</span>", "Old"),
        row("02", "Old", " style='text-decoration:line-through'"),
    ],
    ids=["row-class", "row-class-mixed-case", "del", "s", "strike", "span-line-through", "row-line-through"],
)
def test_retired_marks_on_the_row(retired_row: str) -> None:
    rows = parse_page(page(table(("Code", "Description"), row("01", "Live"), retired_row, row("03", "Also live"))))
    assert [(r.code, r.retired) for r in rows] == [("01", False), ("02", True), ("03", False)]
    assert rows[1].label == "Old"


def test_retired_class_on_a_cell_marks_the_row_retired() -> None:
    rows = parse_page(
        page(
            table(
                ("Code", "Description"),
                row("01", "Live"),
                "<tr><td class='retired'>02</td><td class='retired'>Old</td></tr>",
            )
        )
    )
    assert [(r.code, r.retired) for r in rows] == [("01", False), ("02", True)]


def test_retired_text_in_the_description_ends_up_retired() -> None:
    rows = parse_page(
        page(table(("Code", "Description"), row("01", "Live"), row("02", "Old meaning (Retired 1 April 2020)")))
    )
    assert pairs(rows)[1] == ("02", "Old meaning (Retired 1 April 2020)")
    result = normalise(rows)
    assert result.retired_codes == ("02",)
    assert result.options["02"] == "Old meaning (Retired 1 April 2020)"


def test_struck_row_is_marked_once_after_normalisation() -> None:
    rows = parse_page(page(table(("Code", "Description"), row("<del>09</del>", "<del>Gone</del>"))))
    result = normalise(rows)
    assert result.options == {"09": "Gone (Retired)"}
    assert result.retired_codes == ("09",)


# --- default codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "heading",
    [
        "<h2>Default Codes</h2>",
        "<h3 class='sectiontitle'>DEFAULT CODES</h3>",
        "<div class='section'><h2 class='title sectiontitle'>Default Codes</h2><p>Used when...</p></div>",
        "<div class='tabletitle'>Default Codes</div>",
    ],
    ids=["h2", "h3-sectiontitle", "dita-section", "tabletitle"],
)
def test_tables_under_a_default_codes_heading_are_default(heading: str) -> None:
    body = (
        "<h2>National Codes</h2>"
        + table(("Code", "Description"), row("A", "White"), row("B", "Mixed"))
        + heading
        + table(("Code", "Description"), row("99", "Not known"))
    )
    rows = parse_page(page(body))
    assert [(r.code, r.default) for r in rows] == [("A", False), ("B", False), ("99", True)]


def test_default_code_header_marks_a_table_default_without_a_heading() -> None:
    rows = parse_page(page(table(("Default Code", "Default Code Definition"), row("Z", "Not stated"))))
    assert [(r.code, r.default) for r in rows] == [("Z", True)]


def test_national_codes_after_a_default_section_are_not_default() -> None:
    body = (
        "<h2>Default Codes</h2>"
        + table(("Code", "Description"), row("99", "Not known"))
        + "<h2>National Codes</h2>"
        + table(("Code", "Description"), row("1", "One"))
    )
    assert [(r.code, r.default) for r in parse_page(page(body))] == [("99", True), ("1", False)]


def test_a_page_with_only_default_codes() -> None:
    body = "<h2>Default Codes</h2>" + table(("Code", "Description"), row("8", "Not applicable"), row("9", "NK"))
    rows = parse_page(page(body))
    assert [(r.code, r.default) for r in rows] == [("8", True), ("9", True)]


# --- permitted national codes (an element using a subset of its attribute's codes) ---------------

NATIONAL = table(("Code", "Description"), row("01", "One"), row("02", "Two"), row("03", "Three"), row("04", "Four"))
PERMITTED = table(("Code", "Description"), row("01", "One"), row("03", "Three"))
DEFAULTS = table(("Code", "Description"), row("99", "Not known"))


def section(heading: str, body: str) -> str:
    title = f"<h2 class='title topictitle2'>{heading}</h2>"
    return f"<article class='topic nested1'>{title}<div class='body'>{body}</div></article>"


@pytest.mark.parametrize(
    "body",
    [
        section("National Codes", NATIONAL) + section("Permitted National Codes", PERMITTED),
        section("Permitted National Codes", PERMITTED) + section("National Codes", NATIONAL),
        section("National Codes", NATIONAL)
        + section("Also Known As", AKA)
        + section("Permitted National Codes", PERMITTED),
        section("Where Used", WHERE_USED)
        + section("Permitted National Codes", PERMITTED)
        + section("National Codes", NATIONAL),
    ],
    ids=["national-then-permitted", "permitted-then-national", "aliases-between", "where-used-first"],
)
def test_only_the_permitted_codes_are_the_list(body: str) -> None:
    assert pairs(parse_page(page(body))) == [("01", "One"), ("03", "Three")]


@pytest.mark.parametrize(
    "heading",
    [
        "<h2>Permitted National Codes</h2>",
        "<h2 class='title topictitle2'>PERMITTED NATIONAL CODES</h2>",
        "<h3 class='sectiontitle'>Permitted&nbsp;National\n Codes</h3>",
        "<div class='tabletitle'>Permitted National Codes</div>",
        "<h4><span>Permitted</span> <a href='../nc.html'>National Codes</a></h4>",
    ],
    ids=["h2", "upper-case", "nbsp-newline-h3-sectiontitle", "tabletitle", "markup-in-heading"],
)
def test_permitted_section_headings_are_recognised_in_any_markup(heading: str) -> None:
    body = "<h2>National Codes</h2>" + NATIONAL + heading + PERMITTED
    assert [r.code for r in parse_page(page(body))] == ["01", "03"]


@pytest.mark.parametrize(
    "header",
    [
        ("Code", "Description"),
        ("National Code", "National Code Definition"),
        ("Code", "Meaning"),
        ("CODE", "MEANING"),
        ("&nbsp;Code ", "\n Description&nbsp;"),
    ],
)
def test_permitted_table_header_wording_variants(header: tuple[str, str]) -> None:
    permitted = table(header, row("02", "Two"), row("04", "Four"))
    body = section("National Codes", NATIONAL) + section("Permitted National Codes", permitted)
    assert pairs(parse_page(page(body))) == [("02", "Two"), ("04", "Four")]


def test_permitted_table_with_its_header_row_in_tbody() -> None:
    header = "<tr><td><strong>Code</strong></td><td><strong>Description</strong></td></tr>"
    permitted = table(header, row("02", "Two"), thead=False)
    body = section("National Codes", NATIONAL) + section("Permitted National Codes", permitted)
    assert pairs(parse_page(page(body))) == [("02", "Two")]


def test_a_permitted_header_marks_the_table_without_a_heading() -> None:
    permitted = table(("Permitted National Code", "Permitted National Code Definition"), row("04", "Four"))
    assert pairs(parse_page(page(NATIONAL + permitted))) == [("04", "Four")]


def test_permitted_codes_come_with_the_default_codes_in_page_order() -> None:
    body = (
        section("National Codes", NATIONAL)
        + section("Permitted National Codes", PERMITTED)
        + section("Default Codes", DEFAULTS)
    )
    rows = parse_page(page(body))
    assert [(r.code, r.default) for r in rows] == [("01", False), ("03", False), ("99", True)]


def test_a_default_table_inside_the_permitted_section_is_kept_as_default() -> None:
    defaults = table(("Default Code", "Default Code Definition"), row("9", "Not stated"))
    body = section("National Codes", NATIONAL) + section("Permitted National Codes", PERMITTED + defaults)
    rows = parse_page(page(body))
    assert [(r.code, r.default) for r in rows] == [("01", False), ("03", False), ("9", True)]


def test_retirement_written_only_as_text_in_a_permitted_row() -> None:
    permitted = table(
        ("Code", "Description"),
        row("01", "One"),
        row("03", "Three <span class='ph'>(Retired 1 April 2020)</span>"),
    )
    body = section("National Codes", NATIONAL) + section("Permitted National Codes", permitted)
    result = normalise(parse_page(page(body)))
    assert result.options == {"01": "One", "03": "Three (Retired 1 April 2020)"}
    assert result.retired_codes == ("03",)


def test_codes_retired_in_the_national_table_but_not_permitted_stay_out() -> None:
    national = table(("Code", "Description"), row("01", "One"), row("05", "<del>Five</del>", " class='retired'"))
    body = section("National Codes", national) + section("Permitted National Codes", PERMITTED)
    result = normalise(parse_page(page(body)))
    assert result.options == {"01": "One", "03": "Three"}
    assert result.retired_codes == ()


def test_permitted_marks_on_the_row_are_kept() -> None:
    permitted = table(("Code", "Description"), row("01", "One"), row("<s>03</s>", "<s>Three</s>"))
    body = section("National Codes", NATIONAL) + section("Permitted National Codes", permitted)
    assert [(r.code, r.retired) for r in parse_page(page(body))] == [("01", False), ("03", True)]


def test_a_page_without_a_permitted_section_keeps_every_code_table() -> None:
    body = section("National Codes", NATIONAL) + section("Default Codes", DEFAULTS)
    assert [r.code for r in parse_page(page(body))] == ["01", "02", "03", "04", "99"]


def test_a_permitted_heading_without_a_code_table_is_an_error_not_the_full_list() -> None:
    body = section("National Codes", NATIONAL) + section("Permitted National Codes", "<p>See the data set.</p>")
    with pytest.raises(PermanentError) as caught:
        parse_page(page(body))
    assert caught.value.kind == "no_code_table"
    assert URL in caught.value.message and "Permitted National Codes" in caught.value.message


def test_a_permitted_table_without_rows_is_an_error_not_the_defaults_alone() -> None:
    empty = table(("Code", "Description"), "<tr><td colspan='2'>None yet</td></tr>")
    body = (
        section("National Codes", NATIONAL)
        + section("Permitted National Codes", empty)
        + section("Default Codes", DEFAULTS)
    )
    with pytest.raises(PermanentError) as caught:
        parse_page(page(body))
    assert caught.value.kind == "empty"
    assert "Permitted National Codes" in caught.value.message


def test_the_word_permitted_in_a_description_does_not_restrict_the_list() -> None:
    body = section("Description", "<p>Only the permitted national codes below may be used.</p>") + section(
        "National Codes", NATIONAL
    )
    assert [r.code for r in parse_page(page(body))] == ["01", "02", "03", "04"]


# --- every fixture page (the 48 shipped datasets and the Permitted National Codes variants) --------

FIXTURE_KEYS = {slug_of(url): dataset_key(name) for name, url, *_ in [*DATASETS, *VARIANT_DATASETS]}


@pytest.mark.parametrize("slug", sorted(FIXTURE_KEYS))
def test_every_fixture_page_gives_exactly_its_expected_options(slug: str) -> None:
    path = FIXTURE_PAGES / f"{slug}.html"
    result = normalise(parse_page(Document(url=URL, body=path.read_bytes(), charset="utf-8")))
    expected = expected_result(FIXTURE_KEYS[slug])
    assert list(result.options.items()) == list(expected["options"].items())
    assert list(result.retired_codes) == expected["retired_codes"]
    assert list(result.default_codes) == expected["default_codes"]
    assert not result.warnings or slug == "employee_absence_category"


def test_the_permitted_variant_pages_show_more_codes_than_they_allow() -> None:
    variants = [slug_of(url) for _, url in VARIANT_DATASETS]
    assert len(variants) == 9 and len(FIXTURE_KEYS) == len(list(FIXTURE_PAGES.glob("*.html"))) == 57
    for slug in variants:
        shown = [row for table in PAGES[slug]["tables"] for row in table["rows"] if row[0] != "__group__"]
        assert len(shown) > len(expected_result(FIXTURE_KEYS[slug])["options"]), slug


# --- bytes and charsets ---------------------------------------------------------------------------


def code_page(*rows_html: str) -> str:
    return page(table(("Code", "Description"), *rows_html)).body.decode("utf-8")


def test_a_label_with_invalid_bytes_is_an_error_naming_its_row() -> None:
    body = code_page(row("01", "One"), row("02", "Caf__"), row("03", "Three")).encode("utf-8").replace(b"__", b"\xe9")
    with pytest.raises(PermanentError) as caught:
        parse_page(Document(url=URL, body=body, charset="utf-8"))
    assert caught.value.kind == "decode"
    assert URL in caught.value.message
    assert "row 2 (code '02'" in caught.value.message and "utf-8" in caught.value.message


def test_invalid_bytes_in_a_code_name_that_row() -> None:
    body = code_page(row("01", "One"), row("0__", "Two")).encode("utf-8").replace(b"__", b"\xff")
    with pytest.raises(PermanentError) as caught:
        parse_page(Document(url=URL, body=body))
    assert "row 2 (code '0\ufffd'" in caught.value.message


def test_invalid_bytes_outside_the_code_rows_fail_the_page_naming_the_offset() -> None:
    text = code_page(row("01", "One"))
    body = text.replace("Home", "Ho__me").encode("utf-8").replace(b"__", b"\x80")
    with pytest.raises(PermanentError) as caught:
        parse_page(Document(url=URL, body=body, charset="utf-8"))
    assert caught.value.kind == "decode"
    assert f"the first at byte {body.index(bytes([0x80]))}" in caught.value.message
    assert "outside the code rows" in caught.value.message


def test_a_page_that_does_not_decode_at_all_names_the_page() -> None:
    body = "<table><tr><th>Côde</th><th>Déscription</th></tr><tr><td>01</td><td>Ün</td></tr></table>"
    with pytest.raises(PermanentError) as caught:
        parse_page(Document(url=URL, body=body.encode("cp1252"), charset="utf-8"))
    assert caught.value.kind == "decode"
    assert f"{URL}: the page is not valid utf-8 text (3 undecodable" in caught.value.message


def test_undefined_windows_1252_bytes_are_an_error() -> None:
    body = code_page(row("01", "One__")).encode("cp1252").replace(b"__", b"\x81")
    with pytest.raises(PermanentError) as caught:
        parse_page(Document(url=URL, body=body, charset="windows-1252"))
    assert "row 1 (code '01'" in caught.value.message and "cp1252" in caught.value.message


CAFE = "<table><tr><th>Code</th><th>Description</th></tr><tr><td>01</td><td>Café’s</td></tr></table>"


@pytest.mark.parametrize(
    ("declaration", "charset", "encoding"),
    [
        ("<meta charset='windows-1252'>", None, "cp1252"),
        ("<meta http-equiv='Content-Type' content='text/html; charset=ISO-8859-1'>", None, "cp1252"),
        ("", "iso-8859-1", "cp1252"),
        ("<meta charset='iso-8859-1'>", "utf-8", "utf-8"),
        ("", "no-such-charset", "utf-8"),
        ("", None, "utf-8"),
    ],
    ids=["meta", "meta-http-equiv", "latin-1-is-windows-1252", "header-beats-meta", "unknown-is-utf-8", "default"],
)
def test_the_charset_is_chosen_as_a_browser_chooses_it(declaration: str, charset: str | None, encoding: str) -> None:
    document = Document(url=URL, body=(declaration + CAFE).encode(encoding), charset=charset)
    assert pairs(parse_page(document)) == [("01", "Café’s")]


def test_a_utf_8_bom_beats_the_declared_charset() -> None:
    document = Document(url=URL, body=b"\xef\xbb\xbf" + CAFE.encode("utf-8"), charset="iso-8859-1")
    assert pairs(parse_page(document)) == [("01", "Café’s")]


def test_a_real_replacement_character_in_the_source_is_kept() -> None:
    body = code_page(row("01", "Shown as \ufffd on the site")).encode("utf-8")
    assert pairs(parse_page(Document(url=URL, body=body, charset="utf-8"))) == [("01", "Shown as \ufffd on the site")]


# --- deeply nested markup -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 1_000, 1_500])
def test_deeply_nested_inline_markup_in_a_cell_parses(depth: int) -> None:
    cell = "<span>" * depth + "Deep" + "</span>" * depth
    rows = parse_page(page(table(("Code", "Description"), row("01", cell), row("02", "Two"))))
    assert pairs(rows) == [("01", "Deep"), ("02", "Two")]


def test_deeply_nested_escaped_markup_in_a_label_normalises() -> None:
    cell = "&lt;span&gt;" * 1_500 + "Deep" + "&lt;/span&gt;" * 1_500
    result = normalise(parse_page(page(table(("Code", "Description"), row("01", cell)))))
    assert result.options == {"01": "Deep"}


@pytest.mark.parametrize("depth", [5_000, 50_000])
def test_markup_nested_beyond_the_parser_limit_is_a_named_error(depth: int) -> None:
    cell = "<span>" * depth + "Deep" + "</span>" * depth
    with pytest.raises(PermanentError) as caught:
        parse_page(page(table(("Code", "Description"), row("01", "One"), row("02", cell), row("03", "Three"))))
    assert caught.value.kind == "too_deep"
    assert URL in caught.value.message and "nested" in caught.value.message


def test_a_page_whose_body_the_parser_drops_is_refused_not_read_as_empty() -> None:
    """``<html <br/>...>`` ends ``<html>`` at once for libxml2, which then drops the whole ``<body>``."""
    text = page(table(("Code", "Description"), row("01", "One"))).body.replace(b"<html", b"<html <br/>", 1)
    with pytest.raises(PermanentError) as caught:
        parse_page(Document(url=URL, body=text, charset="utf-8"))
    assert caught.value.kind == "broken_markup"
    assert URL in caught.value.message and "<body>" in caught.value.message


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "<p>This page is under maintenance.</p>",
        AKA + WHERE_USED,
        "<table><tr><td>x</td></tr></table>",
        "<table></table>",
    ],
    ids=["no-tables", "aka-and-where-used", "one-column", "empty-table"],
)
def test_a_page_without_a_code_table_is_an_error_naming_the_page(body: str) -> None:
    with pytest.raises(PermanentError) as caught:
        parse_page(page(body))
    assert caught.value.kind == "no_code_table"
    assert URL in str(caught.value)
    assert not caught.value.transient


def test_no_code_table_error_says_what_tables_it_saw() -> None:
    with pytest.raises(PermanentError) as caught:
        parse_page(page(AKA))
    assert "context | alias" in caught.value.message.lower()


def test_a_code_table_without_rows_is_empty_not_a_list() -> None:
    body = table(("Code", "Description"), "<tr><td colspan='2'>Group</td></tr>")
    with pytest.raises(PermanentError) as caught:
        parse_page(page(body))
    assert caught.value.kind == "empty"
    assert URL in str(caught.value)


def test_source_parse_reads_the_first_document() -> None:
    rows = NhsDataDictionary().parse(None, [page(table(("Code", "Description"), row("1", "One")))])  # type: ignore[arg-type]
    assert pairs(rows) == [("1", "One")]


# --- robustness (hypothesis) ----------------------------------------------------------------------


def _sample_pages() -> list[bytes]:
    pages = sorted(FIXTURE_PAGES.glob("*.html")) if FIXTURE_PAGES.is_dir() else []
    if pages:
        return [p.read_bytes() for p in pages]
    built = page(
        "<div class='section'><h2 class='sectiontitle'>Format / Length</h2><p>max an2</p></div>"
        f"<h2>Also Known As</h2>{AKA}"
        "<h2 class='sectiontitle'>National Codes</h2>"
        + table(
            ("Code", "Description"),
            "<tr><td colspan='2'><strong>White</strong></td></tr>",
            row("A", "<a href='/british.html'>British</a>"),
            row("0B", "Irish&nbsp;<br/>(incl. Northern)"),
            row("<del>C</del>", "Any other White background (Retired 1 April 2001)", " class='retired'"),
        )
        + "<h2 class='sectiontitle'>Default Codes</h2>"
        + table(("Code", "Description"), row("99", "Not known"))
        + f"<h2>Where Used</h2>{WHERE_USED}"
    ).body
    return [built]


SAMPLES = _sample_pages()
ROBUST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_clear_error(body: bytes, charset: str | None = None) -> None:
    document = Document(url=URL, body=body, charset=charset)
    try:
        rows = parse_page(document)
    except PermanentError as exc:
        assert exc.kind and not exc.transient
        assert URL in str(exc)
        return
    assert rows
    body.decode(html_charset(document))  # rows only ever come from a page that decodes strictly
    assert all(isinstance(r, RawOption) and r.code and isinstance(r.label, str) for r in rows)
    assert all(r.code == r.code.strip() and "\n" not in r.code for r in rows)


@ROBUST
@given(st.sampled_from(range(len(SAMPLES))), st.floats(0, 1), st.floats(0, 1))
def test_truncated_pages_never_crash(which: int, start_at: float, keep: float) -> None:
    body = SAMPLES[which]
    start = int(start_at * len(body))
    _parse_or_clear_error(body[start : start + int(keep * (len(body) - start))])


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_page_cut_short_still_parses_or_fails_clearly(keep: float) -> None:
    for body in SAMPLES:
        _parse_or_clear_error(body[: int(len(body) * keep)])


@ROBUST
@given(st.sampled_from(range(len(SAMPLES))), st.lists(st.integers(min_value=0), max_size=6), st.binary(max_size=8))
def test_spliced_pages_never_crash(which: int, cuts: list[int], junk: bytes) -> None:
    body = SAMPLES[which]
    pieces, last = [], 0
    for cut in sorted(c % (len(body) + 1) for c in cuts):
        pieces.append(body[last:cut])
        last = cut
    pieces.append(body[last:])
    _parse_or_clear_error(junk.join(pieces))


@ROBUST
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.one_of(
                st.text(max_size=10),
                st.sampled_from(
                    [
                        "<table>",
                        "</table>",
                        "<tr>",
                        "</tr>",
                        "<td>",
                        "</td>",
                        "<th>",
                        "<thead>",
                        "<tbody>",
                        "Code",
                        "Description",
                        "<del>",
                        "<h2>Default Codes</h2>",
                        "colspan='2'",
                        "<!--",
                        "&nbsp;",
                        "&",
                        "<",
                        ">",
                    ]
                ),
            ),
            max_size=40,
        ).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass")),
    ),
    st.sampled_from([None, "utf-8", "iso-8859-1", "no-such-charset"]),
)
def test_random_html_never_crashes(body: bytes, charset: str | None) -> None:
    _parse_or_clear_error(body, charset)


@pytest.mark.parametrize("path", sorted(FIXTURE_PAGES.glob("*.html")), ids=lambda path: path.stem)
def test_every_fixture_page_cut_before_its_last_row_is_incomplete(path: Path) -> None:
    """The transfer looks whole (the server stopped writing, then closed): only the markup shows the cut."""
    body = path.read_bytes()
    cut = body[: body.lower().rindex(b"<tr")]
    document = Document(url=URL, body=cut, content_type="text/html", charset="utf-8")
    with pytest.raises(TransientError) as raised:
        require_whole_page(document)
    assert raised.value.kind == "incomplete" and URL in raised.value.message
    require_whole_page(Document(url=URL, body=body, content_type="text/html", charset="utf-8"))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_a_page_cut_anywhere_before_its_end_is_never_read(share: float) -> None:
    body = (FIXTURE_PAGES / "ethnic_category.html").read_bytes()
    end = body.lower().rindex(b"</html")
    document = Document(url=URL, body=body[: int(end * share)], content_type="text/html", charset="utf-8")
    with pytest.raises(TransientError, match="ends early"):
        require_whole_page(document)


def test_the_source_refuses_a_page_cut_mid_table_that_the_extractor_would_read() -> None:
    whole = page(table(("Code", "Description"), row("1", "One"), row("2", "Two")))
    cut = Document(url=URL, body=whole.body[: whole.body.rindex(b"<tr")], charset="utf-8")
    assert pairs(parse_page(cut)) == [("1", "One")]  # lxml closes the open table: a partial list
    with pytest.raises(TransientError, match="1 table\\(s\\) opened, 0 closed"):
        NhsDataDictionary().parse(None, [cut])  # type: ignore[arg-type]
