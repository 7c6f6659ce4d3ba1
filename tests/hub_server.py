"""A small Hugging Face hub on 127.0.0.1 for tests: the endpoints huggingface_hub really calls.

- ``GET /api/models/{repo}[/revision/{rev}]``: model info with siblings (size, blobId, lfs sha256).
- ``GET /api/models?search=&filter=&pipeline_tag=&author=&sort=&limit=&expand=``: the model list, with the
  Hub's semantics: ``search`` a case-insensitive substring of the id, every ``filter`` a tag the repo has,
  ``sort`` descending, ``expand`` the only properties returned (plus ids), pages chained by a ``Link``
  header; private repositories only for their token.
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: small files are answered directly (ETag = git blob
  sha1); LFS files answer 302 to a second port (the "CDN", another origin, as on the real hub)
  with ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and ``X-Repo-Commit``.
- ``GET /cdn/{sha256}`` on the CDN port: the bytes, with ``Range`` support (206).

Errors carry the hub's ``X-Error-Code`` headers (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo). Faults can be injected per file name: cut the connection half-way once, pause
half-way until released (to kill the client there), or serve corrupted bytes.

A file's content is ``base file bytes + extra bytes`` without copying the base, so several
"quant" files can be made from the one shipped GGUF cheaply while their bytes (and hashes) differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt")
_BASE_HASH_CACHE: dict[Path, "hashlib._Hash"] = {}


def _base_hash(path: Path):
    if path not in _BASE_HASH_CACHE:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _BASE_HASH_CACHE[path] = h
    return _BASE_HASH_CACHE[path].copy()


@dataclass
class HubFile:
    name: str
    base: Path | None = None
    extra: bytes = b""
    lfs: bool | None = None

    def __post_init__(self):
        self.base_size = self.base.stat().st_size if self.base else 0
        self.size = self.base_size + len(self.extra)
        if self.lfs is None:
            self.lfs = self.name.lower().endswith(LFS_SUFFIXES)
        h = _base_hash(self.base) if self.base else hashlib.sha256()
        h.update(self.extra)
        self.sha256 = h.hexdigest()
        if self.lfs:
            pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                       f"size {self.size}\n").encode()
            self.blob_id = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
            self.pointer_size = len(pointer)
        else:
            self.blob_id = hashlib.sha1(b"blob %d\0" % self.size + self.read(0, self.size)).hexdigest()

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end)."""
        out = b""
        if start < self.base_size:
            with self.base.open("rb") as f:
                f.seek(start)
                out = f.read(min(end, self.base_size) - start)
        if end > self.base_size:
            out += self.extra[max(start - self.base_size, 0): end - self.base_size]
        return out


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    revisions: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    token: str | None = None  # private: this bearer token is required
    gated: bool = False  # files need a token in `approved_tokens`
    approved_tokens: tuple[str, ...] = ()
    license: str | None = "apache-2.0"
    library: str = "gguf"
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str | None = "text-generation"
    history: dict[str, dict[str, HubFile]] = field(default_factory=dict)  # commit -> files, when not `files`

    def __post_init__(self):
        if not self.revisions:
            self.revisions = {"main": hashlib.sha1(self.repo_id.encode()).hexdigest()}

    def commit_for(self, rev: str) -> str | None:
        if rev in self.revisions:
            return self.revisions[rev]
        if rev in self.revisions.values() or rev in self.history:
            return rev
        return None

    def files_at(self, commit: str) -> dict[str, HubFile]:
        return self.history.get(commit, self.files)

    @property
    def tags(self) -> list[str]:
        tags = [self.library] + (["gguf"] if any(n.endswith(".gguf") for n in self.files) else [])
        tags += ["safetensors"] if any(n.endswith(".safetensors") for n in self.files) else []
        tags += [self.pipeline_tag] if self.pipeline_tag else []
        return list(dict.fromkeys(tags + ([f"license:{self.license}"] if self.license else [])))

    def advance(self, branch: str = "main", changed: dict[str, bytes | None] | None = None) -> str:
        """Push a new commit to ``branch``: the files of its current commit, with ``changed`` files
        (name -> new content, or None to delete) replaced, added or deleted. Older commits keep serving their own files."""
        old = self.revisions[branch]
        self.history.setdefault(old, dict(self.files))
        files = dict(self.files)
        for name, data in (changed or {}).items():
            if data is None:
                files.pop(name, None)
            else:
                files[name] = HubFile(name, None, data)
        new = hashlib.sha1(f"{old}:{sorted(changed or {})}:{len(self.history)}".encode()).hexdigest()
        self.history[new] = files
        self.files = files
        self.revisions[branch] = new
        return new


