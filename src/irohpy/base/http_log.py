"""The logger our aiohttp servers hand to their request handlers.

aiohttp logs a request it cannot parse at ERROR with a traceback whose message quotes up
to kilobytes of what the client sent. On a public port that is attacker-controlled log
volume. Malformed requests become one short INFO line here (the offending bytes escaped
and cut to ``MAX_DETAIL`` characters) and are counted; real handler failures keep their
traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

MAX_DETAIL = 80


def _detail(exc: BaseException) -> str:
    text = getattr(exc, "message", "") or str(exc)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL] + "..."


class QuietHttpLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A ``logger=`` for ``web.AppRunner``: malformed requests go to ``on_malformed`` and one line."""

    def __init__(self, logger: logging.Logger, on_malformed: Callable[[], None]) -> None:
        super().__init__(logger, {})
        self._on_malformed = on_malformed

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._malformed(args, exc_info)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._malformed(args, exc_info, level=logging.DEBUG)
            return
        super().debug(msg, *args, exc_info=exc_info, **kwargs)

    def _malformed(self, args: tuple[Any, ...], exc: HttpProcessingError, level: int = logging.INFO) -> None:
        self._on_malformed()
        remote = str(args[0])[:64] if args else "?"
        self.log(level, "malformed HTTP request from %s: %s: %s", remote, type(exc).__name__, _detail(exc))
