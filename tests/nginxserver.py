"""A real web server for the plain-URL remote: Debian's nginx, started by the tests.

`Nginx(root)` writes a config with every path (pid, error and access logs, temporary files)
under `root`, listens on a free 127.0.0.1 port, and serves `root/www`:

- `/files/PATH`: the files, with nginx's own ETag, Last-Modified and Range/If-Range handling;
- `/slow/PATH`: the same files trickled at `rate` bytes per second (nginx's `limit_rate`).

Its access log records method, URI, status, bytes sent, and the Range and If-Range headers
(`requests()`). `Cutter` is a TCP relay in front of it that cuts the first `times` answers to
a path after `keep` bytes (a dropped connection), written without any modelcas code.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_LINE = re.compile(r'(\S+) (\S+) (\d+) (\d+) "(.*)" "(.*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def have_nginx() -> bool:
    return Path(NGINX).is_file() and os.access(NGINX, os.X_OK)


class Request(NamedTuple):
    method: str
    uri: str
    status: int
    sent: int
    range: str | None
    if_range: str | None


class Nginx:
    """nginx on 127.0.0.1:<free port>, serving `root/www`, everything it writes under `root`."""

    def __init__(self, root: Path, *, rate: int = 20000) -> None:
        self.root = Path(root)
        self.www = self.root / "www"
        self.rate = rate
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.access_log = self.root / "access.log"
        self.error_log = self.root / "error.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, *, slow: bool = False) -> str:
        return f"{self.base}/{'slow' if slow else 'files'}/{path}"

    def put(self, path: str, data: bytes) -> str:
        """Write a file the server serves (atomically, so nginx never sees half of it)."""
        target = self.www / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return self.url(path)

    def _config(self) -> str:
        # As root, nginx's workers would run as nobody, who cannot enter the test's folder.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"  {kind}_temp_path {self.root / 'temp' / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {self.root / "nginx.pid"};
error_log {self.error_log} info;
events {{ worker_connections 64; }}
http {{
  log_format ranged '$request_method $request_uri $status $body_bytes_sent '
                    '"$http_range" "$http_if_range"';
  access_log {self.access_log} ranged;
{temp}
  default_type application/octet-stream;
  sendfile on;
  server {{
    listen 127.0.0.1:{self.port};
    location /files/ {{ alias {self.www}/; }}
    location /slow/ {{ alias {self.www}/; limit_rate {self.rate}; }}
  }}
}}
"""

    def start(self) -> None:
        self.www.mkdir(parents=True, exist_ok=True)
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.root / "temp" / kind).mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        conf = self.root / "nginx.conf"
        conf.write_text(self._config())
        log = open(self.root / "stderr.log", "ab")  # noqa: SIM115 (nginx writes it until stop)
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.root), "-c", str(conf), "-e", str(self.error_log)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            if self.proc.poll() is not None:
                logs = [self.root / "stderr.log", self.error_log]
                text = "".join(p.read_text(errors="replace")[-2000:] for p in logs if p.exists())
                raise RuntimeError(f"nginx exited: {text}")
            time.sleep(0.05)
        raise RuntimeError("nginx did not start within 20 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

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

    def requests(self) -> list[Request]:
        """Every request nginx logged, in order (the log is written when each one ends)."""
        out = []
        if not self.access_log.exists():
            return out
        text = self.access_log.read_text(errors="replace").replace("\\x22", '"')
        for line in text.splitlines():
            m = _LINE.fullmatch(line)
            if m is None:
                continue
            method, uri, status, sent, rng, if_range = m.groups()
            out.append(
                Request(
                    method,
                    uri,
                    int(status),
                    int(sent),
                    None if rng == "-" else rng,
                    None if if_range == "-" else if_range,
                )
            )
        return out


class Cutter:
    """A TCP relay that cuts the first `times` answers to requests for `path` after `keep`
    bytes of the answer (headers included), and relays everything else untouched."""

    def __init__(
        self,
        target_port: int,
        path: str,
        *,
        keep: int,
        times: int = 1,
        on_cut: Callable[[], object] | None = None,
    ) -> None:
        self.target_port = target_port
        self.path = path.encode()
        self.keep = keep
        self.left = times
        self.on_cut = on_cut  # runs once a cut answer was sent, before the connection closes
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{path}"

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
            state: dict[str, Any] = {"cut_at": None, "sent": 0}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, state), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, Any]) -> None:
        try:
            while data := client.recv(1 << 16):
                if data.startswith(b"GET ") and self.path in data.split(b"\r\n", 1)[0]:
                    with self._lock:
                        if self.left > 0:
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
                    if self.on_cut is not None:
                        self.on_cut()
                    break
                client.sendall(data)
                state["sent"] += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
