"""Who holds a lock or runs a move, and git-style locks that need no ``flock`` to exclude.

Labs share stores and projects over NFS and Lustre, where ``flock`` may be local to each client
(``local_lock=all``, ``nolock``, ``localflock``) and so "succeeds" for everyone. A lock here is
a file created with ``O_CREAT | O_EXCL``, which is atomic on NFSv3+ and Lustre, as git's
``index.lock`` (``lockfile.c``). It names its owner: host, boot, pid and process namespaces,
pid, and the process's start time. It is broken only when its owner is provably dead: the same
host, boot and namespaces, and no such process (or another one under that pid, with another
start time). Anything else (an owner on another host, a lock whose record cannot be read) is
waited for, then refused in one line that says how to remove it by hand. A lock is never
broken on a timer: a slow live writer on another host would then rename over our write.

Breaking is itself exclusive: only a process that can prove the owner dead may break a lock,
so every breaker runs on the owner's own host, and there they take turns through an abstract
Unix socket (a name the kernel frees when its process dies, whatever the filesystem). Under
that turn nobody else can remove or replace the stale file (its owner is dead, other hosts may
not break it, and ``O_EXCL`` refuses to create over it), so the file removed is the one judged.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import random
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcas.errors import LockHeldError, UsageError
from modelcas.store.durable import named

DEFAULT_TIMEOUT = 60.0  # seconds a lock is waited for; MODELCAS_LOCK_TIMEOUT overrides
_RECORD_CAP = 4096


@dataclass(frozen=True, slots=True)
class Owner:
    """A process, named so that another process can tell whether it still runs."""

    host: str
    boot: str  # /proc/sys/kernel/random/boot_id: a pid means something only within one boot
    ns: str  # the pid and network namespaces: a pid means something only within its namespace
    pid: int
    start: int  # clock ticks after boot when the process started: tells a reused pid apart
    nonce: str = ""  # tells two holds by one process apart

    def describe(self) -> str:
        """``pid 123 on host-a`` for messages."""
        return f"pid {self.pid} on {self.host}"

    def encode(self) -> bytes:
        """The record as one line of JSON."""
        return json.dumps(asdict(self), sort_keys=True).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> Owner | None:
        """A record read back, or None when it is not one (empty, partial, foreign)."""
        try:
            raw = json.loads(data)
            owner = cls(
                str(raw["host"]),
                str(raw["boot"]),
                str(raw["ns"]),
                int(raw["pid"]),
                int(raw["start"]),
                str(raw.get("nonce", "")),
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        return owner if owner.pid > 0 else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read(4096).strip()
    except (OSError, UnicodeDecodeError):
        return None


def _namespaces() -> str:
    found = []
    for ns in ("pid", "net"):
        try:
            found.append(os.readlink(f"/proc/self/ns/{ns}"))
        except OSError:
            return ""
    return " ".join(found)


def _start_time(pid: int) -> int | None:
    """A process's start time (field 22 of /proc/PID/stat), or None when it does not run.

    A zombie counts as gone: it can no longer act.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


@functools.cache
def _machine() -> tuple[str, str, str]:
    return socket.gethostname(), _read("/proc/sys/kernel/random/boot_id") or "", _namespaces()


def me(nonce: str = "") -> Owner:
    """The calling process as an :class:`Owner` (start time 0 where ``/proc`` cannot tell)."""
    host, boot, ns = _machine()
    pid = os.getpid()
    return Owner(host, boot, ns, pid, _start_time(pid) or 0, nonce)


def provably_dead(owner: Owner) -> bool:
    """Whether ``owner`` certainly no longer runs.

    True only on the owner's own host, boot and namespaces, when its pid runs nothing or
    runs a process that started at another time. Anywhere else nothing can be proved.
    """
    host, boot, ns = _machine()
    if not boot or not ns or (owner.host, owner.boot, owner.ns) != (host, boot, ns):
        return False
    started = _start_time(owner.pid)
    if started is None:
        return _no_such_pid(owner.pid)
    return owner.start not in (0, started)


