"""Secrets never reach logs, errors or ``sync_runs``."""

from scrapers.errors import redact


def test_known_secret_values_are_removed() -> None:
    assert redact("HTTP 401 for key s3cr3t-value", ["s3cr3t-value"]) == "HTTP 401 for key [redacted]"


def test_url_credentials_are_removed() -> None:
    assert redact("https://bob:hunter2@api.example.org/x: HTTP 500") == "https://[redacted]@api.example.org/x: HTTP 500"


def test_credential_query_parameters_are_removed_and_others_kept() -> None:
    text = "https://h/x?page=2&api_key=abc&access_token=t0k&subscription-key=zz&sort=name"
    assert (
        redact(text)
        == "https://h/x?page=2&api_key=[redacted]&access_token=[redacted]&subscription-key=[redacted]&sort=name"
    )


def test_text_without_secrets_is_unchanged() -> None:
    text = "https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html: HTTP 404 Not Found"
    assert redact(text, ["", "unrelated"]) == text
