"""Package indexes served over http on 127.0.0.1 for the fetch tests: a PEP 503 HTML tree, a
PEP 691 JSON tree and a password-protected HTML tree, over files the tests make.

Layout under the served root: `files/NAME` (the distributions), `html/simple/PROJECT/` and
`json/simple/PROJECT/` (the project pages), `private/simple/PROJECT/` (HTML, basic auth).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name

USER, PASSWORD = "builder", "s3cret"


@dataclass
class Dist:
    """One file of a project page."""

    filename: str
    data: bytes
    yanked: str | None = None  # a reason ("" for none given) marks the file yanked
    listed_sha256: str | None = None  # what the page says; default: the real digest

    @property
    def sha256(self) -> str:
        return self.listed_sha256 or hashlib.sha256(self.data).hexdigest()


def sdist_bytes(name: str, version: str, setup_py: str | None = None) -> bytes:
    """A minimal sdist: PKG-INFO, pyproject.toml (setuptools) and setup.py."""
    top = f"{name}-{version}"
    setup_py = setup_py or (f"from setuptools import setup\nsetup(name={name!r}, "
                            f"version={version!r}, py_modules=[])\n")
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\n'
                          'build-backend = "setuptools.build_meta"\n',
        "setup.py": setup_py,
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mode, info.mtime = len(data), 0o644, 315532800
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@dataclass
class IndexServer:
    root: Path
    url: str  # http://127.0.0.1:PORT
    requests: list[str] = field(default_factory=list)

    def publish(self, project: str, dists: list[Dist]) -> None:
        """Write the files and the project's pages in all three trees."""
        files = self.root / "files"
        files.mkdir(parents=True, exist_ok=True)
        for d in dists:
            (files / d.filename).write_bytes(d.data)
        name = canonicalize_name(project)
        links = []
        for d in dists:
            yanked = "" if d.yanked is None else f' data-yanked="{d.yanked}"'
            links.append(f'<a href="../../../files/{d.filename}#sha256={d.sha256}"{yanked}>'
                         f"{d.filename}</a><br>")
        page = "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        for tree in ("html", "private"):
            (self.root / tree / "simple" / name).mkdir(parents=True, exist_ok=True)
            (self.root / tree / "simple" / name / "index.html").write_text(page)
        doc = {"meta": {"api-version": "1.0"}, "name": name, "files": [
            {"filename": d.filename, "url": f"../../../files/{d.filename}",
             "hashes": {"sha256": d.sha256},
             **({"yanked": d.yanked or True} if d.yanked is not None else {})}
            for d in dists]}
        (self.root / "json" / "simple" / name).mkdir(parents=True, exist_ok=True)
        (self.root / "json" / "simple" / name / "index.html").write_text(json.dumps(doc))


@contextlib.contextmanager
def serve(root: Path) -> Iterator[IndexServer]:
    root.mkdir(parents=True, exist_ok=True)
    server_state = IndexServer(root, "")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            if self.path.startswith("/private/"):
                token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="index"')
                    self.end_headers()
                    return
            super().do_GET()

        def guess_type(self, path: str | object) -> str:
            text = str(path)
            if "/json/simple/" in text and text.endswith("index.html"):
                return "application/vnd.pypi.simple.v1+json"
            return super().guess_type(text)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
