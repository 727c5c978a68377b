"""Structured logs: one line per event, `key=value` fields for people, JSON lines for machines.

Every logger of the node lives under `pouw.` (`pouw.node`, `pouw.p2p`, `pouw.sync`, `pouw.miner`, `pouw.jobs`, ...).
An event site passes its fields with `event(log, level, "block connected", height=5, hash="ab..")`; the message
stays a short fixed phrase (greppable) and the fields carry the numbers (tests/test_observability.py keeps
printf-style log calls out of the packages). `event` itself lives in kernels.logevent so every layer shares it.

Default line:  `2026-11-30T22:11:30.123Z INFO  pouw.node block connected height=5 hash=ab12.. txs=1`
`--log-json`:  `{"ts": "2026-11-30T22:11:30.123Z", "level": "info", "logger": "pouw.node",
                 "msg": "block connected", "height": 5, "hash": "ab12..", "txs": 1}`
Values with spaces, quotes or `=` are double-quoted (JSON string escaping) in the key=value form.
`add_log_json` adds the `--log-json` switch to a subcommand (node, devnet, miner).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from typing import Any

from kernels.logevent import FIELDS, event

__all__ = ["FIELDS", "event", "setup", "add_log_json", "KeyValueFormatter", "JsonFormatter"]

_BARE = re.compile(r"[^\s\"=]+")
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})


def _ts(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _kv_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    s = v.hex() if isinstance(v, (bytes, bytearray)) else str(v)
    return s if _BARE.fullmatch(s) else json.dumps(s)


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return str(v)


class KeyValueFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger> <message> k=v ...` on one line (a traceback follows on its own lines)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record)} {record.levelname:<5} {record.name} {record.getMessage()}"
        fields = getattr(record, FIELDS, None)
        if fields:
            line += " " + " ".join(f"{k}={_kv_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the event's fields, and exc (a traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in (getattr(record, FIELDS, None) or {}).items():
            doc[k if k not in _RESERVED else f"field_{k}"] = _json_value(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is at each record (as logging's last resort does), so a CLI
    run in-process under a redirected stderr never writes to a stream closed since."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


def setup(*, verbose: bool = False, as_json: bool = False, stream=None) -> None:
    """Configure the root logger once for the process: level INFO (DEBUG with verbose), one stderr handler."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_pouw", False):
            root.removeHandler(h)
    h = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    h.setFormatter(JsonFormatter() if as_json else KeyValueFormatter())
    h._pouw = True  # type: ignore[attr-defined]
    root.addHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def add_log_json(p: argparse.ArgumentParser) -> None:
    """`--log-json` after the subcommand too (`pouw node --log-json`); SUPPRESS keeps `pouw --log-json node`."""
    p.add_argument(
        "--log-json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log one JSON object per line (default: key=value lines)",
    )
