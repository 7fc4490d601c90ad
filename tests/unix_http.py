"""A small HTTP service on a Unix socket, as a Docker engine is: GET routes answered as JSON.

``serve(routes)`` yields the socket's path. ``routes`` is read at each request, so a test may
change it meanwhile; a path not in it is answered 500. The socket sits in a new 0700 folder
(short: Unix socket paths are limited), with the owner, group and mode a test asks for.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def serve(
    routes: Mapping[str, Any], *, mode: int | None = None, group: int | None = None
) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in routes:
                self.send_error(500)
                return
            body = json.dumps(routes[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    folder = Path(tempfile.mkdtemp(prefix="fc-engine-"))
    path = str(folder / "engine.sock")
    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    if group is not None:
        os.chown(path, 0, group)
    if mode is not None:
        os.chmod(path, mode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder)
