"""Normalisation: browser-like text, plain clean codes and labels, canonical options and hash."""

from __future__ import annotations

import re
import unicodedata

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapers.errors import PermanentError
from scrapers.normalise import (
    Limits,
    OptionList,
    RawOption,
    clean_text,
    content_hash,
    html_to_text,
    normalise,
)

MARKUP = re.compile(r"<[A-Za-z/!?][^<>]*>")
FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co"}


def cell_text(html: str) -> str:
    """``html_to_text`` of the first table cell in ``html``, as the nhs_dd parser calls it."""
    soup = BeautifulSoup(f"<table><tr>{html}</tr></table>", "lxml")
    return html_to_text(soup.find("td"))


def assert_plain(text: str) -> None:
    """Plain single-line text: no markup, no control characters, whitespace collapsed and trimmed."""
    assert not MARKUP.search(text), text
    assert not [c for c in text if unicodedata.category(c) in FORBIDDEN_CATEGORIES], repr(text)
    assert all(c == " " or not c.isspace() for c in text), repr(text)
    assert text == text.strip(), repr(text)
    assert "  " not in text, repr(text)


# --- html_to_text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<td><a href='/x'>PATIENT</a>s</td>", "PATIENTs"),
        ("<td><a href='/x'>PATIENTS</a> with a <em>CARE PLAN</em></td>", "PATIENTS with a CARE PLAN"),
        ("<td>the <span>Hospital</span><b>Provider</b></td>", "the HospitalProvider"),
        ("<td><p>First paragraph.</p><p>Second paragraph.</p></td>", "First paragraph. Second paragraph."),
        ("<td>line one<br>line two<br/>line three</td>", "line one line two line three"),
        ("<td><div>a</div><div>b</div><ul><li>c</li><li>d</li></ul></td>", "a b c d"),
    ],
)
def test_inline_elements_join_and_block_boundaries_become_one_space(html: str, expected: str) -> None:
    assert cell_text(html) == expected


def test_nbsp_newlines_and_tabs_collapse_to_single_spaces() -> None:
    assert cell_text("<td>\n  Not&nbsp;&nbsp;stated\xa0\n\t(PERSON  asked)\r\n </td>") == "Not stated (PERSON asked)"


def test_entities_are_decoded() -> None:
    assert cell_text("<td>A &amp; E &lt;urgent&gt; caf&eacute; &#8211; &#x2019;s</td>") == "A & E <urgent> café – ’s"


def test_comments_scripts_and_styles_are_dropped() -> None:
    html = "<td>Hos<!-- an editor's note -->pital<script>alert('x')</script><style>td{}</style> Provider</td>"
    assert cell_text(html) == "Hospital Provider"


def test_html_to_text_of_a_plain_string() -> None:
    assert html_to_text("  two\n words ") == "two words"


