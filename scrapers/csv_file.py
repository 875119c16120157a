"""CSV files over HTTP(S): one column is the code, another (or a template of several) the label.

Decoded by the declared charset, else UTF-8 (a byte-order mark is dropped); the delimiter is
sniffed from the header line unless the catalogue names it. Quoting follows RFC 4180 (commas and
doubled quotes inside quotes, CRLF or LF line ends). A row whose field count differs from the
header's is an error, never a silently shifted or dropped row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from pydantic import Field, field_validator, model_validator

from scrapers.base import Source, SourceEntry, SourceParams, decode_text
from scrapers.errors import PermanentError
from scrapers.http import Document
from scrapers.normalise import RawOption
from scrapers.records import FieldMap, check_template

DELIMITERS = ",;\t|"
NOT_CSV = frozenset({"text/html", "application/xhtml+xml", "application/json", "application/pdf", "application/xml"})


class CsvColumns(SourceParams):
    """Which columns make an option; shared by every kind that ends in a CSV file."""

    code_column: str = Field(min_length=1)
    label_column: str | None = Field(None, min_length=1)
    label_template: str | None = None
    delimiter: str | None = Field(None, min_length=1, max_length=1)

    _template = field_validator("label_template")(check_template)

    @model_validator(mode="after")
    def _one_label(self) -> CsvColumns:
        if (self.label_column is None) == (self.label_template is None):
            raise ValueError("set exactly one of label_column and label_template")
        return self

    @property
    def fields(self) -> FieldMap:
        return FieldMap(self.code_column, self.label_column, self.label_template)


class CsvFile(Source):
    kind = "csv"
    source_type = "api"
    params_model = CsvColumns
    accept = "text/csv, text/plain;q=0.9, */*;q=0.1"

    def parse(self, entry: SourceEntry, documents: list[Document]) -> list[RawOption]:
        return parse_csv(documents[-1], entry.params)


def parse_csv(document: Document, params: CsvColumns) -> list[RawOption]:
    """Every data row of the file as an option, in file order."""
    if document.content_type in NOT_CSV:
        raise PermanentError("not_csv", f"{document.url}: expected a CSV file, got {document.content_type}")
    text = decode_text(document).removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=params.delimiter or _sniff(text), strict=True)
    rows = _rows(reader, document.url)
    _, first = next(rows, (0, None))
    if first is None:
        raise PermanentError("empty", f"{document.url}: the CSV file has no header row")
    header = [name.strip() for name in first]
    params.fields.check(header, f"{document.url}: the CSV header")
    twice = [name for name in params.fields.needed if header.count(name) > 1]
    if twice:
        names = ", ".join(map(repr, twice))
        raise PermanentError("bad_csv", f"{document.url}: column(s) {names} appear more than once")
    options = []
    for line, row in rows:
        if len(row) != len(header):
            raise PermanentError(
                "bad_csv", f"{document.url}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        options.append(params.fields.option(dict(zip(header, row, strict=True))))
    return options


def _rows(reader: Iterator[list[str]], url: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the line each ends on; a malformed quote is an error naming the line."""
    line = 0
    try:
        for row in reader:
            line += 1 + sum(cell.count("\n") for cell in row)
            if any(cell.strip() for cell in row):
                yield line, row
    except csv.Error as exc:
        raise PermanentError("bad_csv", f"{url}: after line {line}: {exc}") from exc


def _sniff(text: str) -> str:
    """The delimiter the header line uses most (outside quotes); a comma when it uses none."""
    header = text.split("\n", 1)[0]
    unquoted = "".join(part for index, part in enumerate(header.split('"')) if index % 2 == 0)
    counts = {delimiter: unquoted.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","
