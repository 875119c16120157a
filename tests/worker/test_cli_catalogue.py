"""``datasync catalogue check`` and ``datasync catalogue discover nhs_dd``, run as an operator runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.upstream import FIXTURES, Upstream
from worker.settings import DEFAULT_CATALOGUE, REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "catalogue.toml"
DD = "www.datadictionary.nhs.uk"
INDEX = f"""<html><head><title>Data Elements</title></head><body>
<h1>Data Elements</h1>
<ul>
  <li><a href="data_elements/ethnic_category.html">ETHNIC CATEGORY</a></li>
  <li><a href="/data_elements/discharge_method_code.html">DISCHARGE METHOD CODE</a></li>
  <li><a href="https://{DD}/data_elements/discharge_method_code.html#top">DISCHARGE METHOD CODE</a></li>
  <li><a href="data_elements/person_birth_date.html">PERSON BIRTH DATE</a></li>
  <li><a href="data_elements/smoking_status_code.html">SMOKING STATUS CODE</a></li>
  <li><a href="data_elements/out-patient_outcome.html">OUT-PATIENT OUTCOME</a></li>
  <li><a href="data_elements/vanished_element.html">VANISHED ELEMENT</a></li>
  <li><a href="https://example.org/data_elements/elsewhere.html">ELSEWHERE</a></li>
  <li><a href="classes/patient.html">PATIENT</a></li>
