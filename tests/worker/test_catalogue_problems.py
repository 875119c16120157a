"""Catalogue errors located by JSON pointers, and the ``[publish]`` table (defaults and checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from publisher.defaults import OPEN_GOVERNMENT_LICENCE, PublishDefaults
from tests.worker.test_catalogue import FIRST, JSON_ENTRY, second, write
from worker.catalogue import CatalogueError, load_catalogue
from worker.problems import Problem, pointer, problem_document


def problems_for(tmp_path: Path, text: str) -> tuple[str, list[dict[str, str]]]:
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(write(tmp_path, text))
    return str(caught.value), [problem.to_json() for problem in caught.value.errors]


def test_an_entry_field_is_located_by_its_index_in_the_file(tmp_path: Path) -> None:
    message, errors = problems_for(tmp_path, FIRST + second(url="ftp://x", name=""))
    assert "entry 2 (key 'second_list'): field 'name'" in message
    assert [(e["location"], e["type"]) for e in errors] == [
        ("/datasets/1/name", "string_too_short"),
        ("/datasets/1/url", "value_error"),
    ]
    assert errors[1]["detail"] == "must be an absolute http:// or https:// URL"
    _, errors = problems_for(tmp_path, FIRST + second(colour="red"))
    assert [(e["location"], e["type"], e["detail"]) for e in errors] == [
        ("/datasets/1/colour", "unknown_key", "unknown key")
    ]


def test_a_source_parameter_is_located_too(tmp_path: Path) -> None:
    _, errors = problems_for(tmp_path, JSON_ENTRY.replace('code_field = "ods_code"\n', ""))
    assert [e["location"] for e in errors] == ["/datasets/0/code_field"]
    assert errors[0]["type"] == "missing"


@pytest.mark.parametrize(
    ("text", "location", "kind"),
    [
        (FIRST + "\n[extras]\nx = 1\n", "/extras", "unknown_key"),
        (FIRST + FIRST, "/datasets/1/key", "duplicate"),
        ("title = 'x'\n", "/datasets", "missing"),
        ("publish = 3\n" + FIRST, "/publish", "type"),
        ("[[datasets]\n", "", "toml"),
    ],
)
def test_file_level_problems_are_located(tmp_path: Path, text: str, location: str, kind: str) -> None:
    _, errors = problems_for(tmp_path, text)
    assert [(e["location"], e["type"]) for e in errors] == [(location, kind)]


def test_without_a_publish_table_every_default_applies(tmp_path: Path) -> None:
    defaults = load_catalogue(write(tmp_path, FIRST)).publish
    assert defaults == PublishDefaults()
    assert (defaults.access_rights, defaults.security_classification, defaults.type) == ("OPEN", "OFFICIAL", "Data Set")
    assert defaults.licence == OPEN_GOVERNMENT_LICENCE and defaults.themes == ("Health",)
    assert defaults.creator_for("nhs_dd") == "NHS England" and defaults.creator_for("external_api") is None


def test_a_publish_table_sets_the_shared_fields(tmp_path: Path) -> None:
    table = """
[publish]
publisher = "our-trust"
access_rights = "RESTRICTED"
themes = ["Health", "Population and society"]
contact_point = [{ name = "Data team", email = "data@example.org" }]
licence = { name = "Custom", url = "https://example.org/licence" }
"""
    defaults = load_catalogue(write(tmp_path, table + FIRST)).publish
    assert defaults.publisher == "our-trust" and defaults.access_rights == "RESTRICTED"
    assert defaults.contact_point[0].role == "contact" and defaults.licence.name == "Custom"
    assert defaults.creator_for("external_api") == "our-trust"


def test_publish_values_outside_the_catalogue_rules_are_located(tmp_path: Path) -> None:
    table = f"""
[publish]
publisher = "{"p" * 76}"
security_classification = "CONFIDENTIAL"
contact_point = [{{ name = "Data team", email = "not-an-address" }}]
colour = "red"
"""
    message, errors = problems_for(tmp_path, table + FIRST)
    assert message.startswith(f"{tmp_path / 'my-catalogue.toml'}: [publish]: field 'publisher'")
    assert {e["location"]: e["type"] for e in errors} == {
        "/publish/publisher": "string_too_long",
        "/publish/security_classification": "literal_error",
        "/publish/contact_point/0/email": "string_pattern_mismatch",
        "/publish/colour": "unknown_key",
    }


def test_selecting_an_unknown_key_is_a_located_error(tmp_path: Path) -> None:
    catalogue = load_catalogue(write(tmp_path, FIRST))
    with pytest.raises(CatalogueError) as caught:
        catalogue.select(["nope"])
    assert [p.type for p in caught.value.errors] == ["unknown_dataset"]


def test_pointer_escapes_and_the_document_shape() -> None:
    assert pointer("a/b", "c~d", 0) == "/a~1b/c~0d/0"
    assert problem_document("bad", "catalogue_invalid", [Problem("enum", "no", "/x")]) == {
        "message": "bad",
        "code": "catalogue_invalid",
        "errors": [{"type": "enum", "detail": "no", "location": "/x"}],
    }
    assert problem_document("bad", "c", [])["errors"] == [{"type": "invalid", "detail": "bad", "location": ""}]
