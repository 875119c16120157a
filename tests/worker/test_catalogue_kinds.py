"""Each misconfiguration of the newer source kinds is a located catalogue error, before any fetch."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.catalogue import CatalogueError, load_catalogue
from worker.settings import REPO_ROOT

EXAMPLES = (REPO_ROOT / "examples" / "catalogue.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'url = "https://ontology.nhs.uk/production1/fhir/ValueSet/$expand?url=',
            'url = "https://ontology.nhs.uk/production1/fhir/ValueSet/UKCore-EthnicCategory?url=',
            "(key 'ukcore_ethnic_category_england'): field 'url': must be a FHIR expansion URL",
        ),
        (
            'UKCore-EthnicCategory"\ntags',
            'UKCore-EthnicCategory&count=100"\ntags',
            "field 'url': must not set count or offset",
        ),
        (
            'client_secret_env = "NHS_TERMINOLOGY_CLIENT_SECRET"\n',
            "",
            "token_url, client_id_env and client_secret_env go together",
        ),
        ("page_size = 1000", "page_size = 0", "field 'page_size': Input should be greater than or equal to 1"),
        (
            'Source = "CHARITYLOG_SOURCE_KEY"',
            'Source = "a1b2-c3d4 secret"',
            "is not an environment variable name (never put the value here)",
        ),
        ('table = "district"\n', "", "(key 'barnet_carers_districts'): field 'table': Field required"),
        ("organization_id = 42", 'organization_id = "barnet"', "field 'organization_id'"),
        (
            'url = "https://data.london.gov.uk/api/dataset/2k4x9"',
            'url = "https://data.london.gov.uk/dataset/2k4x9/london-boroughs"',
            "field 'url': must be a DataPress dataset URL",
        ),
        (
            'code_column = "code"\nlabel_column = "name"',
            'code_column = "code"',
            "(key 'london_boroughs_datastore'): field '(entry)': Value error, set exactly one of label_column",
        ),
        ('label_template = "{ward_name} ({borough_name})"', 'label_template = "Ward"', "at least one field in braces"),
        ('label_template = "{ward_name} ({borough_name})"', 'label_template = "{}"', "placeholders must name a field"),
        (
            'FeatureServer/0/query"',
            'FeatureServer/0/query?where=1%3D1&f=json"',
            "field 'url': must be a layer query endpoint without parameters",
        ),
        (
            'label_field = "LAD23NM"',
            'label_field = "LAD23NM"\nlabel_template = "{LAD23NM}"',
            "exactly one of label_field",
        ),
        ('code = "alpha_2"', 'code = "iso"', "field 'code': Input should be 'alpha_2', 'alpha_3' or 'numeric'"),
        ('category = "reference"\nsource = "csv"', 'category = "geography"\nsource = "csv"', "field 'category'"),
    ],
)
def test_each_misconfiguration_is_a_located_error(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in EXAMPLES
    path = tmp_path / "catalogue.toml"
    path.write_text(EXAMPLES.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_reference_category_and_organization_id_load(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(EXAMPLES, encoding="utf-8")
    entries = load_catalogue(path).by_key()
    assert entries["barnet_carers_districts"].organization_id == 42
    assert entries["iso_countries"].organization_id is None
    assert entries["local_authority_districts"].category == "reference"