# --- clean_text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<b>Bold</b> label", "Bold label"),
        ("Mixed <i>italic</i> and <a href='x'>link</a>", "Mixed italic and link"),
        ("line<br/>break", "line break"),
        ("<!-- hidden -->visible", "visible"),
        ("<<b>i>nested", "nested"),
        ("<b>&lt;script&gt;</b>x", "x"),
    ],
)
def test_clean_text_removes_markup(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b\x07c\x1bd", "abcd"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("bidi\u202econtrol", "bidicontrol"),
        ("tab\tnew\nline\r\n", "tab new line"),
        ("\xa0 padded \u2003 ", "padded"),
    ],
)
def test_clean_text_removes_control_characters_and_collapses_whitespace(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_clean_text_keeps_plain_punctuation_and_unicode() -> None:
    text = "Tŷ Llidiard - Guy's & St Thomas' (A < B > C) 1/2"
    assert clean_text(text) == text


@pytest.mark.parametrize("raw", ["<b>x</b>", "&amp;lt;b&amp;gt;", "<p>a&lt;i&gt;b</p>", "a  b\x00", "<<<b>>>"])
def test_clean_text_is_idempotent_on_examples(raw: str) -> None:
    once = clean_text(raw)
    assert clean_text(once) == once


def _escaped(text: str, times: int) -> str:
    for _ in range(times):
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


@pytest.mark.parametrize("depth", [3, 12])
def test_clean_text_never_emits_markup_for_deeply_escaped_input(depth: int) -> None:
    # every round of unescaping reveals "<<x>b>", which becomes "<b>" once "<x>" is stripped
    raw = "<br>" + "".join(_escaped("<<x>b>", level) for level in range(1, depth + 1))
    once = clean_text(raw)
    assert not MARKUP.search(once), once[:80]
    assert clean_text(once) == once


# --- normalise ------------------------------------------------------------------------------------


def test_source_order_is_kept() -> None:
    rows = [
        RawOption("Z", "last letter"),
        RawOption("A", "first letter"),
        RawOption("10", "ten"),
        RawOption("2", "two"),
    ]
    result = normalise(rows)
    assert list(result.options.items()) == [("Z", "last letter"), ("A", "first letter"), ("10", "ten"), ("2", "two")]
    assert result.warnings == ()


def test_first_duplicate_wins_and_the_rest_are_reported_by_code() -> None:
    rows = [RawOption("A", "First"), RawOption("B", "Bee"), RawOption(" A ", "Second"), RawOption("A", "Third")]
    result = normalise(rows)
    assert result.options == {"A": "First", "B": "Bee"}
    assert list(result.options) == ["A", "B"]
    duplicates = [w for w in result.warnings if "duplicate" in w]
    assert len(duplicates) == 2
    assert all("'A'" in w for w in duplicates)
    assert "row 3" in duplicates[0] and "row 4" in duplicates[1]


def test_codes_and_labels_are_cleaned() -> None:
    rows = [RawOption("  01\n", "<a href='x'>PATIENT</a>s &nbsp;seen\xa0\xa0today "), RawOption("\t02", "Two\x00")]
    assert normalise(rows).options == {"01": "PATIENTs seen today", "02": "Two"}


def test_retired_rows_are_kept_and_marked() -> None:
    rows = [RawOption("01", "Live"), RawOption("02", "Old code", retired=True)]
    result = normalise(rows)
    assert result.options == {"01": "Live", "02": "Old code (Retired)"}
    assert result.retired_codes == ("02",)


def test_retired_label_that_already_says_retired_is_not_suffixed_again() -> None:
    rows = [RawOption("03", "Old code (Retired 1 April 2020)", retired=True)]
    result = normalise(rows)
    assert result.options == {"03": "Old code (Retired 1 April 2020)"}
    assert result.retired_codes == ("03",)


def test_retired_text_in_the_label_marks_the_code_retired() -> None:
    result = normalise([RawOption("04", "Gone (Retired 31 March 2021)"), RawOption("05", "Live")])
    assert result.retired_codes == ("04",)
    assert result.options["04"] == "Gone (Retired 31 March 2021)"


def test_a_live_code_whose_meaning_is_retired_is_not_flagged_retired() -> None:
    # e.g. an employment status "Retired": the word is the code's meaning, not a retirement mark
    result = normalise([RawOption("06", "Retired"), RawOption("07", "Retired from paid work")])
    assert result.options == {"06": "Retired", "07": "Retired from paid work"}
    assert result.retired_codes == ()


def test_default_codes_are_flagged_in_order() -> None:
    rows = [
        RawOption("A", "White"),
        RawOption("99", "Not known", default=True),
        RawOption("Z", "Not stated", default=True),
    ]
    result = normalise(rows)
    assert result.default_codes == ("99", "Z")
    assert list(result.options) == ["A", "99", "Z"]


def test_duplicate_default_row_does_not_add_a_second_flag() -> None:
    result = normalise([RawOption("99", "Not known", default=True), RawOption("99", "Again", default=True)])
    assert result.default_codes == ("99",)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (RawOption("", "No code"), "empty code"),
        (RawOption(" \xa0<b></b>", "Markup only code"), "empty code"),
        (RawOption("X", ""), "empty label"),
        (RawOption("X", "<br/>\n"), "empty label"),
        (RawOption("C" * 11, "Long code"), "code longer than 10"),
        (RawOption("X", "L" * 21), "label longer than 20"),
    ],
)
def test_a_bad_row_fails_the_whole_list_naming_the_row(row: RawOption, problem: str) -> None:
    with pytest.raises(PermanentError) as caught:
        normalise([RawOption("OK", "Fine"), row], Limits(max_code_length=10, max_label_length=20), "https://h/x")
    assert caught.value.kind == "bad_row"
    assert f"https://h/x: row 2 (code {clean_text(row.code)[:40]!r}): {problem}" in str(caught.value)
    assert "not applied" in str(caught.value)


def test_a_bad_row_is_named_by_where_the_source_found_it() -> None:
    row = RawOption("X", "L" * 21, where="https://h/x?page=2 item 7")
    with pytest.raises(PermanentError, match=r"^https://h/x\?page=2 item 7 \(code 'X'\): label longer than 20"):
        normalise([row], Limits(max_label_length=20), "https://h/x")


def test_limits_are_inclusive() -> None:
    result = normalise([RawOption("C" * 10, "L" * 20)], Limits(max_code_length=10, max_label_length=20))
    assert result.options == {"C" * 10: "L" * 20}


def test_over_long_label_is_not_truncated_silently() -> None:
    with pytest.raises(PermanentError, match="label longer than 1000 characters \\(1001\\)"):
        normalise([RawOption("X", "L" * 1001)])


