"""Progress bars: drawn on a terminal (a real pseudo-terminal here), never when piped.

The work is one 256 MiB object (a sparse file: cheap to make), the smallest size that gets a
bar (`cli/_progress.MIN_BYTES`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcas.cli._progress import MIN_BYTES

# command line -> what its bar is called
BARS = {
    "get": (["get", "m", "-o", "placed.bin", "--link", "copy"], b"verifying and placing"),
    "path": (["path", "m"], b"verifying"),
    "verify --lock": (["verify", "--lock"], b"verifying"),
    "hash": (["hash", "big.bin"], b"hashing"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    proj = tmp_path_factory.mktemp("progress")
    with open(proj / "big.bin", "wb") as f:
        f.truncate(MIN_BYTES)
    env = {k: v for k, v in os.environ.items() if k != "CAS_NO_PROGRESS"}
    env.update(MODELCAS_HOME=str(proj / "store"), TERM="xterm", COLUMNS="100")
    add = ["add", "big.bin", "--name", "m", "--version", "v1"]
    r = subprocess.run(
        [sys.executable, "-m", "modelcas", *add],
        cwd=proj,
        env=env,
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    yield proj, env


def _on_a_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """Run cas with stdin, stdout and stderr on a pseudo-terminal; what the terminal got."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: cas, on the terminal
        # A new pseudo-terminal is 0x0; a real one has a size (tqdm draws nothing in 0 columns).
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "modelcas", *argv], env)
    shown = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:  # EIO: the child closed the terminal
            assert e.errno == errno.EIO
            break
        if not chunk:
            break
        shown += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown


@pytest.mark.parametrize("command", sorted(BARS))
def test_a_bar_on_a_terminal_and_none_when_piped(
    project: tuple[Path, dict[str, str]], command: str
) -> None:
    proj, env = project
    argv, name = BARS[command]
    (proj / "placed.bin").unlink(missing_ok=True)
    code, shown = _on_a_terminal(argv, proj, env)
    assert code == 0, shown
    assert name + b":" in shown and b"%|" in shown, shown  # tqdm: "name:  40%|####  | ..."
    (proj / "placed.bin").unlink(missing_ok=True)
    piped = subprocess.run(
        [sys.executable, "-m", "modelcas", *argv],
        cwd=proj,
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == b"", piped.stderr
    quiet, shown = _on_a_terminal(["-q", *argv], proj, env)
    assert quiet == 0 and name + b":" not in shown, shown
