"""One structured log event: a fixed phrase and its key=value fields (rendered by node.logfmt's formatters).

It lives in the lowest package so kernels/, pouw/ and chain/ log events the same way node/ does; `node.logfmt`
re-exports it. Every logger is named under `pouw.` (one hierarchy, one handler).
"""

from __future__ import annotations

import logging
from typing import Any

FIELDS = "pouw_fields"  # LogRecord attribute holding an event's fields


def event(log: logging.Logger, level: int, msg: str, *, exc_info: bool = False, **fields: Any) -> None:
    """Log one event: `msg` a fixed phrase, `fields` its key=value data (str, int, float, bool, None);
    `exc_info=True` attaches the exception being handled (its traceback follows the line)."""
    if log.isEnabledFor(level):
        log.log(level, msg, exc_info=True if exc_info else None, extra={FIELDS: fields}, stacklevel=2)
