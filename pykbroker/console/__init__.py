"""The web console: a page served by the broker itself on `console.port`.

One HTTP/1.1 server on the broker's event loop (no second process, no framework): the static
page (HTML, CSS and JavaScript shipped in the package, nothing fetched from the internet) and
the JSON endpoints of api.py it calls. Each request acts as a principal (auth.py) that the
broker's authorizer checks as it would the equivalent Kafka request.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from .api import ConsoleApi, translate_error
from .auth import ConsoleAuth
from .http import HttpError, HttpServer, Request, Response, Router, host_name

if TYPE_CHECKING:
    from pykbroker.broker import Broker

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def load_static() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type) of the page's files, read once at start-up."""
    files = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        ext = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and ext in CONTENT_TYPES:
            files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[ext])
    return files


class ConsoleServer:
    def __init__(self, broker: Broker):
        self.broker = broker
        self.api = ConsoleApi(broker)
        self.auth = ConsoleAuth(broker, self.api.executor)
        self.api.authentication = self.auth.method
        self.static = load_static()
        router = Router()
        self.api.routes(router)
        router.add("GET", "/", self.index)
        router.add("GET", "/static/{name}", self.file)
        self.http = HttpServer(router, translate_error)
        self.http.authenticate = self.auth.authenticate

    def allowed_hosts(self, host: str | None) -> set[str]:
        """Names the console answers for: loopback, its own host, the advertised listeners'
        hosts and console.allowed.hosts."""
        config = self.broker.config
        names = ["localhost", "127.0.0.1", "::1", host or ""]
        names += [h for h, _ in config.advertised_endpoints(self.broker.bound).values()]
        names += config.get("console.allowed.hosts") or []
        return {host_name(n) for n in names if n} - {"0.0.0.0", "::"}

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self, host: str | None, port: int) -> None:
        self.http.allowed_hosts = self.allowed_hosts(host)
        await self.http.start(host, port)
        self.api.sampler.start()

    async def stop(self) -> None:
        self.api.sampler.stop()
        await self.http.stop()
        self.api.close()

    async def index(self, request: Request) -> Response:
        return self._serve("index.html")

    async def file(self, request: Request) -> Response:
        return self._serve(request.params["name"])

    def _serve(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            raise HttpError(404, "NOT_FOUND", f"No such file: {name}")
        body, ctype = found
        return Response(200, body, ctype, {
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
            "X-Frame-Options": "DENY",
        })  # fmt: skip
