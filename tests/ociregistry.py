"""The real CNCF distribution registry (Debian's `docker-registry`) for tests, plus a raw-HTTP
client and a small token issuer, none of which use modelcas code.

`Registry(root)` writes a config with filesystem storage under `root`, listens on a free
127.0.0.1 port, and logs every request (the access log) to `root/registry.log`. `auth` can be
"htpasswd" (Basic) or "token" (Bearer: the registry trusts `TokenIssuer`'s certificate; the
issuer signs RS256 JWTs with an x5c header, as distribution 2.8 verifies them).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, unquote, urlsplit

USER, PASSWORD = "alice", "s3cret-PASSWORD-never-shown"
REFRESH_TOKEN = "refresh-TOKEN-never-shown-0123"
SERVICE, ISSUER = "modelcas-test-registry", "modelcas-test-issuer"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Request(NamedTuple):
    method: str
    path: str  # unquoted, with query
    status: int


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port> with storage under `root`."""

    def __init__(self, root: Path, *, auth: str | None = None, issuer: TokenIssuer | None = None):
        self.root = Path(root)
        self.auth = auth
        self.issuer = issuer
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.storage = self.root / "storage"
        self.log_path = self.root / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, repo: str) -> str:
        return f"oci://{self.host}/{repo}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: text",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.auth == "htpasswd":
            hashed = subprocess.run(
                ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, check=True
            ).stdout
            (self.root / "htpasswd").write_bytes(hashed)
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: modelcas-test",
                f"    path: {self.root / 'htpasswd'}",
            ]
        elif self.auth == "token":
            assert self.issuer is not None
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.issuer.url}/token",
                f"    service: {SERVICE}",
                f"    issuer: {ISSUER}",
                f"    rootcertbundle: {self.issuer.cert_path}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        config = self.root / "config.yml"
        config.write_text(self._config())
        log = open(self.log_path, "ab")  # noqa: SIM115 (the registry writes it until stop)
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                status = raw("GET", f"http://{self.host}/v2/")[0]
                if status in (200, 401):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start within 20 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def requests(self) -> list[Request]:
        """Every request the registry logged, in order."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = _ACCESS.search(line)
            if m:
                out.append(Request(m[1], unquote(m[2]), int(m[3])))
        return out

    def uploads_of(self, digest: str) -> int:
        """Completed uploads (PUT with ?digest=) of a blob, as the access log shows them."""
        return sum(
            1
            for r in self.requests()
            if r.method == "PUT"
            and "/blobs/uploads/" in r.path
            and f"digest={digest}" in r.path
            and r.status == 201
        )

    def downloads_of(self, digest: str) -> int:
        return sum(
            1 for r in self.requests() if r.method == "GET" and r.path.endswith(f"/blobs/{digest}")
        )

    def blob_data(self, digest: str) -> Path:
        hexpart = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


# -- an independent raw-HTTP client --------------------------------------------------------


def raw(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client; (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


class RawClient:
    """Pushes and reads artifacts by hand (anonymous registry), for interop checks."""

    def __init__(self, host: str) -> None:
        self.base = f"http://{host}"

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers, _ = raw("POST", f"{self.base}/v2/{repo}/blobs/uploads/")
        assert status == 202, status
        location = headers["location"]
        if location.startswith("/"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        status, _, body = raw(
            "PUT",
            f"{location}{sep}digest={digest}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        assert status == 201, (status, body)
        return digest

    def put_manifest(self, repo: str, ref: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest).encode()
        status, _, text = raw(
            "PUT", f"{self.base}/v2/{repo}/manifests/{ref}", body, {"Content-Type": OCI_MANIFEST}
        )
        assert status == 201, (status, text)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def manifest(self, repo: str, ref: str) -> tuple[int, bytes]:
        status, _, body = raw(
            "GET", f"{self.base}/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST}
        )
        return status, body

    def blob(self, repo: str, digest: str) -> bytes:
        status, _, body = raw("GET", f"{self.base}/v2/{repo}/blobs/{digest}")
        assert status == 200, status
        return body


# -- a token issuer ------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """A token server for distribution's `auth: token`: Basic (USER/PASSWORD) or a refresh
    token (POST, OAuth2) in, an RS256 JWT granting the asked scopes out. Anonymous callers
    get a token that grants nothing. Every request is logged in `self.log`."""

    def __init__(self, root: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = self.root / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.log: list[dict[str, Any]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""

    def __enter__(self) -> Self:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if (u, p) != (USER, PASSWORD):
                        issuer.log.append({"method": "GET", "refused": True})
                        self._answer(401, {"details": "bad credentials"})
                        return
                    user = u
                self._grant("GET", user, query.get("scope", []), query.get("service", [""])[0])

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                if form.get("refresh_token") != [REFRESH_TOKEN]:
                    issuer.log.append({"method": "POST", "refused": True})
                    self._answer(401, {"details": "bad refresh token"})
                    return
                scopes = " ".join(form.get("scope", [])).split()
                self._grant("POST", USER, scopes, form.get("service", [""])[0])

            def _grant(
                self, method: str, user: str | None, scopes: list[str], service: str
            ) -> None:
                issuer.log.append({"method": method, "user": user, "scopes": scopes})
                access = []
                for scope in scopes if user else []:
                    kind, _, rest = scope.partition(":")
                    repo, _, actions = rest.rpartition(":")
                    access.append({"type": kind, "name": repo, "actions": actions.split(",")})
                token = issuer.sign(user or "", service, access)
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def sign(self, subject: str, audience: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": audience,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def have_registry() -> bool:
    return shutil.which("docker-registry") is not None and shutil.which("htpasswd") is not None


def docker_config(path: Path, auths: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write a docker config.json (in `path`, a directory) and return the directory."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"auths": auths or {}, **extra}))
    return path


def basic_entry(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


class CuttingProxy:
    """A TCP relay in front of the registry that cuts the first `times` downloads of a blob
    after `keep` bytes of the answer (a dropped connection), or with `pause` slows them down,
    and records the requests' `Range` headers."""

    def __init__(
        self, target_port: int, blob: str, *, keep: int = 0, times: int = 1, pause: float = 0.0
    ) -> None:
        self.target_port = target_port
        self.blob = blob.encode()
        self.keep = keep
        self.left = times
        self.pause = pause  # seconds between 64 KiB pieces of the blob: a slow link
        self.ranges: list[str | None] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._server.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"cut_at": None, "sent": 0}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, state), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, Any]) -> None:
        try:
            while data := client.recv(1 << 16):
                if b"GET /v2/" in data and b"/blobs/" + self.blob in data:
                    m = re.search(rb"(?i)\r\nRange: ([^\r]*)", data)
                    with self._lock:
                        self.ranges.append(m[1].decode() if m else None)
                        if self.pause:
                            state["slow"] = True
                        elif self.left > 0:
                            self.left -= 1
                            state["cut_at"] = state["sent"] + self.keep
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    def _down(self, upstream: socket.socket, client: socket.socket, state: dict[str, Any]) -> None:
        try:
            while data := upstream.recv(1 << 16):
                cut_at = state["cut_at"]
                if cut_at is not None and state["sent"] + len(data) >= cut_at:
                    client.sendall(data[: cut_at - state["sent"]])
                    break
                client.sendall(data)
                state["sent"] += len(data)
                if state.get("slow"):
                    time.sleep(self.pause)
        except OSError:
            pass
        finally:
            # shutdown, not only close: the other relay thread still blocks in recv on them.
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
