"""A local stand-in for the Hugging Face Hub: serves one folder as a model repo over HTTP,
with the endpoints and headers huggingface_hub's client uses (repo info, tree, resolve)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repo_id: str, folder: Path):
        self.repo_id, self.folder = repo_id, Path(folder)
        self.files = sorted(str(p.relative_to(self.folder)).replace("\\", "/") for p in self.folder.rglob("*") if p.is_file())
        self.downloads: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

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
                name = path[len(prefix):].split("/", 1)[1] if path.startswith(prefix) else None
                if name not in hub.files:
                    self.send_error(404)
                    return
                data = (hub.folder / name).read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", SHA)
                self.send_header("ETag", f'"{hub._etag(name)}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    hub.downloads.append(name)
                    self.wfile.write(data)

            def do_HEAD(self):
                self._file(send_body=False)

            def do_GET(self):
                path = unquote(urlparse(self.path).path)
                api = f"/api/models/{hub.repo_id}"
                if path == api or path.startswith(api + "/revision/"):
                    return self._json({"id": hub.repo_id, "sha": SHA, "siblings": [{"rfilename": f} for f in hub.files]})
                if path.startswith(api + "/tree/"):
                    return self._json([{"type": "file", "path": f, "size": (hub.folder / f).stat().st_size,
                                        "oid": hub._etag(f)} for f in hub.files])
                self._file(send_body=True)

        return Handler