class HubState:
    def __init__(self):
        self.repos: dict[str, HubRepo] = {}
        self.lock = threading.Lock()
        self.log: list[dict] = []
        self.cut_once: set[str] = set()
        self.corrupt: set[str] = set()
        self.pause: dict[str, tuple[threading.Event, threading.Event]] = {}
        self.bytes_sent: dict[str, int] = {}
        self.use_sendfile = True
        self.list_queries: list[dict] = []  # parsed query strings of GET /api/models
        self.api_status: int | None = None  # answer every /api/ request with this HTTP error

    def reset(self):
        with self.lock:
            self.log.clear()
            self.cut_once.clear()
            self.corrupt.clear()
            for _, release in self.pause.values():
                release.set()
            self.pause.clear()
            self.bytes_sent.clear()
            self.list_queries.clear()
            self.api_status = None

    def pause_half(self, filename: str) -> tuple[threading.Event, threading.Event]:
        """Serve half of ``filename``, set the first event, then wait for the second."""
        pair = (threading.Event(), threading.Event())
        self.pause[filename] = pair
        return pair

    def requests(self, method: str | None = None, contains: str = "") -> list[dict]:
        with self.lock:
            return [r for r in self.log if (method is None or r["method"] == method) and contains in r["path"]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestHub/1.0"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle + delayed ACK add 40 ms.
    disable_nagle_algorithm = True
    state: HubState
    hub: "HubServer"
    is_cdn = False

    def log_message(self, *args):  # keep pytest output clean
        pass

    # -- helpers
    def _record(self):
        with self.state.lock:
            self.state.log.append({"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                                   "auth": self.headers.get("Authorization"), "cdn": self.is_cdn,
                                   "time": time.monotonic()})

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, extra: dict | None = None):
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:] if auth.lower().startswith("bearer ") else None

    def _repo(self, repo_id: str) -> HubRepo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.token is not None and self._token() != repo.token:
            # The real hub answers 401 for private repos without (valid) credentials.
            self._error(401, None, "Invalid username or password.")
            return None
        return repo

    # -- verbs
    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def _route(self):
        self._record()
        path = unquote(urlsplit(self.path).path)
        try:
            if self.is_cdn:
                return self._cdn(path)
            if path.startswith("/api/") and self.state.api_status:
                return self._error(self.state.api_status, None, "Service unavailable")
            if path.rstrip("/") == "/api/models":
                return self._list()
            if path.startswith("/api/models/"):
                return self._api(path[len("/api/models/"):])
            parts = path.lstrip("/").split("/")
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            self._error(404, None, "Not found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api(self, rest: str):
        parts = rest.split("/")
        repo_id = "/".join(parts[:2])
        rev = "main"
        if len(parts) >= 4 and parts[2] == "revision":
            rev = "/".join(parts[3:])
        elif len(parts) != 2:
            return self._error(404, None, "Not found")
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = repo.commit_for(rev)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        siblings = []
        for f in repo.files_at(commit).values():
            s = {"rfilename": f.name, "size": f.size, "blobId": f.blob_id}
            if f.lfs:
                s["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
            siblings.append(s)
        info = {
            "_id": commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": commit, "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
            "private": repo.token is not None, "gated": "manual" if repo.gated else False, "disabled": False,
            "downloads": repo.downloads, "likes": repo.likes, "library_name": repo.library,
            "pipeline_tag": repo.pipeline_tag, "tags": repo.tags,
            "cardData": {"license": repo.license} if repo.license else {},
            "siblings": siblings,
        }
        self._send(200, json.dumps(info).encode())

    def _list(self):
        from urllib.parse import parse_qs, urlencode

        query = parse_qs(urlsplit(self.path).query)
        one = lambda k: (query.get(k) or [None])[0]  # noqa: E731
        with self.state.lock:
            self.state.list_queries.append(query)
        token = self._token()
        known = {t for r in self.state.repos.values() for t in (r.token, *r.approved_tokens) if t}
        if token is not None and token not in known:
            return self._error(401, None, "Invalid credentials in Authorization header")
        repos = [r for r in self.state.repos.values() if r.token is None or r.token == token]
        if one("search"):
            repos = [r for r in repos if one("search").lower() in r.repo_id.lower()]
        for tag in query.get("filter", []):
            repos = [r for r in repos if tag in r.tags or tag == r.library]
        if one("pipeline_tag"):
            repos = [r for r in repos if r.pipeline_tag == one("pipeline_tag")]
        if one("author"):
            repos = [r for r in repos if r.repo_id.split("/")[0] == one("author")]
        sort = one("sort")
        if sort in ("downloads", "likes"):
            repos.sort(key=lambda r: getattr(r, sort), reverse=True)
        elif sort is not None:
            return self._error(400, None, f"Invalid sort parameter: {sort}")
        page_size = min(int(one("limit") or 1000), 1000)
        start = int(one("cursor") or 0)
        page = repos[start:start + page_size]
        expand = query.get("expand")
        out = []
        for r in page:
            commit = r.revisions.get("main") or next(iter(r.revisions.values()))
            full = {"_id": commit[:24], "id": r.repo_id, "modelId": r.repo_id, "author": r.repo_id.split("/")[0],
                    "sha": commit, "downloads": r.downloads, "likes": r.likes, "library_name": r.library,
                    "pipeline_tag": r.pipeline_tag, "tags": r.tags, "private": r.token is not None,
                    "gated": "manual" if r.gated else False, "createdAt": "2025-01-01T00:00:00.000Z",
                    "siblings": [{"rfilename": n} for n in r.files]}
            if any(n.endswith(".gguf") for n in r.files):
                full["gguf"] = {"total": 135_000_000, "architecture": "llama", "context_length": 8192}
            keep = set(expand) if expand else {"downloads", "likes", "library_name", "pipeline_tag", "tags",
                                               "private", "createdAt"}
            out.append({k: v for k, v in full.items() if k in keep | {"_id", "id", "modelId"}})
        headers = {}
        if start + page_size < len(repos) and not one("limit"):
            nxt = {k: v for k, v in query.items() if k != "cursor"} | {"cursor": [str(start + page_size)]}
            headers["Link"] = f'<{self.hub.url}/api/models?{urlencode(nxt, doseq=True)}>; rel="next"'
        self._send(200, json.dumps(out).encode(), headers)

    def _resolve(self, repo_id: str, rev: str, filename: str):
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = repo.commit_for(rev)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if repo.gated and self._token() not in repo.approved_tokens:
            status = 401 if self._token() is None else 403
            return self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted.")
        f = repo.files_at(commit).get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if f.lfs:
            location = f"{self.hub.cdn_url}/cdn/{f.sha256}?name={filename}"
            headers = {**common, "Location": location, "ETag": f'"{f.blob_id}"',
                       "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)}
            return self._send(302, b"", headers, ctype="text/plain")
        headers = {**common, "ETag": f'"{f.blob_id}"'}
        if self.command == "HEAD":
            self.send_response(200)
            self.send_header("Content-Length", str(f.size))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self._send(200, f.read(0, f.size), headers, ctype="application/octet-stream")

    def _cdn(self, path: str):
        sha = path.rsplit("/", 1)[-1]
        f = next((f for r in self.state.repos.values() for files in [r.files, *r.history.values()]
                  for f in files.values() if f.sha256 == sha), None)
        if f is None:
            return self._error(404, None, "NoSuchKey")
        start, end = 0, f.size
        rng = self.headers.get("Range")
        status = 200
        if rng:
            spec = rng.split("=", 1)[1]
            a, _, b = spec.partition("-")
            start = int(a) if a else f.size - int(b)
            end = int(b) + 1 if (a and b) else f.size
            if start >= f.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{f.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{f.sha256}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{f.size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._stream(f, start, end)

    def _stream(self, f: HubFile, start: int, end: int):
        st = self.state
        name = f.name
        with st.lock:
            cut = name in st.cut_once and start == 0
            if cut:
                st.cut_once.discard(name)
            corrupt = name in st.corrupt
            pause = st.pause.pop(name, None) if start == 0 else None
        half = start + (end - start) // 2
        if cut or pause:
            self._write_range(f, start, half, corrupt)
            if cut:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            reached, release = pause
            reached.set()
            release.wait(60)
            self._write_range(f, half, end, corrupt)
            return
        self._write_range(f, start, end, corrupt)

    def _write_range(self, f: HubFile, start: int, end: int, corrupt: bool):
        pos = start
        if not corrupt and self.state.use_sendfile and f.base is not None and pos < f.base_size:
            stop = min(end, f.base_size)
            with f.base.open("rb") as fh:
                self.connection.sendfile(fh, offset=pos, count=stop - pos)
            self._count(f, stop - pos)
            pos = stop
        while pos < end:
            n = min(end - pos, 1 << 20)
            chunk = f.read(pos, pos + n)
            if corrupt:
                # flip some bytes in the middle of the file, keep the length
                mid = f.size // 2
                if pos <= mid < pos + n:
                    b = bytearray(chunk)
                    for i in range(mid - pos, min(mid - pos + 16, len(b))):
                        b[i] ^= 0xFF
                    chunk = bytes(b)
            self.wfile.write(chunk)
            self._count(f, len(chunk))
            pos += n

    def _count(self, f: HubFile, n: int):
        with self.state.lock:
            self.state.bytes_sent[f.name] = self.state.bytes_sent.get(f.name, 0) + n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HubServer:
    """Two listening sockets on 127.0.0.1 (API + CDN) sharing one HubState."""

    def __init__(self):
        self.state = HubState()
        api_handler = type("ApiHandler", (_Handler,), {"state": self.state, "hub": self, "is_cdn": False})
        cdn_handler = type("CdnHandler", (_Handler,), {"state": self.state, "hub": self, "is_cdn": True})
        self._api = _Server(("127.0.0.1", 0), api_handler)
        self._cdn = _Server(("127.0.0.1", 0), cdn_handler)
        self.url = f"http://127.0.0.1:{self._api.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads: list[threading.Thread] = []

    def add(self, repo: HubRepo) -> HubRepo:
        self.state.repos[repo.repo_id] = repo
        return repo

    def start(self) -> "HubServer":
        for srv in (self._api, self._cdn):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def point(self, monkeypatch) -> None:
        """Aim HF_ENDPOINT at this server, for subprocesses and for in-process hub calls alike.

        huggingface_hub reads HF_ENDPOINT once, at import: when an earlier test already imported it,
        its constants still name the real hub, so they are patched too (the library's own state,
        never an llmcli function)."""
        import sys

        monkeypatch.setenv("HF_ENDPOINT", self.url)
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            monkeypatch.setattr(constants, "ENDPOINT", self.url)
            monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                                self.url + "/{repo_id}/resolve/{revision}/{filename}")

    def stop(self) -> None:
        self.state.reset()
        for srv in (self._api, self._cdn):
            srv.shutdown()
            srv.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- test repositories

GGUF_REPO = "TestOrg/SmolLM2-135M-Instruct-GGUF"
HF_REPO = "TestOrg/SmolLM2-135M-Instruct"
NO_Q4KM_REPO = "TestOrg/Tiny-NoQ4KM-GGUF"
PRIVATE_REPO = "TestOrg/private-model"
GATED_REPO = "TestOrg/gated-model"
PRIVATE_TOKEN = "hf_test_secret"
CLASSIFIER_REPO = "TestOrg/smol-classifier"
OTHER_GGUF_REPO = "OtherOrg/Llama-Tiny-GGUF"


def _safetensors_bytes(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A valid safetensors file with zero-filled tensors."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2}
    header, off = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + bytes(off)


def fake_gguf(tag: bytes) -> bytes:
    """Small bytes that start with the GGUF magic (enough for download-only tests)."""
    return b"GGUF" + tag.ljust(60, b".") + os.urandom(4096)


def build_repos(gguf: Path) -> list[HubRepo]:
    """The repositories the store tests use."""
    gguf_files = {}
    for i, quant in enumerate(["Q4_K_M", "Q8_0", "Q4_0"]):
        name = f"SmolLM2-135M-Instruct-{quant}.gguf"
        # llama.cpp ignores bytes after the last tensor; different bytes -> different blobs.
        gguf_files[name] = HubFile(name, gguf, b"\0" * 32 + f"llmcli-test-{quant}-{i}".encode())
    for part in (1, 2):
        name = f"SmolLM2-135M-Instruct-Q6_K-0000{part}-of-00002.gguf"
        gguf_files[name] = HubFile(name, None, fake_gguf(f"Q6_K part {part}".encode()))
    for name, data in {"README.md": b"# SmolLM2 GGUF (test)\n", ".gitattributes": b"*.gguf filter=lfs\n"}.items():
        gguf_files[name] = HubFile(name, None, data)
    gguf_repo = HubRepo(GGUF_REPO, gguf_files, {"main": "a" * 40, "v1.0": "b" * 40}, downloads=5000, likes=40)

    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "max_position_embeddings": 8192, "vocab_size": 49152, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
    }
    tok_config = {"chat_template": "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                                   "{{ message['content'] }}<|im_end|>\n{% endfor %}",
                  "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    hf_files = {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": b'{"bos_token_id": 1, "eos_token_id": 2}',
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}).encode(),
        "tokenizer_config.json": json.dumps(tok_config).encode(),
        "special_tokens_map.json": b'{"eos_token": "<|im_end|>"}',
        "model.safetensors": _safetensors_bytes({"model.embed_tokens.weight": ("BF16", [64, 576]),
                                                 "model.norm.weight": ("BF16", [576])}),
        "pytorch_model.bin": b"PK\x03\x04 pickle must never be downloaded" + os.urandom(512),
        "onnx/model.onnx": b"onnx" + os.urandom(512),
        "README.md": b"---\nlicense: apache-2.0\n---\n# test\n",
        ".gitattributes": b"*.safetensors filter=lfs\n",
    }
    hf_repo = HubRepo(HF_REPO, {n: HubFile(n, None, d) for n, d in hf_files.items()}, library="transformers",
                      downloads=9000, likes=120)

    small = {f"tiny-{q}.gguf": HubFile(f"tiny-{q}.gguf", None, fake_gguf(q.encode())) for q in ("Q8_0", "Q5_K_M", "F16")}
    no_q4 = HubRepo(NO_Q4KM_REPO, small, downloads=70, likes=1)
    # Only in model searches: a repo of another task, and a GGUF repo whose name lacks "smol".
    classifier = HubRepo(CLASSIFIER_REPO, {"model.safetensors": HubFile("model.safetensors", None, b"x" * 64)},
                         library="transformers", pipeline_tag="text-classification", downloads=10**6)
    other = HubRepo(OTHER_GGUF_REPO, {"other-IQ4_XS.gguf": HubFile("other-IQ4_XS.gguf", None, fake_gguf(b"o"))},
                    downloads=100)
    private = HubRepo(PRIVATE_REPO, {"tiny-Q4_K_M.gguf": HubFile("tiny-Q4_K_M.gguf", None, fake_gguf(b"private"))},
                      token=PRIVATE_TOKEN)
    gated = HubRepo(GATED_REPO, {"tiny-Q4_K_M.gguf": HubFile("tiny-Q4_K_M.gguf", None, fake_gguf(b"gated"))},
                    gated=True, approved_tokens=(PRIVATE_TOKEN,), license="llama3")
    return [gguf_repo, hf_repo, no_q4, private, gated, classifier, other]


DUAL_REPO = "TestOrg/SmolLM2-135M-Instruct-Dual"


def dual_format_repo(gguf: Path) -> HubRepo:
    """A repository with both weight formats (safetensors + config.json, and a Q4_K_M GGUF); kept out
    of ``build_repos`` so the search tests' result lists do not change."""
    repos = {r.repo_id: r for r in build_repos(gguf)}
    files = dict(repos[HF_REPO].files)
    q4 = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
    files[q4] = repos[GGUF_REPO].files[q4]
    return HubRepo(DUAL_REPO, files, library="transformers", downloads=10)


# ---------------------------------------------------------------- pytest fixtures
# Test modules import these names (``from hub_server import hub, hub_server``) to use them.

try:
    import pytest
except ImportError:  # pragma: no cover - the server also runs standalone
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def hub_server(gguf_path):
        """One hub for the session; tests share it and reset its faults/log."""
        srv = HubServer()
        for r in build_repos(gguf_path):
            srv.add(r)
        srv.start()
        yield srv
        srv.stop()

    @pytest.fixture
    def hub(hub_server, monkeypatch):
        """The session hub, reset, with HF_ENDPOINT pointing at it and no ambient token/offline mode."""
        hub_server.state.reset()
        hub_server.point(monkeypatch)
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_DISABLE_XET"):
            monkeypatch.delenv(var, raising=False)
        yield hub_server
        hub_server.state.reset()


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/hub_server.py GGUF
    import argparse

    ap = argparse.ArgumentParser(description="Serve the llmcli test repositories on 127.0.0.1.")
    ap.add_argument("gguf", type=Path, help="the GGUF file the test repositories are made from")
    args = ap.parse_args()
    srv = HubServer()
    for r in build_repos(args.gguf):
        srv.add(r)
    srv.start()
    print(srv.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
