"""The HTTP API: jobs, editing, health, info and metrics, every error as JSON {"error", "detail"}."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import cv2
from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from runtime.editing import EditParams
from runtime.options import AnimationOptions

from . import info
from .errors import ServiceError
from .forms import animation_options, pick, with_form_fields
from .jobs import Job, JobService
from .limits import BodyLimit
from .settings import Settings

EVENT_POLL_S = 15.0  # keep-alive comment interval of the events stream
MEDIA_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}


def _error(status: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def api_key_check(settings: Settings):
    """A dependency that demands the API key (Bearer or X-API-Key) when one is configured."""

    def check(request: Request) -> None:
        if not settings.api_key:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise ServiceError(401, "unauthorized", "send the API key as 'Authorization: Bearer <key>' or "
                               "'X-API-Key: <key>'", {"WWW-Authenticate": "Bearer"})

    return check


def job_links(request: Request, job: Job) -> dict[str, str]:
    base = str(request.base_url).rstrip("/") + f"/v1/jobs/{job.id}"
    return {"status_url": base, "events_url": base + "/events", "result_url": base + "/result",
            "concat_url": base + "/concat"}


def create_app(settings: Settings, service: JobService, lifespan: Any = None) -> FastAPI:
    """The FastAPI application around a job service (the web page is mounted by the caller)."""
    app = FastAPI(title="liveportrait-onnx", version=info.package_version(), lifespan=lifespan,
                  description="Portrait animation (LivePortrait) on ONNX Runtime: submit a photo or video and a "
                              "driving video, follow the job, download the result.")
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    if settings.cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origin),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Range", "Content-Type"],
                           expose_headers=["Content-Range", "Accept-Ranges", "Retry-After", "Content-Length"])

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                           for e in exc.errors())
        return _error(422, "invalid request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "not found" if exc.status_code == 404 else "http error", exc.detail,
                      getattr(exc, "headers", None))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers (models may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """200 once the models are loaded and jobs are accepted, else 503 with the reason."""
        if service.ready:
            return JSONResponse({"status": "ready", "load_seconds": service.load_seconds})
        detail = service.load_error or "models are still loading"
        return _error(503, "not ready", detail, {"Retry-After": "2"})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus text format: jobs by state, queue length, frames and frames/s."""
        return PlainTextResponse(info.prometheus(service), media_type="text/plain; version=0.0.4")

    router = APIRouter(prefix="/v1", dependencies=[Depends(api_key_check(settings))])

    @router.get("/info", tags=["info"])
    def get_info() -> dict[str, Any]:
        """Device, providers, loaded graphs with their precision, limits and versions."""
        return info.describe(service, settings)

    def submit(request: Request, source: UploadFile = File(..., description="portrait: image or video"),
               driving: UploadFile = File(..., description="driving video, image or .npz template"),
               face_index: int = Form(0, description="animate this face (0 = the largest, as upstream)"),
               all_faces: bool = Form(False, description="animate every face of a photo (face_index is ignored)"),
               write_concat: bool = Form(True, description="also write the side-by-side video"),
               **fields: Any) -> JSONResponse:
        """Queue an animation; answers 202 with the URLs to follow it."""
        try:
            options = animation_options(fields)
        except ValueError as exc:
            raise ServiceError(422, "invalid option", str(exc)) from exc
        job = service.submit(source.file, driving.file, options, None if all_faces else face_index, write_concat)
        body = {"id": job.id, "state": job.state, **job_links(request, job)}
        return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})

    router.add_api_route("/jobs", with_form_fields(submit, (AnimationOptions, "AnimationOptions")),
                         methods=["POST"], status_code=202, tags=["jobs"], summary="Submit an animation job")

    @router.get("/jobs/{job_id}", tags=["jobs"])
    def status(job_id: str) -> dict[str, Any]:
        """State, queue position, frames done/total, error and timings."""
        return service.describe(service.get(job_id))

    @router.get("/jobs/{job_id}/events", tags=["jobs"])
    async def events(job_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: the job's status on every change, until a final state."""
        job = service.get(job_id)

        async def stream():
            version = -1
            while True:
                current = await asyncio.to_thread(service.wait_change, job, version, EVENT_POLL_S)
                if await request.is_disconnected():
                    return
                if current == version:
                    yield ": keep-alive\n\n"
                    continue
                version = current
                body = service.describe(job)
                yield f"event: status\nid: {version}\ndata: {json.dumps(body)}\n\n"
                if job.final:
                    return

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _file(job_id: str, which: str) -> FileResponse:
        job = service.get(job_id)
        if job.state != "done":
            raise ServiceError(409, "not ready", f"the job is {job.state}; results exist only for done jobs")
        path: Path | None = job.result if which == "result" else job.concat
        if path is None or not path.is_file():
            raise ServiceError(404, "not found", f"this job has no {which} file")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            filename=f"{job.id}{'_concat' if which == 'concat' else ''}{path.suffix}")

    @router.get("/jobs/{job_id}/result", tags=["jobs"], response_class=FileResponse)
    def result(job_id: str) -> FileResponse:
        """The animation (mp4, or jpg for an image driving an image); supports Range requests."""
        return _file(job_id, "result")

    @router.get("/jobs/{job_id}/concat", tags=["jobs"], response_class=FileResponse)
    def concat(job_id: str) -> FileResponse:
        """driving | source | result side by side; supports Range requests."""
        return _file(job_id, "concat")

    @router.delete("/jobs/{job_id}", tags=["jobs"], status_code=200)
    def delete(job_id: str) -> Response:
        """Cancel a queued (200) or running (202, stops at the next frame) job, or delete a finished one (204)."""
        job = service.delete(job_id)
        if job is None:
            return Response(status_code=204)
        return JSONResponse(service.describe(job), status_code=200 if job.final else 202)

    def edit(source: UploadFile = File(..., description="portrait photo"),
             paste_back: bool = Form(True, description="paste the edited face back into the photo"),
             format: str = Form("png", description="png or jpeg", pattern="^(png|jpeg)$"),
             **fields: Any) -> Response:
        """Render the photo with the EditParams applied (the editor is cached per photo: one render per call)."""
        params = EditParams(**pick(EditParams, fields))
        rgb = service.edit(source.file, params, paste_back)
        ok, data = cv2.imencode(".png" if format == "png" else ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ServiceError(500, "encode failed", f"the image could not be encoded as {format}")
        return Response(data.tobytes(), media_type=f"image/{format}")

    router.add_api_route("/edit", with_form_fields(edit, (EditParams, "EditParams")), methods=["POST"],
                         tags=["edit"], summary="Edit a portrait (expression, pose, gaze)",
                         response_class=Response)
    app.include_router(router)
    return app