def _no_such_pid(pid: int) -> bool:
    """Whether the kernel says no process has ``pid``.

    A missing ``/proc/PID`` alone proves nothing: ``/proc`` mounted ``hidepid=2`` (hardened
    shared machines) hides other users' processes, and there ``kill(pid, 0)`` still says
    EPERM for a live one.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # It runs, but /proc did not show it running: a zombie (gone), or hidden from us.
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return False  # hidden: nothing can be proved
    fields = data[data.rfind(b")") + 2 :].split()
    return bool(fields) and fields[0] in (b"Z", b"X")


def read_owner(path: Path) -> Owner | None:
    """The owner a lock file names; None when it names none (or is not a regular file).

    Raises:
        FileNotFoundError: there is no lock file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _RECORD_CAP)
    finally:
        os.close(fd)
    return Owner.decode(data)


@contextlib.contextmanager
def _breaking_turn(path: Path) -> Iterator[None]:
    """The exclusive turn on this host to break the lock at ``path`` (see the module doc)."""
    st = os.stat(path.parent)
    key = hashlib.sha256(f"{st.st_dev}:{st.st_ino}:{path.name}".encode()).hexdigest()[:40]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            try:
                sock.bind(f"\0modelcas-break-{key}")
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                time.sleep(0.005)
        yield
    finally:
        sock.close()


def _break_if_dead(path: Path, judged: Owner) -> bool:
    """Remove the lock file if it still names ``judged``, who is dead; True when removed."""
    with _breaking_turn(path):
        try:
            holder = read_owner(path)
        except FileNotFoundError:
            return False
        if holder != judged or not provably_dead(judged):
            return False
        with named(path):
            os.unlink(path)
        return True


def timeout() -> float:
    """How long a lock is waited for: ``MODELCAS_LOCK_TIMEOUT`` seconds, else 60.

    Raises:
        UsageError: the setting is not a finite number of seconds >= 0 (fail closed: never
            a silent default, never a wait without end).
    """
    raw = os.environ.get("MODELCAS_LOCK_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(
            f"MODELCAS_LOCK_TIMEOUT={raw!r} is not a number of seconds",
            hint=f"unset it for the default ({DEFAULT_TIMEOUT:g}), or set a number >= 0",
        )
    return value


@dataclass(frozen=True, slots=True)
class Held:
    """A lock this process holds."""

    path: Path
    owner: Owner

    def still_mine(self) -> bool:
        """Whether the lock file still names this hold (nobody removed it by hand)."""
        try:
            return read_owner(self.path) == self.owner
        except FileNotFoundError:
            return False


def acquire(path: Path, what: str, wait: float | None = None) -> Held:
    """Take the lock ``path`` (created with ``O_EXCL``), waiting for a live holder.

    Args:
        path: the lock file, e.g. ``cas.lock.lock``.
        what: the file the lock protects, for messages.
        wait: seconds to wait for a holder (default :func:`timeout`).

    Returns:
        The hold; give it back with :func:`release`.

    Raises:
        LockHeldError: another process still holds it after ``wait`` seconds, or the lock
            file names no owner that could be proved dead.
    """
    owner = me(uuid.uuid4().hex)
    record = owner.encode()
    deadline = time.monotonic() + (timeout() if wait is None else wait)
    pause = 0.002
    while True:
        try:
            with named(path):
                fd = os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
                )
        except FileExistsError:
            pass
        else:
            try:
                with named(path):
                    os.write(fd, record)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            os.close(fd)  # on NFS the record reaches the server at close
            return Held(path, owner)
        try:
            holder = read_owner(path)
        except FileNotFoundError:
            continue  # released meanwhile
        if holder is not None and provably_dead(holder) and _break_if_dead(path, holder):
            continue
        if time.monotonic() >= deadline:
            raise _held(path, what, holder)
        time.sleep(pause * (0.5 + random.random()))  # noqa: S311 (jitter, not secrecy)
        pause = min(pause * 2, 0.1)


def release(held: Held) -> None:
    """Give a lock back (only if it is still ours)."""
    if held.still_mine():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(held.path)


@contextlib.contextmanager
def hold(path: Path, what: str, wait: float | None = None) -> Iterator[Held]:
    """:func:`acquire` for the ``with`` block, then :func:`release`."""
    held = acquire(path, what, wait)
    try:
        yield held
    finally:
        release(held)


def _held(path: Path, what: str, holder: Owner | None) -> LockHeldError:
    who = holder.describe() if holder is not None else "a process that did not record itself"
    return LockHeldError(
        f"{what} is locked by {who} ({path} exists); waited {timeout():.0f} s",
        hint=f"if no cas command runs there any more, remove the lock by hand: rm {path}",
    )
