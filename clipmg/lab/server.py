"""The lab's web server: a JSON API over a `Lab` and one static page (``static/``).

Starlette routes the requests and uvicorn serves them (the `lab` extra); each answer is computed
in Starlette's thread pool so a slow one never blocks the others. The socket is bound here, before
uvicorn starts, so a port in use is a one-line error rather than uvicorn's exit.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clipmg.errors import ClipmgError, DataError
from clipmg.lab.session import Lab, jsonable

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _int(params, name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} must be a whole number, got {value!r}") from error


def create_app(lab: Lab) -> Starlette:
    def api(answer):
        async def endpoint(request: Request):
            body = await request.json() if request.method == "POST" else {}
            try:
                result = await run_in_threadpool(answer, request, body)
            except ClipmgError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            return JSONResponse(jsonable(result))
        return endpoint

    def set_prompts(request, body):
        lab.set_prompts(body.get("templates") or [], body.get("subjects") or {}, body.get("name") or "edited")
        return lab.state()

    def load_prompts(request, body):
        lab.load_prompts(str(body.get("name", "")))
        return lab.state()

    def save_prompts(request, body):
        return {key: str(path) for key, path in lab.save_prompts(str(body.get("name") or "lab")).items()}

    def mistakes(request, body):
        params = request.query_params
        return lab.mistakes(_int(params, "true", 0), _int(params, "pred"), _int(params, "limit", 24))

    async def thumb(request: Request):
        try:
            data = await run_in_threadpool(lab.thumbnail_jpeg, int(request.path_params["index"]))
        except ClipmgError:
            data = None
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def index(request: Request):
        return FileResponse(STATIC / "index.html")

    routes = [
        Route("/", index),
        Route("/api/state", api(lambda request, body: lab.state())),
        Route("/api/prompts", api(set_prompts), methods=["POST"]),
        Route("/api/prompts/load", api(load_prompts), methods=["POST"]),
        Route("/api/prompts/save", api(save_prompts), methods=["POST"]),
        Route("/api/search", api(lambda request, body: {"frames": lab.search(
            request.query_params.get("q", ""), _int(request.query_params, "k", 24))})),
        Route("/api/similar/{index:int}", api(lambda request, body: lab.similar(
            request.path_params["index"], _int(request.query_params, "k", 12)))),
        Route("/api/mistakes", api(mistakes)),
        Route("/api/clips", api(lambda request, body: {"clips": lab.clips()})),
        Route("/api/clip", api(lambda request, body: lab.clip(request.query_params.get("id", "")))),
        Route("/thumb/{index:int}", thumb),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or ClipmgError when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not TIME_WAIT: a listener still refuses
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ClipmgError(f"port {port} on {host} is in use: choose another with --port "
                              "(--port 0 picks a free one)") from error
        raise ClipmgError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class LabServer:
    """The app served on a socket bound at construction: `serve()` blocks (the CLI); `start()` runs
    it in a thread until `stop()` (tests, benchmarks)."""

    def __init__(self, lab: Lab, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 sock: socket.socket | None = None):
        import uvicorn

        self.socket = sock if sock is not None else bind(host, port)
        self.host, self.port = host, self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(lab), log_level="warning", lifespan="off"))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, timeout: float = 30.0) -> LabServer:
        self._thread = threading.Thread(target=self.serve, name="clipmg-lab", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ClipmgError(f"the lab's server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
