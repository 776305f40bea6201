"""A local stand-in for the Hugging Face and ModelScope hubs on 127.0.0.1, answering exactly the endpoints the
installed clients call for a model snapshot download:

Hugging Face (huggingface_hub, endpoint from HF_ENDPOINT):
    GET  /api/models/{repo}[/revision/{rev}]?blobs=True   model info: commit sha + files with sizes
    GET  /api/models/{repo}/tree/{rev}?recursive=True      file tree of a commit (snapshot_download's listing)
    HEAD /{repo}/resolve/{rev}/{file}                       ETag, X-Repo-Commit, Content-Length
    GET  /{repo}/resolve/{rev}/{file}                       the bytes; honours `Range: bytes=N-` with a 206
ModelScope (modelscope client, endpoint from MODELSCOPE_ENDPOINT):
    GET  /api/v1/models/{repo}/repo/files?Revision=&Recursive=   file listing with Size and Sha256
    GET  /api/v1/models/{repo}/repo?Revision=&FilePath=          the bytes; honours Range with a 206
    GET  /api/v1/models/{repo}                                   repo info

Faults are queued per (hub, file) and consumed by the file GETs, one per request: "drop" sends the headers and half
the body then closes the connection, "slow" pauses halfway, "404"/"500" answer that status. `api_status` makes the
listing endpoints answer an error status. Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HF_SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("huggingface", "info", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")),
    ("huggingface", "tree", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)$")),
    ("huggingface", "file", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")),
    ("modelscope", "tree", re.compile(rf"^/api/v1/models/{_REPO}/repo/files$")),
    ("modelscope", "file", re.compile(rf"^/api/v1/models/{_REPO}/repo$")),
    ("modelscope", "info", re.compile(rf"^/api/v1/models/{_REPO}$")),
]


@dataclass(frozen=True)
class Seen:
    hub: str | None
    kind: str | None
    method: str
    path: str
    file: str | None
    range: str | None
    status: int


@dataclass
class StandIn:
    repos: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)  # (hub, repo id) -> files
    faults: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (hub, file) -> faults, consumed in order
    api_status: int | None = None
    requests: list[Seen] = field(default_factory=list)
    lfs: frozenset[str] = frozenset({"model.safetensors"})
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def served(self, hub: str, file: str, method: str = "GET") -> list[Seen]:
        return [r for r in self.requests if r.hub == hub and r.file == file and r.method == method]

    def next_fault(self, hub: str, file: str) -> str | None:
        queue = self.faults.get((hub, file))
        return queue.pop(0) if queue else None


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: StandIn

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    # -- plumbing -------------------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(url.query).items()}
        for hub, kind, pattern in _ROUTES:
            match = pattern.match(url.path)
            if match:
                self.hub, self.kind, self.match = hub, kind, match
                return getattr(self, f"_{hub}_{kind}")()
        self.hub = self.kind = None
        self._json(404, {"error": "no such endpoint"})

    def _record(self, status: int, file: str | None = None) -> None:
        self.standin.requests.append(Seen(getattr(self, "hub", None), getattr(self, "kind", None), self.command,
                                          self.path, file, self.headers.get("Range"), status))

    def _send(self, status: int, body: bytes, headers: dict[str, str], file: str | None = None,
              fault: str | None = None) -> None:
        """Status, headers and body; a "drop" fault closes the connection halfway, "slow" pauses there."""
        self._record(status, file)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        half = len(body) // 2 if fault else len(body)
        self.wfile.write(body[:half])
        if fault == "drop":
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "slow":
            self.wfile.flush()
            time.sleep(0.4)  # the client sits with half a file on disk for a moment
        self.wfile.write(body[half:])

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _repo_files(self) -> dict[str, bytes] | None:
        return self.standin.repos.get((self.hub, unquote(self.match["repo"])))

    def _api_failure(self) -> bool:
        status = self.standin.api_status
        if status is not None:
            self._json(status, {"error": f"stand-in answers {status}", "Code": status, "Message": "failure"})
        return status is not None

    def _serve_bytes(self, data: bytes, file: str, headers: dict[str, str]) -> None:
        """The file (or the tail a `Range: bytes=N-` asks for), with the fault queued for it if any."""
        fault = self.standin.next_fault(self.hub, file) if self.command == "GET" else None
        if fault in ("404", "500"):
            body = json.dumps({"error": f"stand-in answers {fault}", "Code": int(fault)}).encode()
            return self._send(int(fault), body, {"Content-Type": "application/json"}, file)
        start = int(re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
        headers = {"Accept-Ranges": "bytes", **headers}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(206 if start else 200, data[start:], headers, file, fault)

    # -- Hugging Face ------------------------------------------------------------------------------------------
    def _hf_missing(self, files: dict[str, bytes] | None, rev: str | None) -> bool:
        if files is None:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        elif rev not in (None, "main", HF_SHA):
            self._json(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return files is None or rev not in (None, "main", HF_SHA)

    def _hf_entry(self, name: str, data: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha(data)}
        if name in self.standin.lfs:
            entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
        return entry

    def _huggingface_info(self) -> None:
        files = self._repo_files()
        if self._api_failure() or self._hf_missing(files, self.match["rev"]):
            return
        siblings = [{"rfilename": name, "size": len(data), "blobId": git_blob_sha(data)}
                    | ({"lfs": {"sha256": sha256(data), "size": len(data), "pointerSize": 134}}
                       if name in self.standin.lfs else {}) for name, data in files.items()]
        self._json(200, {"id": unquote(self.match["repo"]), "sha": HF_SHA, "private": False, "siblings": siblings})

    def _huggingface_tree(self) -> None:
        files = self._repo_files()
        if self._api_failure() or self._hf_missing(files, self.match["rev"]):
            return
        self._json(200, [self._hf_entry(name, data) for name, data in files.items()])

    def _huggingface_file(self) -> None:
        files = self._repo_files()
        if self._hf_missing(files, self.match["rev"]):
            return
        name = unquote(self.match["file"])
        if name not in files:
            return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        data = files[name]
        etag = sha256(data) if name in self.standin.lfs else git_blob_sha(data)
        self._serve_bytes(data, name, {"ETag": f'"{etag}"', "X-Repo-Commit": HF_SHA})

    # -- ModelScope --------------------------------------------------------------------------------------------
    def _ms_missing(self, files: dict[str, bytes] | None) -> bool:
        if files is None:
            self._json(404, {"Code": 10010205001, "Message": "model not found", "Success": False})
        return files is None

    def _modelscope_info(self) -> None:
        files = self._repo_files()
        if self._api_failure() or self._ms_missing(files):
            return
        self._json(200, {"Code": 200, "Data": {"Path": self.match["repo"]}, "Success": True})

    def _modelscope_tree(self) -> None:
        files = self._repo_files()
        if self._api_failure() or self._ms_missing(files):
            return
        listing = [{"Name": name.rsplit("/", 1)[-1], "Path": name, "Type": "blob", "Size": len(data),
                    "Sha256": sha256(data), "Revision": self.query.get("Revision")} for name, data in files.items()]
        self._json(200, {"Code": 200, "Data": {"Files": listing}, "Message": "success", "Success": True})

    def _modelscope_file(self) -> None:
        files = self._repo_files()
        if self._ms_missing(files):
            return
        name = self.query.get("FilePath", "")
        if name not in files:
            return self._json(404, {"Code": 10010205001, "Message": f"file {name} not found", "Success": False})
        self._serve_bytes(files[name], name, {"Content-Type": "application/octet-stream"})


# -- the fake repository and how tests read a downloaded copy ----------------------------------------------------
def fake_repo_files() -> dict[str, bytes]:
    """A small model repo: config, a 48 KiB "safetensors" file, tokenizer files."""
    weights = bytes((i * 7 + i // 251) % 256 for i in range(48 * 1024))
    return {
        "config.json": json.dumps({"architectures": ["InternVLChatModel"], "model_type": "internvl_chat"}).encode(),
        "generation_config.json": b'{"eos_token_id": 2}',
        "model.safetensors": weights,
        "tokenizer_config.json": b'{"model_max_length": 8192}',
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}).encode(),
    }


def read_tree(path) -> dict[str, bytes]:
    """Every file under `path` except the client's bookkeeping folder (.cache/) and vlserve's completion marker."""
    found = {}
    for root, _dirs, names in os.walk(path):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), path)
            if not rel.startswith(".cache" + os.sep) and rel != ".vlserve-complete.json":
                with open(os.path.join(root, name), "rb") as f:
                    found[rel] = f.read()
    return found
