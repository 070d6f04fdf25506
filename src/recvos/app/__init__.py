"""``recvos app``: a local web page to segment a video from a box or clicks, correct, re-propagate, export.

``serve(host, port, config)`` runs it (FastAPI + uvicorn, the ``app`` extra); ``create_app(config)`` returns
the FastAPI app (for tests and for mounting elsewhere). The page is plain HTML/JS shipped in ``static/``:
nothing is fetched from the internet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AppConfig", "create_app", "serve"]

if TYPE_CHECKING:  # pragma: no cover
    from recvos.app.server import create_app, serve  # noqa: F401
    from recvos.app.sessions import AppConfig  # noqa: F401


def __getattr__(name: str) -> Any:
    if name == "AppConfig":
        from recvos.app.sessions import AppConfig

        return AppConfig
    if name in ("create_app", "serve"):
        from recvos.app import server

        return getattr(server, name)
    raise AttributeError(f"module 'recvos.app' has no attribute {name!r}")
