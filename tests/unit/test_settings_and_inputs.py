"""Settings, redaction and input validation (no services)."""

from __future__ import annotations

import pytest

import tracking
from tracking.redact import redact_url
from tracking.settings import Settings
from tracking.validation import json_object, transaction_id


def test_settings_come_from_tracking_variables_and_the_celery_broker_url() -> None:
    settings = Settings.from_env(
        {
            "TRACKING_DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1/db",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
            "TRACKING_IMPORTS": "a.trackers, b.trackers",
            "TRACKING_LEASE_SECONDS": "12.5",
            "TRACKING_MAX_STATE_BYTES": "1000",
        }
    )
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.imports == ("a.trackers", "b.trackers")
    assert settings.lease_seconds == 12.5 and settings.max_state_bytes == 1000


def test_an_unknown_setting_in_a_file_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ValueError, match="TRACKING_LEASE_SECOND"):
        Settings.from_mapping({"lease_second": "3"})


def test_an_unknown_environment_variable_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    # Platforms set variables of their own (Kubernetes: TRACKING_SERVICE_HOST for a Service "tracking").
    settings = Settings.from_env({"TRACKING_SERVICE_HOST": "127.0.0.1", "TRACKING_LEASE_SECONDS": "40"})
    assert settings.lease_seconds == 40
    assert "TRACKING_SERVICE_HOST" in caplog.text


def test_the_environment_wins_over_a_file_even_when_it_sets_the_default() -> None:
    settings = Settings.from_env({"TRACKING_HEARTBEAT_SECONDS": "5"}, heartbeat_seconds=2)
    assert settings.heartbeat_seconds == 5


def test_the_settings_repr_hides_passwords() -> None:
    assert "canary" not in repr(Settings(database_url="postgresql://a:canary@127.0.0.1/x"))


def test_a_lease_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        Settings(heartbeat_seconds=5, lease_seconds=8)


def test_passwords_are_masked_in_urls_and_in_public_settings() -> None:
    assert redact_url("amqp://guest:s3cret@127.0.0.1:5672/v") == "amqp://guest:***@127.0.0.1:5672/v"
    text = "failed: postgresql+psycopg://app:hunter2@127.0.0.1/db refused"
    assert "hunter2" not in redact_url(text)
    public = Settings(
        database_url="postgresql://a:canary@127.0.0.1/x", broker_url="redis://:canary@127.0.0.1"
    )
    assert "canary" not in repr(public.public_dict())


@pytest.mark.parametrize(
    "bad",
    ["", " ", "a" * 256, "nul\x00byte", "new\nline", "tab\there", "\x7f", "bell\x07"],
)
def test_invalid_transaction_ids_raise_invalid_transaction_id(bad: str) -> None:
    with pytest.raises(tracking.InvalidTransactionId):
        transaction_id(bad)


@pytest.mark.parametrize("bad", [None, 123, b"x", ["x"]])
def test_non_str_transaction_ids_raise_a_type_error_that_is_also_invalid_transaction_id(bad: object) -> None:
    with pytest.raises(TypeError):
        transaction_id(bad)
    with pytest.raises(tracking.InvalidTransactionId):
        transaction_id(bad)


@pytest.mark.parametrize("good", ["a" * 255, "'; DROP TABLE tracking_trackers;--", "%", "_", "تحويل", "é"])
def test_valid_transaction_ids_are_returned_unchanged(good: str) -> None:
    assert transaction_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        {"s": {1, 2}},
        {"n": float("nan")},
        {"i": float("inf")},
        {"o": object()},
        [1, 2],
        "text",
        {"big": "x" * 2000},
    ],
)
def test_state_that_is_not_a_small_json_object_raises_state_not_serializable(bad: object) -> None:
    with pytest.raises(tracking.StateNotSerializable) as info:
        json_object(bad, "state", max_bytes=1000)
    assert isinstance(info.value, TypeError)


def test_deeply_nested_state_raises_state_not_serializable() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(10_000):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with pytest.raises(tracking.StateNotSerializable):
        json_object(deep, "state", max_bytes=10**9)


def test_the_error_hierarchy_has_one_base() -> None:
    for cls in (
        tracking.NotFound,
        tracking.Timeout,
        tracking.InvalidTransactionId,
        tracking.StateNotSerializable,
    ):
        assert issubclass(cls, tracking.TrackingError)
    assert issubclass(tracking.InvalidTransactionId, ValueError)
    assert issubclass(tracking.StateNotSerializable, TypeError)
    assert str(tracking.NotFound()) == "No tracker is registered under that kind and transaction ID."
