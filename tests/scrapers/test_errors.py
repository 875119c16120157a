"""Secrets never reach logs, errors or ``sync_runs``, whatever form they take in a message."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scrapers.errors import REDACTED, redact, url_credentials


def test_known_secret_values_are_removed() -> None:
    assert redact("HTTP 401 for key s3cr3t-value", ["s3cr3t-value"]) == "HTTP 401 for key [redacted]"


def test_url_credentials_are_removed() -> None:
    assert redact("https://bob:hunter2@api.example.org/x: HTTP 500") == "https://[redacted]@api.example.org/x: HTTP 500"


def test_a_bare_token_before_the_host_is_removed() -> None:
    text = "https://ghp_abc123@api.example.org/x: redirected to http://t0k@evil.example.com/y"
    assert redact(text) == "https://[redacted]@api.example.org/x: redirected to http://[redacted]@evil.example.com/y"


def test_an_address_after_the_path_is_not_mistaken_for_userinfo() -> None:
    text = "https://api.example.org/x: HTTP 403, contact support@example.org"
    assert redact(text) == text


def test_credential_query_parameters_are_removed_and_others_kept() -> None:
    text = "https://h/x?page=2&api_key=abc&access_token=t0k&subscription-key=zz&sort=name"
    assert (
        redact(text)
        == "https://h/x?page=2&api_key=[redacted]&access_token=[redacted]&subscription-key=[redacted]&sort=name"
    )


def test_text_without_secrets_is_unchanged() -> None:
    text = "https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html: HTTP 404 Not Found"
    assert redact(text, ["", "unrelated"]) == text


def test_a_secret_with_a_trailing_newline_is_removed_when_the_message_escapes_it() -> None:
    message = "request failed: Invalid return character or leading space in header: 'key-123456\\n'"
    assert "key-123456" not in redact(message, ["key-123456\n"])


def test_url_credentials_are_found_and_innocent_urls_pass() -> None:
    assert url_credentials("https://T0KEN@h/x") and url_credentials("https://u:p@h/x")
    assert url_credentials("https://h/x?page=2&Api-Key=1") == "the query parameter 'Api-Key'"
    assert url_credentials("https://h/x?page=2&author=a&design=b&keyword=c&signal=d") is None


# What an API key or password is made of (no brackets, so the "[redacted]" marker cannot complete
# one); the surrounding text has no letters or digits, so it cannot hold a secret either.
SECRET = st.text(
    alphabet=st.characters(
        codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="[]\x85\u2028\u2029"
    ),
    min_size=8,
    max_size=40,
).filter(lambda text: text.strip() == text and sum(char.isalnum() for char in text) >= 2 and text not in REDACTED)
PADDING = st.sampled_from(["", "\n", "\r\n", " ", "\t", " \n"])
CONTEXT = st.text(alphabet=" \t\n:;,.()'\"=-", max_size=30)
FORMS: dict[str, Callable[[str], str]] = {
    "as is": lambda secret: secret,
    "repr": lambda secret: repr(secret),
    "json": json.dumps,
    "json ascii": lambda secret: json.dumps(secret, ensure_ascii=True),
    "repr of json": lambda secret: repr(json.dumps(secret)),
    "percent": lambda secret: quote(secret, safe=""),
    "percent path": quote,
    "form encoded": quote_plus,
    "userinfo": lambda secret: f"https://{quote(secret, safe='')}@api.example.org/v1/",
    "password": lambda secret: f"https://user:{quote(secret, safe='')}@api.example.org/v1/",
    "query": lambda secret: f"https://api.example.org/v1/?page=2&api_key={quote(secret, safe='')}",
}


@settings(max_examples=300, deadline=None)
@given(SECRET, PADDING, st.sampled_from(sorted(FORMS)), CONTEXT, CONTEXT, st.booleans())
def test_a_secret_never_survives_redaction(
    secret: str, padding: str, form: str, before: str, after: str, declared: bool
) -> None:
    """Declared secrets (an API key from the environment, trailing newline and all) in any escaped
    or encoded form; undeclared ones wherever a URL carries them."""
    if not declared and form not in ("userinfo", "password", "query"):
        return
    assume(secret not in f"{before}{FORMS[form]('')}{after}")
    written = FORMS[form](secret + padding)
    redacted = redact(f"{before}{written}{after}", [secret + padding] if declared else [])
    for survivor in {secret, FORMS[form](secret), written.strip()}:
        assert survivor not in redacted, (form, redacted)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_of_a_known_key_is_removed(form: str) -> None:
    secret = "Ab/c+d=e&f g'h\"i\\j%k"
    redacted = redact(f"error: {FORMS[form](secret + chr(10))} end", [secret + "\n"])
    assert "Ab/c" not in redacted and "Ab%2Fc" not in redacted, redacted
