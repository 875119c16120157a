"""The catalogue file's ``[publish]`` table: what every published record shares.

Every field has a default, so a catalogue without the table still publishes valid records; the
loader validates the table against the national catalogue's own limits and enumerations, so a bad
value is reported with its location before anything is published.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

AccessRights = Literal["RESTRICTED", "OPEN", "COMMERCIAL", "INTERNAL"]
SecurityClassification = Literal["OFFICIAL", "SECRET", "TOP_SECRET", "NOT_APPLICABLE"]
RecordType = Literal["Data Set", "Data Service", "Data Group", "Data Share"]
ACCESS_RIGHTS: tuple[str, ...] = get_args(AccessRights)
SECURITY_CLASSIFICATIONS: tuple[str, ...] = get_args(SecurityClassification)
RECORD_TYPES: tuple[str, ...] = get_args(RecordType)
OGL_V3 = "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/"
# Who creates the lists of each category: the body that maintains the upstream source.
CREATORS = {"nhs_dd": "NHS England", "rcpch": "Royal College of Paediatrics and Child Health"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactPoint(_Strict):
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    role: str = Field(default="contact", min_length=1, max_length=100)


class Licence(_Strict):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(pattern=r"^https?://\S+$")


OPEN_GOVERNMENT_LICENCE = Licence(name="Open Government Licence v3.0", url=OGL_V3)


class PublishDefaults(_Strict):
    """``publisher`` and ``contact_point`` are omitted when unset (the contact then comes from settings)."""

    publisher: str | None = Field(default=None, min_length=1, max_length=75)
    creator: str | None = Field(default=None, min_length=1, max_length=75)
    contact_point: tuple[ContactPoint, ...] = ()
    access_rights: AccessRights = "OPEN"
    security_classification: SecurityClassification = "OFFICIAL"
    type: RecordType = "Data Set"
    themes: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ("Health",)
    licence: Licence = OPEN_GOVERNMENT_LICENCE

    def creator_for(self, category: str) -> str | None:
        return self.creator or CREATORS.get(category, self.publisher)
