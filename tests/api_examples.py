"""The example upstream data: what each API of ``examples/catalogue.toml`` answers in the tests.

Real where it is public: the UK Core Ethnic Category and IPS smoking status value sets
(``tests/fixtures/apis/``), ONS district codes, London borough and ward codes; Charitylog
dictionaries and DataPress documents shaped as seeds 002 and 003 describe them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.api_upstream import ApiUpstream

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "apis"
ETHNIC = json.loads((FIXTURES / "ukcore_ethnic_category.valueset.json").read_text(encoding="utf-8"))
SMOKING = json.loads((FIXTURES / "ips_current_smoking_status.valueset.json").read_text(encoding="utf-8"))
ENGLAND = "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland"
ARCGIS_SERVICE = "Local_Authority_Districts_December_2023_Boundaries_UK_BUC"
LAD_DISTRICTS = [
    {"FID": 1, "LAD23CD": "E06000001", "LAD23NM": "Hartlepool", "LAD23NMW": " "},
    {"FID": 2, "LAD23CD": "E06000002", "LAD23NM": "Middlesbrough", "LAD23NMW": " "},
    {"FID": 3, "LAD23CD": "E06000003", "LAD23NM": "Redcar and Cleveland", "LAD23NMW": " "},
    {"FID": 4, "LAD23CD": "E06000004", "LAD23NM": "Stockton-on-Tees", "LAD23NMW": " "},
    {"FID": 5, "LAD23CD": "E06000005", "LAD23NM": "Darlington", "LAD23NMW": " "},
    {"FID": 361, "LAD23CD": "W06000001", "LAD23NM": "Isle of Anglesey", "LAD23NMW": "Ynys Môn"},
    {"FID": 362, "LAD23CD": "W06000002", "LAD23NM": "Gwynedd", "LAD23NMW": "Gwynedd"},
]
CHARITYLOG_DISTRICTS = {"1": "Barnet", "2": "Camden", "3": "Enfield", "10": "Haringey"}
BOROUGHS = (
    "\ufeffcode,name,inner_outer\r\n"
    "E09000002,Barking and Dagenham,Outer London\r\n"
    'E09000003,Barnet,"Outer London"\r\n'
    '"E09000001","City of London","Inner London"\r\n'
).encode("utf-8")
WARDS = (
    "\ufeffward_code,ward_name,borough_name\r\n"
    'E05013970,"Barnet Vale",Barnet\r\n'
    'E05013971,"Brunswick Park",Barnet\r\n'
    'E05000026,"Abbey, ""Old"" Town",Barking and Dagenham\r\n'
)
# Illustrative credentials for the demo and the tests; real ones only ever live in the environment.
EXAMPLE_SECRETS = {
    "NHS_TERMINOLOGY_CLIENT_ID": "datasync-prod-client",
    "NHS_TERMINOLOGY_CLIENT_SECRET": "tS3cr3t-9f8e7d6c5b4a",
    "CHARITYLOG_SOURCE_KEY": "src-4c1d-sms-rotated",
    "CHARITYLOG_ORG_KEY": "org-live-77aa",
    "CHARITYLOG_USER_KEY": "usr-branch-19",
}


def dataset_document(dataset_id: str, sharing: str = "public") -> dict[str, Any]:
    """A dataset document shaped as seed 003 documents it (resources are added with ``add_resource``)."""
    return {
        "id": dataset_id,
        "title": "London Borough Codes",
        "description": "<p>Borough codes</p>",
        "descriptionText": "Borough codes",
        "tags": ["boroughs"],
        "topics": ["council-and-democracy"],
        "licence": {
            "url": "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/",
            "title": "UK Open Government Licence (OGL v3)",
        },
        "custom": {},
        "resources": {},
        "links": {},
        "team": "vrv65",
        "sharing": sharing,
        "collaborators": [],
        "readusers": [],
        "readteams": [],
        "createdAt": "2019-02-05T16:34:18.000Z",
        "updatedAt": "2025-01-21T16:10:03.385Z",
        "site": "london",
    }


def seed_examples(apis: ApiUpstream) -> None:
    """Every upstream the example catalogue reads, as its real counterpart would answer."""
    apis.fhir.value_sets[ETHNIC["url"]] = copy.deepcopy(ETHNIC)
    apis.fhir.clients[EXAMPLE_SECRETS["NHS_TERMINOLOGY_CLIENT_ID"]] = EXAMPLE_SECRETS["NHS_TERMINOLOGY_CLIENT_SECRET"]
    apis.charitylog.dictionaries[("organisations", "district")] = CHARITYLOG_DISTRICTS
    apis.charitylog.credentials = {
        "Source": EXAMPLE_SECRETS["CHARITYLOG_SOURCE_KEY"],
        "Org": EXAMPLE_SECRETS["CHARITYLOG_ORG_KEY"],
        "User": EXAMPLE_SECRETS["CHARITYLOG_USER_KEY"],
    }
    apis.datapress.datasets["2k4x9"] = dataset_document("2k4x9")
    apis.datapress.add_resource("2k4x9", "k93", BOROUGHS, "csv", title="boroughs")
    apis.datapress.add_resource("2k4x9", "p07", b"%PDF-1.7\nguide", "pdf", title="guide", order=1)
    apis.datapress.files["/download/london-wards/wards.csv"] = WARDS.encode("utf-8")
    apis.arcgis.layers[ARCGIS_SERVICE] = [dict(row) for row in LAD_DISTRICTS]
    apis.arcgis.max_record_count = 3
    apis.arcgis.last_edit[ARCGIS_SERVICE] = 1706540000000
