"""How setting values are read: an invalid one names its variable and what it accepts; booleans
accept only the documented words."""

from __future__ import annotations

import pytest

from tracking.settings import Settings


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TRACKING_AUTO_MIGRATE",
            "maybe",
            "TRACKING_AUTO_MIGRATE must be one of 1, true, yes, on / 0, false",
        ),
        ("TRACKING_LEASE_SECONDS", "abc", "TRACKING_LEASE_SECONDS must be a number, not 'abc'"),
        ("TRACKING_MAX_STATE_BYTES", "1.5", "TRACKING_MAX_STATE_BYTES must be a whole number, not '1.5'"),
        ("TRACKING_METRICS_PORT", "http", "TRACKING_METRICS_PORT must be a whole number, not 'http'"),
    ],
)
def test_an_invalid_value_names_its_variable_and_what_it_accepts(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        Settings.from_env({variable: value})
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("auto", None),
        ("", None),
    ],
)
def test_auto_migrate_reads_the_documented_words(value: str, read: bool | None) -> None:
    assert Settings.from_env({"TRACKING_AUTO_MIGRATE": value}).auto_migrate is read


def test_numbers_are_read_as_numbers() -> None:
    settings = Settings.from_env({"TRACKING_LEASE_SECONDS": "40", "TRACKING_METRICS_PORT": "9100"})
    assert (settings.lease_seconds, settings.metrics_port) == (40.0, 9100)
