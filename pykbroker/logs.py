"""structlog set-up: readable on a terminal, JSON lines otherwise or with PYKBROKER_LOG_FORMAT=json.

The level comes from PYKBROKER_LOG_LEVEL (INFO by default). One line per request
("request_completed") is logged at DEBUG only, so the request path costs nothing at INFO.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _StderrLogger:
    """Writes to whatever sys.stderr is at the time (pytest swaps it while capturing)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def configure(level: str | None = None, fmt: str | None = None, *, follow_stderr: bool = False):
    level_name = (level or os.environ.get("PYKBROKER_LOG_LEVEL") or "INFO").upper()
    fmt = (
        fmt
        or os.environ.get("PYKBROKER_LOG_FORMAT")
        or ("console" if sys.stderr.isatty() else "json")
    )
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    factory = (
        (lambda *_: _StderrLogger()) if follow_stderr else structlog.PrintLoggerFactory(sys.stderr)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level_name, logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def configure_for_embedding(default_level: str = "WARNING") -> None:
    """For a broker inside someone else's process (EmbeddedBroker, the pytest plugin).

    Leaves an application's own structlog set-up alone; otherwise logs warnings and errors
    (PYKBROKER_LOG_LEVEL to change) readably to stderr, where pytest captures them per test.
    """
    if structlog.is_configured():
        return
    configure(
        os.environ.get("PYKBROKER_LOG_LEVEL") or default_level,
        os.environ.get("PYKBROKER_LOG_FORMAT") or "console",
        follow_stderr=True,
    )
