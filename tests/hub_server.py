"""A local stand-in for the Hugging Face Hub: serves one folder as a model repo over HTTP,
with the endpoints and headers huggingface_hub's client uses (repo info, tree, resolve, Range requests).

It can also behave as the Hub does when a download fails: `gated` answers every file download 401 as a gated
model does (its page and file list stay public); `cut_after` {file: bytes} sends that many bytes of the file and
drops the connection, then drops every later request of it without a byte (the network gone); `reported_sizes`
{file: bytes} lists a file bigger than it is (a model that does not fit on the disk)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repo_id: str, folder: Path):
        self.repo_id, self.folder = repo_id, Path(folder)
        self.files = sorted(
            str(p.relative_to(self.folder)).replace("\\", "/") for p in self.folder.rglob("*") if p.is_file()
        )
        self.downloads: list[str] = []
        self.ranges: list[tuple[str, str]] = []  # (file, Range header) of every resumed download
        self.gated = False
        self.cut_after: dict[str, int] = {}
        self.reported_sizes: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _size(self, name: str) -> int:
        return self.reported_sizes.get(name) or (self.folder / name).stat().st_size

    def _etag(self, name: str) -> str:
        return hashlib.sha1((self.folder / name).read_bytes()).hexdigest()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, obj):
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, send_body: bool):
                path = unquote(urlparse(self.path).path)
                prefix = f"/{hub.repo_id}/resolve/"
                name = path[len(prefix) :].split("/", 1)[1] if path.startswith(prefix) else None
                if name not in hub.files:
                    self.send_error(404)
                    return
                if hub.gated:
                    return self._refuse(
                        401,
                        "GatedRepo",
                        f"Access to model {hub.repo_id} is restricted. You must "
                        "have access to it and be authenticated to access it. Please log in.",
                    )
                data = (hub.folder / name).read_bytes()
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", SHA)
                self.send_header("ETag", f'"{hub._etag(name)}"')
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    hub.ranges.append((name, self.headers["Range"]))
                self.end_headers()
                if send_body:
                    hub.downloads.append(name)
                    self._body(name, data[start:])

            def _body(self, name: str, data: bytes):
                if name not in hub.cut_after:
                    self.wfile.write(data)
                    return
                self.wfile.write(data[: hub.cut_after[name]])
                hub.cut_after[name] = 0  # the network is gone: later tries get nothing
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _refuse(self, code: int, error_code: str, message: str):
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):
                self._file(send_body=False)

            def do_GET(self):
                path = unquote(urlparse(self.path).path)
                api = f"/api/models/{hub.repo_id}"
                if path == api or path.startswith(api + "/revision/"):
                    return self._json(
                        {"id": hub.repo_id, "sha": SHA, "siblings": [{"rfilename": f} for f in hub.files]}
                    )
                if path.startswith(api + "/tree/"):
                    return self._json(
                        [{"type": "file", "path": f, "size": hub._size(f), "oid": hub._etag(f)} for f in hub.files]
                    )
                self._file(send_body=True)

        return Handler
