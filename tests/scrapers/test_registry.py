"""The source registry: every kind by its catalogue name, its module loaded when the kind is first used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scrapers import KINDS, SOURCES
from scrapers.base import Source


def test_every_kind_is_the_source_of_that_name() -> None:
    assert list(SOURCES) == list(KINDS)
    for kind in KINDS:
        assert isinstance(SOURCES[kind], Source) and SOURCES[kind].kind == kind
        assert SOURCES[kind] is SOURCES[kind]


def test_an_unknown_kind_is_a_key_error_and_not_in_the_registry() -> None:
    assert "gopher" not in SOURCES
    with pytest.raises(KeyError):
        SOURCES["gopher"]


def test_a_kind_loads_only_its_own_module() -> None:
    probe = "import sys; from scrapers import SOURCES; SOURCES['static_list']; print(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    loaded = set(result.stdout.split())
    assert "scrapers.static_list" in loaded
    assert not loaded & {"scrapers.nhs_dd", "scrapers.fhir_valueset", "scrapers.arcgis", "lxml", "pycountry"}
