"""The NHS Data Dictionary page parser, on small inline pages and on random or truncated HTML."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapers.errors import PermanentError
from scrapers.http import Document
from scrapers.nhs_dd import NhsDataDictionary, parse_page
from scrapers.normalise import RawOption, normalise

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
    try:
        rows = parse_page(Document(url=URL, body=body, charset=charset))
    except PermanentError as exc:
        assert exc.kind and not exc.transient
        assert URL in str(exc)
        return
    assert rows
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