</ul></body></html>"""
CODE_PAGE = """<html><body><h1>{title}</h1><h2>National Codes</h2>
<table><thead><tr><th>Code</th><th>Description</th></tr></thead><tbody>
<tr><td>1</td><td>Patient discharged on clinical advice or with clinical consent</td></tr>
<tr><td>2</td><td>Patient discharged him/herself or was discharged by a relative or advocate</td></tr>
<tr><td>4</td><td>Patient died</td></tr></tbody></table></body></html>"""
NO_CODES = "<html><body><h1>PERSON BIRTH DATE</h1><h2>Format / Length</h2><p>an10 CCYY-MM-DD</p></body></html>"


def datasync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("DATASYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env={**base, **env}, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def dictionary(tmp_path: Path) -> Iterator[Upstream]:
    root = tmp_path / "upstream"
    elements = root / DD / "data_elements"
    elements.mkdir(parents=True)
    (root / DD / "data_elements_overview.html").write_text(INDEX, encoding="utf-8")
    shutil.copy(FIXTURES / DD / "data_elements" / "ethnic_category.html", elements)
    shutil.copy(FIXTURES / DD / "data_elements" / "smoking_status_code.html", elements)
    (elements / "discharge_method_code.html").write_text(CODE_PAGE.format(title="DISCHARGE METHOD CODE"))
    (elements / "out-patient_outcome.html").write_text(CODE_PAGE.format(title="OUT-PATIENT OUTCOME"))
    (elements / "person_birth_date.html").write_text(NO_CODES)
    with Upstream(root=root) as server:
        yield server


def test_check_passes_the_shipped_and_example_catalogues() -> None:
    for path in (DEFAULT_CATALOGUE, EXAMPLES):
        result = datasync({}, "catalogue", "check", str(path))
        assert result.returncode == 0, result.stderr
        assert "all valid" in result.stdout


def test_check_prints_a_path_that_looks_like_markup_or_an_emoji_code_as_it_is(tmp_path: Path) -> None:
    target = tmp_path / "[bold]:hospital:[/bold]" / "catalogue.toml"
    target.parent.mkdir(parents=True)
    shutil.copy(DEFAULT_CATALOGUE, target)
    result = datasync({}, "catalogue", "check", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{target}: ")


def test_check_lists_every_located_problem_and_exits_2(tmp_path: Path) -> None:
    text = EXAMPLES.read_text(encoding="utf-8")
    text = text.replace('table = "district"', 'table = "district"\ncolour = "blue"')
    text = text.replace('code_field = "LAD23CD"\n', "")
    text = text.replace('category = "reference"\nsource = "csv"', 'category = "geography"\nsource = "csv"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    result = datasync({}, "catalogue", "check", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert "entry 4 (key 'barnet_carers_districts'): field 'colour': unknown key (for source 'dizions')" in lines[0]
    assert "entry 6 (key 'london_wards'): field 'category'" in lines[1]
    assert "entry 7 (key 'local_authority_districts'): field 'code_field': Field required" in lines[2]


def test_check_json_locates_every_problem_by_json_pointer(tmp_path: Path) -> None:
    text = EXAMPLES.read_text(encoding="utf-8")
    text = text.replace('table = "district"', 'table = "district"\ncolour = "blue"')
    text = text.replace('code_field = "LAD23CD"\n', "")
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    result = datasync({}, "catalogue", "check", str(bad), "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["message"] == f"{bad}: 2 invalid entries"
    assert document["code"] == "catalogue_invalid"
    assert document["errors"] == [
        {"type": "unknown_key", "detail": "unknown key", "location": "/datasets/3/colour"},
        {"type": "missing", "detail": "Field required", "location": "/datasets/6/code_field"},
    ]
    assert len(result.stderr.strip().splitlines()) == 2


def test_check_json_of_a_valid_catalogue_and_of_a_missing_file(tmp_path: Path) -> None:
    valid = datasync({}, "catalogue", "check", str(EXAMPLES), "--json")
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout) == {"message": f"{EXAMPLES}: 9 datasets, no problems", "code": "ok", "errors": []}
    missing = datasync({}, "catalogue", "check", str(tmp_path / "nope.toml"), "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["errors"] == [{"type": "not_found", "detail": "file not found", "location": ""}]


def test_check_notes_credential_variables_that_are_not_set() -> None:
    result = datasync({"CHARITYLOG_ORG_KEY": "set-here"}, "catalogue", "check", str(EXAMPLES))
    assert result.returncode == 0
    notes = result.stderr.strip().splitlines()
    assert "note: environment variable NHS_TERMINOLOGY_CLIENT_ID is not set here (credentials of " in notes[0]
    assert "ukcore_ethnic_category_england" in notes[0]
    assert any("CHARITYLOG_SOURCE_KEY" in line for line in notes)
    assert not any("CHARITYLOG_ORG_KEY" in line for line in notes)
    assert "set-here" not in result.stdout + result.stderr


def test_check_a_missing_file(tmp_path: Path) -> None:
    result = datasync({}, "catalogue", "check", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "catalogue file not found" in result.stderr


def test_check_uses_the_configured_catalogue(tmp_path: Path) -> None:
    result = datasync({"DATASYNC_CATALOGUE": str(EXAMPLES)}, "catalogue", "check")
    assert result.returncode == 0 and "9 datasets" in result.stdout


def test_discover_prints_ready_to_paste_entries_for_new_code_lists(dictionary: Upstream, tmp_path: Path) -> None:
    env = {"DATASYNC_URL_REWRITES": dictionary.rewrites()}
    result = datasync(env, "catalogue", "discover", "nhs_dd")
    assert result.returncode == 0, result.stderr
    found = tomllib.loads(result.stdout)["datasets"]
    assert [entry["key"] for entry in found] == ["discharge_method_code", "out_patient_outcome"]
    assert found[0] == {
        "key": "discharge_method_code",
        "name": "Discharge Method Code",
        "description": "NHS Data Dictionary - Discharge Method Code",
        "category": "nhs_dd",
        "source": "nhs_dd",
        "url": f"https://{DD}/data_elements/discharge_method_code.html",
        "tags": ["NHS"],
        "frequency_hours": 168,
    }
    assert "vanished_element.html: HTTP 404" in result.stderr
    assert "2 new code list(s) found" in result.stderr
    extended = tmp_path / "extended.toml"
    extended.write_text(DEFAULT_CATALOGUE.read_text(encoding="utf-8") + "\n" + result.stdout, encoding="utf-8")
    assert datasync({}, "catalogue", "check", str(extended)).returncode == 0
    pages = [path for path, _ in dictionary.requests]
    assert f"/{DD}/data_elements/ethnic_category.html" not in pages  # already in the catalogue
    assert pages.count(f"/{DD}/data_elements/discharge_method_code.html") == 1


def test_discover_json_and_limit(dictionary: Upstream) -> None:
    env = {"DATASYNC_URL_REWRITES": dictionary.rewrites()}
    result = datasync(env, "catalogue", "discover", "nhs_dd", "--json", "--limit", "2")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [(c["key"], c["codes"]) for c in found] == [("discharge_method_code", 3)]
    assert "2 more new element(s) not checked" in result.stderr  # of 4 new ones


def test_discover_with_an_unreachable_index_is_one_line_exit_1(dictionary: Upstream) -> None:
    env = {"DATASYNC_URL_REWRITES": dictionary.rewrites()}
    result = datasync(env, "catalogue", "discover", "nhs_dd", "--index", f"https://{DD}/nowhere.html")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "HTTP 404" in result.stderr
    assert "Traceback" not in result.stderr


def test_discover_an_unknown_source_is_exit_2() -> None:
    result = datasync({}, "catalogue", "discover", "fhir")
    assert result.returncode == 2 and "known: nhs_dd" in result.stderr