def test_codes_keep_leading_zeros_and_case() -> None:
    rows = [
        RawOption("01", "one"),
        RawOption("1", "bare one"),
        RawOption("001", "three digits"),
        RawOption("2a", "lower"),
        RawOption("2A", "upper"),
    ]
    result = normalise(rows)
    assert list(result.options) == ["01", "1", "001", "2a", "2A"]
    assert all(isinstance(code, str) for code in result.options)


def test_option_list_hash_matches_content_hash() -> None:
    result = normalise([RawOption("A", "a"), RawOption("B", "b")])
    assert isinstance(result, OptionList)
    assert result.content_hash == content_hash({"A": "a", "B": "b"})


# --- content_hash ---------------------------------------------------------------------------------


def test_content_hash_is_deterministic_and_hex_sha256() -> None:
    options = {"01": "One", "02": "Two – ŷ"}
    assert content_hash(options) == content_hash(dict(options))
    assert re.fullmatch(r"[0-9a-f]{64}", content_hash(options))


def test_content_hash_is_order_sensitive() -> None:
    assert content_hash({"A": "a", "B": "b"}) != content_hash({"B": "b", "A": "a"})


@pytest.mark.parametrize(
    "other", [{"A": "a", "B": "B"}, {"A": "a"}, {"A": "a", "B": "b", "C": "c"}, {"A": "a", "b": "b"}, {}]
)
def test_content_hash_changes_with_any_change(other: dict[str, str]) -> None:
    assert content_hash({"A": "a", "B": "b"}) != content_hash(other)


def test_content_hash_does_not_confuse_code_label_boundaries() -> None:
    assert content_hash({"AB": "C"}) != content_hash({"A": "BC"})
    assert content_hash({"A": "B,C"}) != content_hash({"A": "B", "C": ""})


# --- properties -----------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "<b>",
        "</b>",
        "<br/>",
        "&amp;",
        "&lt;b&gt;",
        "\xa0",
        "\n",
        "<",
        ">",
        "<!--",
        "-->",
        "<p>",
        "</p>",
        "<a href='x'>",
        "</a>",
        "&nbsp;",
        "\x00",
        "\u200b",
        " ",
    ]
)
HTMLISH = st.lists(st.one_of(st.text(max_size=12), FRAGMENTS), max_size=16).map("".join)
ROW = st.builds(RawOption, code=HTMLISH, label=HTMLISH, retired=st.booleans(), default=st.booleans())
ROWS = st.lists(ROW, max_size=12)


def keepable(row: RawOption, limits: Limits = Limits()) -> bool:
    code, label = clean_text(row.code), clean_text(row.label)
    return 0 < len(code) <= limits.max_code_length and 0 < len(label) <= limits.max_label_length


KEPT_ROWS = st.lists(ROW.filter(keepable), max_size=12)
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(HTMLISH)
def test_clean_text_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once


@PROPERTY_SETTINGS
@given(HTMLISH)
def test_clean_text_output_is_plain(text: str) -> None:
    assert_plain(clean_text(text))


def attempt(rows: list[RawOption]) -> OptionList | str:
    """The options, or the message of the error that refused the list."""
    try:
        return normalise(rows)
    except PermanentError as error:
        return error.message


@PROPERTY_SETTINGS
@given(ROWS)
def test_normalise_either_keeps_every_row_or_refuses_the_list(rows: list[RawOption]) -> None:
    result = attempt(rows)
    if isinstance(result, str):
        assert "not applied" in result
        assert not all(keepable(row) for row in rows)
    else:
        assert all(keepable(row) for row in rows)
        assert len(result.options) + len(result.warnings) == len(rows)
    assert attempt(list(rows)) == result


@PROPERTY_SETTINGS
@given(KEPT_ROWS)
def test_normalise_is_deterministic(rows: list[RawOption]) -> None:
    first, second = normalise(rows), normalise(list(rows))
    assert list(first.options.items()) == list(second.options.items())
    assert first.content_hash == second.content_hash
    assert (first.retired_codes, first.default_codes, first.warnings) == (
        second.retired_codes,
        second.default_codes,
        second.warnings,
    )


@PROPERTY_SETTINGS
@given(KEPT_ROWS)
def test_normalise_never_emits_markup_control_characters_or_loose_whitespace(rows: list[RawOption]) -> None:
    result = normalise(rows)
    for code, label in result.options.items():
        assert code and label
        assert_plain(code)
        assert_plain(label)
    assert set(result.retired_codes) <= set(result.options)
    assert set(result.default_codes) <= set(result.options)
    assert len(result.options) + len(result.warnings) == len(rows)


@PROPERTY_SETTINGS
@given(KEPT_ROWS)
def test_normalising_normalised_options_changes_nothing(rows: list[RawOption]) -> None:
    first = normalise(rows)
    again = normalise([RawOption(code, label) for code, label in first.options.items()])
    assert list(again.options.items()) == list(first.options.items())
    assert again.content_hash == first.content_hash
    assert again.warnings == ()
