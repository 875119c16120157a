"""The lxml extractor gives exactly what the previous BeautifulSoup extractor gave, page for page.

The oracle (``tests/scrapers/nhs_dd_oracle.py``) is the extractor the product used before it moved
to lxml's C tree for speed. For every fixture page, for generated NHS-DD-like pages and for cut or
spliced pages, both must return the same rows (code, label, retired and default marks) or fail
with the same error, so the speed-up cannot change a label.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapers.errors import PermanentError
from scrapers.http import Document
from scrapers.nhs_dd import parse_page
from scrapers.normalise import RawOption, normalise
from tests.scrapers.nhs_dd_oracle import oracle_rows

URL = "https://www.datadictionary.nhs.uk/data_elements/generated.html"
PAGES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream" / "www.datadictionary.nhs.uk" / "data_elements"
FIXTURE_TEXTS = {path.name: path.read_text(encoding="utf-8") for path in sorted(PAGES.glob("*.html"))}
DIFFERENTIAL = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(read: object) -> tuple[str, object]:
    """Rows, or the error a page gives: what two extractors must agree on."""
    try:
        return "rows", read()  # type: ignore[operator]
    except PermanentError as error:
        return "error", (error.kind, error.message)


def product(text: str) -> tuple[str, object]:
    return outcome(lambda: parse_page(Document(url=URL, body=text.encode("utf-8"), charset="utf-8")))


def oracle(text: str) -> tuple[str, object]:
    return outcome(lambda: oracle_rows(text, URL))


def assert_same(text: str) -> None:
    expected, got = oracle(text), product(text)
    if got[0] == "error" and got[1][0] == "broken_markup":  # type: ignore[index]
        return  # libxml2 lost the <body> (e.g. ``<html <br/>lang=...>``): refused, never a different list
    assert got == expected
    if expected[0] == "rows":
        rows: list[RawOption] = expected[1]  # type: ignore[assignment]
        document = Document(url=URL, body=text.encode("utf-8"))
        assert outcome(lambda: normalise(parse_page(document))) == outcome(lambda: normalise(rows))


def test_the_fixture_pages_are_all_there() -> None:
    assert len(FIXTURE_TEXTS) == 57


@pytest.mark.parametrize("name", sorted(FIXTURE_TEXTS))
def test_every_fixture_page_reads_the_same(name: str) -> None:
    assert product(FIXTURE_TEXTS[name])[0] == "rows"
    assert_same(FIXTURE_TEXTS[name])


# --- generated pages ------------------------------------------------------------------------------

WORDS = st.sampled_from(
    ["PATIENT", "s", "Not known", "Retired", "(Retired 1 April 2020)", "retired from work", "Café", "’", "1", "2A"]
)
ENTITIES = st.sampled_from(["&amp;", "&nbsp;", "&#39;", "&rsquo;", "&lt;b&gt;", "&foo;", "&", "&#160;", "&#x2014;"])
SPACES = st.sampled_from([" ", "  ", "\n", "\t", "\u00a0", "\n      ", ""])
TEXT = st.lists(
    st.one_of(WORDS, WORDS, ENTITIES, SPACES, st.text(alphabet="abcXYZ09 -/()", min_size=1, max_size=6)),
    min_size=1,
    max_size=4,
).map("".join)
INLINE = st.sampled_from(
    [
        "a class='xref' href='../classes/patient.html'",
        "span",
        "span class='ph'",
        "em",
        "strong",
        "abbr",
        "del",
        "s",
        "strike",
        "span style='text-decoration: line-through'",
        "span class='Retired-code'",
        "sup",
        "span",
        "a href='../x.html'",
        "b",
    ]
)
BLOCK = st.sampled_from(["p class='p'", "p", "div", "li", "ul", "section", "h3", "div class='tabletitle'", "td"])
SPECIAL = st.sampled_from(
    ["<br/>", "<br>", "<!-- comment -->", "<script>var x = '<td>';</script>", "<style>td{}</style>", "<wbr>", "<hr/>"]
)


def _wrap(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def element(tag: str, inner: str) -> str:
        return f"<{tag}>{inner}</{tag.split()[0]}>"

    return st.one_of(
        st.builds(element, st.one_of(INLINE, BLOCK), children),
        st.lists(children, min_size=2, max_size=3).map("".join),
    )


MARKUP = st.recursive(st.one_of(TEXT, TEXT, TEXT, SPECIAL), _wrap, max_leaves=8)
CODE = st.one_of(
    st.sampled_from(["01", "2A", "X", "0", "99", "01001", "", "&nbsp;", " 05 "]),
    st.builds(lambda code, tag: f"<{tag}>{code}</{tag}>", st.sampled_from(["01", "9"]), st.sampled_from(["p", "span"])),
    MARKUP,
)
ROW_ATTRS = st.sampled_from(
    ["", "", " class='strow'", " class='strow'", " class='strow retired'", " style='text-decoration:line-through'"]
)
CODE_CELL = st.sampled_from(["td", "th scope='row'", "th"])


def _row(attrs: str, cell: str, code: str, label: str) -> str:
    return f"<tr{attrs}><{cell}>{code}</{cell.split()[0]}><td>{label}</td></tr>"


CODE_ROW = st.builds(_row, ROW_ATTRS, CODE_CELL, CODE, MARKUP)
ROW = st.one_of(
    CODE_ROW,
    CODE_ROW,
    CODE_ROW,
    st.builds(lambda text: f"<tr><td colspan='2'><strong>{text}</strong></td></tr>", TEXT),
    st.builds(lambda text: f"<tr><td></td><td><strong>{text}</strong></td></tr>", TEXT),
    st.just("<tr><td>only one cell</td></tr>"),
)
HEADER = st.sampled_from(
    [
        ("Code", "Description"),
        ("Code", "Description"),
        ("Code", "Description"),
        ("National Code", "National Code Definition"),
        ("Default Code", "Default Code Definition"),
        ("Permitted National Code", "Permitted National Code Definition"),
        ("Code", "Meaning"),
        ("CODE", "DESCRIPTION"),
        ("&nbsp;Code\n", " description&nbsp;"),
        ("Context", "Alias"),
        ("Type", "Link"),
        ("Code", "Notes"),
    ]
)


def _table(header: tuple[str, str], style: str, rows: list[str]) -> str:
    if style == "thead":
        return f"<table class='simpletable'><thead><tr><th>{header[0]}</th><th>{header[1]}</th></tr></thead>" + (
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    if style == "strong":
        head = f"<tr><td><strong>{header[0]}</strong></td><td><strong>{header[1]}</strong></td></tr>"
        return f"<table><tbody>{head}{''.join(rows)}</tbody></table>"
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{''.join(rows)}</table>"


TABLE = st.builds(_table, HEADER, st.sampled_from(["thead", "strong", "bare"]), st.lists(ROW, min_size=1, max_size=6))
HEADING_TEXT = st.sampled_from(
    [
        "National Codes",
        "Permitted National Codes",
        "PERMITTED NATIONAL CODES",
        "Permitted&nbsp;<a href='x.html'>National Codes</a>",
        "Default Codes",
        "Also Known As",
        "Where Used",
        "Description",
    ]
)
HEADING = st.builds(
    lambda form, text: form.format(text),
    st.sampled_from(
        [
            "<h2 class='title topictitle2'>{}</h2>",
            "<h3 class='sectiontitle'>{}</h3>",
            "<div class='tabletitle'>{}</div>",
        ]
    ),
    HEADING_TEXT,
)
SECTION = st.builds(
    lambda heading, parts: (
        f"<article class='topic nested1'>{heading}<div class='body'>{''.join(parts)}</div></article>"
    ),
    st.one_of(HEADING, st.just("")),
    st.lists(st.one_of(TABLE, TABLE, MARKUP.map(lambda inner: f"<p>{inner}</p>")), min_size=1, max_size=3),
)


def _page(sections: list[str]) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>T</title></head><body>"
        "<nav><ul><li><a href='/'>Home</a></li></ul></nav><main><h1 class='title topictitle1'>TEST ELEMENT</h1>"
        + "".join(sections)
        + "</main></body></html>"
    )


PAGE = st.lists(SECTION, min_size=1, max_size=5).map(_page)


@DIFFERENTIAL
@given(PAGE)
def test_generated_pages_read_the_same(text: str) -> None:
    assert_same(text)


@DIFFERENTIAL
@given(st.sampled_from(sorted(FIXTURE_TEXTS)), st.floats(0, 1), st.floats(0, 1))
def test_cut_fixture_pages_read_the_same(name: str, start_at: float, keep: float) -> None:
    text = FIXTURE_TEXTS[name]
    start = int(start_at * len(text))
    assert_same(text[start : start + int(keep * (len(text) - start))])


@DIFFERENTIAL
@given(st.sampled_from(sorted(FIXTURE_TEXTS)), st.lists(st.integers(min_value=0), max_size=6), MARKUP)
def test_spliced_fixture_pages_read_the_same(name: str, cuts: list[int], junk: str) -> None:
    text, pieces, last = FIXTURE_TEXTS[name], [], 0
    for cut in sorted(c % (len(text) + 1) for c in cuts):
        pieces.append(text[last:cut])
        last = cut
    pieces.append(text[last:])
    assert_same(junk.join(pieces))


@DIFFERENTIAL
@given(
    st.lists(
        st.one_of(
            st.text(max_size=8).filter(lambda t: "\x00" not in t),
            st.sampled_from(["<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>", "<thead>", "Code"]),
            st.sampled_from(["Description", "<del>", "<h2>Permitted National Codes</h2>", "<h2>Default Codes</h2>"]),
            st.sampled_from(["colspan='2'", "<!--", "-->", "&nbsp;", "&", "<", ">", "<br>", "<p>", "</p>", "<?x y?>"]),
        ),
        max_size=40,
    ).map("".join)
)
def test_tag_soup_reads_the_same(text: str) -> None:
    assert_same(text)


@pytest.mark.parametrize("depth", [255, 256, 257, 900, 1_500, 2_000])
def test_deeply_nested_cells_read_the_same(depth: int) -> None:
    cell = "<span>" * depth + "Deep <em>text</em>" + "</span>" * depth
    rows = f"<tr><td>01</td><td>{cell}</td></tr><tr><td>02</td><td>Two</td></tr>"
    text = _page([f"<h2>National Codes</h2><table><tr><th>Code</th><th>Description</th></tr>{rows}</table>"])
    assert product(text) == oracle(text) == ("rows", [RawOption("01", "Deep text"), RawOption("02", "Two")])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAGE, st.sampled_from(["header", "meta", "http-equiv"]))
def test_generated_windows_1252_pages_read_the_same_as_their_text(text: str, declared: str) -> None:
    try:
        body = text.replace("<meta charset='utf-8'>", "").encode("cp1252")
    except UnicodeEncodeError:
        body = text.replace("<meta charset='utf-8'>", "").encode("cp1252", "xmlcharrefreplace")
    declaration = {
        "header": b"",
        "meta": b"<meta charset='windows-1252'>",
        "http-equiv": b"<meta http-equiv='Content-Type' content='text/html; charset=iso-8859-1'>",
    }[declared]
    document = Document(url=URL, body=declaration + body, charset="windows-1252" if declared == "header" else None)
    expected = oracle((declaration + body).decode("cp1252"))
    assert outcome(lambda: parse_page(document)) == expected
