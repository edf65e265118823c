"""The JSON log formatter: RFC 3339 UTC times with milliseconds, only whitelisted fields, standard output."""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone

from portal.observability import JsonFormatter, configure_logging

WHEN = datetime(2026, 11, 29, 22, 32, 48, 423_000, tzinfo=timezone.utc)


def _record(**extra) -> logging.LogRecord:
    record = logging.LogRecord("portal.test", logging.INFO, __file__, 1, "chart read", None, None)
    record.created = WHEN.timestamp()
    record.__dict__.update(extra)
    return record


def test_time_is_rfc3339_utc_with_milliseconds(monkeypatch):
    monkeypatch.setenv("TZ", "Pacific/Auckland")  # the machine's zone must not matter
    time.tzset()
    try:
        line = json.loads(JsonFormatter().format(_record()))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line["time"] == "2026-11-29T22:32:48.423Z"
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "portal.test", "chart read")


def test_only_whitelisted_fields_are_logged():
    line = json.loads(JsonFormatter().format(_record(route="/chart", status=200, patient_name="Alice Moreau",
                                                     body="secret")))
    assert line["route"] == "/chart" and line["status"] == 200
    assert "patient_name" not in line and "body" not in line and "Alice" not in json.dumps(line)


def test_logs_go_to_standard_output(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        logging.getLogger("portal.test").info("to stdout")
        assert root.handlers[0].stream is sys.stdout
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["message"] == "to stdout" and captured.err == ""
