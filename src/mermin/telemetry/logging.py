"""Logging setup (text or JSON lines on stderr) and rate-limited logging.

``setup_logging("info", "text")`` configures the ``mermin`` logger tree. Levels are the
original's: trace, debug, info, warn, error (``trace`` is a level below debug).

Repeated conditions (a drop, an API error) are logged through :class:`RateLimitedLogger` or
:func:`log_every`: at most once per interval per key, and the next message that gets through says
how many were suppressed meanwhile.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from mermin.errors import ConfigError

__all__ = [
    "LEVELS",
    "TRACE",
    "JsonFormatter",
    "RateLimitedLogger",
    "log_every",
    "setup_logging",
]

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO,
          "warn": logging.WARNING, "warning": logging.WARNING, "error": logging.ERROR}
_TEXT_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED:
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the `mermin` logger: level trace|debug|info|warn|error, format text|json."""
    try:
        numeric = LEVELS[level.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown log level {level!r}: use trace, debug, info, warn or error"
        ) from None
    if fmt not in ("text", "json"):
        raise ConfigError(f"unknown log format {fmt!r}: use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    logger = logging.getLogger("mermin")
    for old in list(logger.handlers):
        if getattr(old, "_mermin", False):
            logger.removeHandler(old)
    handler._mermin = True  # type: ignore[attr-defined]  # marks the handler we own
    logger.addHandler(handler)
    logger.setLevel(numeric)
    logger.propagate = False


class RateLimitedLogger:
    """Logs a message at most once per `interval` seconds per key.

    The first message for a key is logged at once; later ones within the interval are counted,
    and the next one logged after the interval carries ``(N similar suppressed)``.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def suppressed(self, key: str) -> int:
        """Messages for `key` suppressed since the last one logged."""
        with self._lock:
            return self._suppressed.get(key, 0)

    def log(self, level: int, key: str, msg: str, *args: object,
            interval: float | None = None) -> bool:
        """Log unless `key` was logged less than `interval` ago; returns whether it logged."""
        now = self._clock()
        window = self.interval if interval is None else interval
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < window:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            skipped = self._suppressed.pop(key, 0)
        if skipped:
            msg = f"{msg} (%d similar suppressed in the last %gs)"
            args = (*args, skipped, window)
        self.logger.log(level, msg, *args)
        return True

    def debug(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.DEBUG, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)


_DEFAULT: dict[str, RateLimitedLogger] = {}
_DEFAULT_LOCK = threading.Lock()


def log_every(key: str, interval: float, msg: str, *args: object,
              logger: logging.Logger | None = None, level: int = logging.WARNING) -> bool:
    """Module-level rate limit: log `msg` at most once per `interval` seconds for `key`."""
    target = logger or logging.getLogger("mermin")
    with _DEFAULT_LOCK:
        limiter = _DEFAULT.get(target.name)
        if limiter is None:
            limiter = _DEFAULT[target.name] = RateLimitedLogger(target, interval)
    return limiter.log(level, key, msg, *args, interval=interval)
