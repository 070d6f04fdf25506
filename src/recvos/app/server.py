"""The HTTP side of ``recvos app``: a FastAPI app serving one static page and a small JSON API.

Every API route is under ``/api/s/{session}``; ``POST /api/session`` opens a session (one per page load).
The page (``static/``: plain HTML, CSS and JavaScript, no third-party code, nothing fetched from outside)
pings the server while open and says goodbye on ``pagehide``. Errors come back as ``{"error": "<one
line>"}`` with status 400 (bad input), 404 (session ended), 409 (a propagation is running) or 413 (too large).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from recvos.app.sessions import AppConfig, Busy, Session, SessionStore, TooLarge
from recvos.errors import RecvosError

log = logging.getLogger(__name__)

__all__ = ["create_app", "serve"]

STATIC = Path(__file__).resolve().parent / "static"
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")


class PromptIn(BaseModel):
    frame: int
    obj: int
    box: list[float] | None = None
    point: list[float] | None = None
    label: int = 1


class PropagateIn(BaseModel):
    zero_shot: bool = False
    online: bool = False
    flip: bool = False


class PathIn(BaseModel):
    path: str


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _safe_name(name: str) -> str:
    """A file name for an upload: its base name with odd characters replaced."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(name or "video"))[:100].lstrip(".")
    return base or "video"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(
    config: AppConfig | None = None, *, store: SessionStore | None = None, host: str = "127.0.0.1"
) -> FastAPI:
    """The FastAPI app; ``host`` decides whether server paths are allowed when ``config.allow_paths`` is None."""
    config = config or AppConfig()
    store = SessionStore(config) if store is None else store
    allow_paths = config.allow_paths if config.allow_paths is not None else is_loopback(host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.start_reaper()
        yield
        store.close()

    app = FastAPI(title="recvos", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store = store
    app.state.config = config

    @app.exception_handler(RecvosError)
    async def _recvos_error(request: Request, exc: RecvosError) -> JSONResponse:
        status = 409 if isinstance(exc, Busy) else 413 if isinstance(exc, TooLarge) else 400
        return _error(status, str(exc))

    @app.exception_handler(KeyError)
    async def _no_session(request: Request, exc: KeyError) -> JSONResponse:
        return _error(404, "this session has ended (closed or timed out); reload the page")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.post("/api/session")
    async def new_session() -> dict[str, Any]:
        s = store.create()
        return {
            "id": s.id,
            "allow_paths": allow_paths,
            "heartbeat_s": max(1.0, config.heartbeat_timeout / 4),
            "limits": {
                "upload_mb": config.max_upload_mb,
                "frames": config.max_frames,
                "pixels": config.max_pixels,
            },
        }

    def session(sid: str) -> Session:
        return store.get(sid)

    @app.post("/api/s/{sid}/ping")
    async def ping(sid: str) -> dict[str, bool]:
        session(sid)
        return {"ok": True}

    @app.post("/api/s/{sid}/close")
    async def close(sid: str) -> dict[str, bool]:
        return {"closed": await run_in_threadpool(store.end, sid)}

    @app.get("/api/s/{sid}/status")
    async def status(sid: str) -> dict[str, Any]:
        return session(sid).status()

    @app.post("/api/s/{sid}/upload")
    async def upload(sid: str, request: Request, name: str = "video.mp4") -> dict[str, Any]:
        s = session(sid)
        limit = int(config.max_upload_mb * 1024 * 1024)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge(
                f"{name}: {int(declared) / 2**20:.1f} MB is over the upload limit of {config.max_upload_mb:g} MB (--max-upload-mb)"
            )
        safe = _safe_name(name)
        fd, tmp = tempfile.mkstemp(prefix="upload.", suffix=Path(safe).suffix or ".mp4", dir=s.dir)
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(
                            f"{name}: over the upload limit of {config.max_upload_mb:g} MB (--max-upload-mb)"
                        )
                    f.write(chunk)
            if size == 0:
                raise RecvosError(f"{name}: the file is empty; choose a video file")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return await run_in_threadpool(s.open_video, Path(tmp), name, True)

    @app.post("/api/s/{sid}/open")
    async def open_path(sid: str, body: PathIn) -> dict[str, Any]:
        s = session(sid)
        if not allow_paths:
            raise RecvosError(
                "opening server paths is disabled on this server (start it with --allow-paths); upload the video instead"
            )
        path = Path(body.path).expanduser()
        if not path.exists():
            raise RecvosError(f"{path}: no such video file or frame folder on the server; check the path")
        if path.is_file() and path.stat().st_size > config.max_upload_mb * 2**20:
            raise TooLarge(
                f"{path}: {path.stat().st_size / 2**20:.1f} MB is over the limit of {config.max_upload_mb:g} MB (--max-upload-mb)"
            )
        return await run_in_threadpool(s.open_video, path, path.name, False)

    @app.get("/api/s/{sid}/frame/{t}.jpg")
    async def frame(sid: str, t: int) -> FileResponse:
        return FileResponse(
            session(sid).display_frame(t),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @app.get("/api/s/{sid}/view/{t}.jpg")
    async def view(sid: str, t: int) -> Response:
        data = await run_in_threadpool(session(sid).view, t)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/s/{sid}/prompts/{t}")
    async def prompts(sid: str, t: int) -> list[dict[str, Any]]:
        return session(sid).prompt_list(t)

    @app.post("/api/s/{sid}/prompt")
    async def prompt(sid: str, body: PromptIn) -> dict[str, Any]:
        s = session(sid)
        return await run_in_threadpool(
            lambda: s.add_prompt(body.frame, body.obj, box=body.box, point=body.point, label=body.label)
        )

    @app.post("/api/s/{sid}/clear/{t}/{obj}")
    async def clear(sid: str, t: int, obj: int) -> dict[str, bool]:
        session(sid).clear_prompt(t, obj)
        return {"ok": True}

    @app.post("/api/s/{sid}/remove/{obj}")
    async def remove(sid: str, obj: int) -> dict[str, bool]:
        await run_in_threadpool(session(sid).remove_object, obj)
        return {"ok": True}

    @app.post("/api/s/{sid}/reset")
    async def reset(sid: str) -> dict[str, bool]:
        session(sid).reset()
        return {"ok": True}

    @app.post("/api/s/{sid}/propagate")
    async def propagate(sid: str, body: PropagateIn | None = None) -> dict[str, Any]:
        body = body or PropagateIn()
        return session(sid).propagate(zero_shot=body.zero_shot, online=body.online, flip=body.flip)

    @app.post("/api/s/{sid}/cancel")
    async def cancel(sid: str) -> dict[str, bool]:
        session(sid).cancel()
        return {"ok": True}

    @app.get("/api/s/{sid}/masks.zip")
    async def masks(sid: str) -> Response:
        s = session(sid)
        data = await run_in_threadpool(s.masks_zip)
        stem = _safe_name(Path(s.name).stem)
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{stem}_masks.zip"'},
        )

    @app.get("/api/s/{sid}/overlay.mp4")
    async def overlay(sid: str) -> FileResponse:
        s = session(sid)
        path = await run_in_threadpool(s.overlay_video)
        return FileResponse(
            path, media_type="video/mp4", filename=f"{_safe_name(Path(s.name).stem)}_overlay.mp4"
        )

    return app


def serve(
    host: str = "127.0.0.1", port: int = 7860, config: AppConfig | None = None, *, log_level: str = "info"
) -> None:
    """Run the app with uvicorn until interrupted (binds ``host``:``port``; loopback by default)."""
    import uvicorn

    config = config or AppConfig()
    if not is_loopback(host):
        log.warning("binding %s: the app is reachable from other machines and has no authentication", host)
    app = create_app(config, host=host)
    log.info("recvos app on http://%s:%d/", host if ":" not in host else f"[{host}]", port)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        shutil.rmtree(app.state.store.root, ignore_errors=True)
