"""The operations settings: readiness threshold, drain, NOTIFY queue alert, log format."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from statebus.config import ConfigError, load
from statebus.logformat import JsonFormatter


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"STATEBUS_HOME": str(tmp_path), **values}


def test_defaults(tmp_path: Path) -> None:
    settings = load(env(tmp_path))
    assert settings.ready_threshold == 5.0
    assert settings.drain_seconds == 2.0
    assert settings.notify_queue_alert == 0.5
    assert settings.log_format == "text"


def test_values_are_read(tmp_path: Path) -> None:
    settings = load(
        env(
            tmp_path,
            STATEBUS_READY_THRESHOLD="0.5",
            STATEBUS_DRAIN_SECONDS="0",
            STATEBUS_NOTIFY_QUEUE_ALERT="0.25",
            STATEBUS_LOG_FORMAT="json",
        )
    )
    assert (settings.ready_threshold, settings.drain_seconds) == (0.5, 0.0)
    assert (settings.notify_queue_alert, settings.log_format) == (0.25, "json")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STATEBUS_READY_THRESHOLD", "0", "more than 0"),
        ("STATEBUS_READY_THRESHOLD", "five", "number of seconds"),
        ("STATEBUS_READY_THRESHOLD", "nan", "more than 0"),
        ("STATEBUS_DRAIN_SECONDS", "-1", "at least 0"),
        ("STATEBUS_DRAIN_SECONDS", "inf", "less than 3600"),
        ("STATEBUS_NOTIFY_QUEUE_ALERT", "50", "at most 1"),
        ("STATEBUS_NOTIFY_QUEUE_ALERT", "0", "more than 0"),
        ("STATEBUS_LOG_FORMAT", "yaml", "'text' or 'json'"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        load(env(tmp_path, **{name: value}))
    assert message in str(refused.value)


def test_json_formatter_writes_one_object_with_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("statebus.x", logging.ERROR, "", 0, "a %s", ("b",), None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    body = json.loads(line)
    assert body["message"] == "a b" and body["level"] == "error" and body["logger"] == "statebus.x"
    assert "ValueError: boom" in body["exception"]
