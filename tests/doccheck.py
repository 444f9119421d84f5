"""Docs as tests: run the ```console blocks of a markdown page and compare their output.

A console block holds commands, each on a line starting with ``$ `` (continued by a trailing
backslash), followed by the output they print, stdout and stderr together. A command that
exits non-zero ends its output with a line ``[exit N]``. A line ``...`` in the expected output
matches any number of lines. All the blocks of a page run in order in one bash session, in a
sandbox: ``HOME`` is ``<sandbox>/home`` and the session starts in ``$HOME``, so the page can
show the paths a reader would see (``/home/you/...``).

Before comparing, both sides are normalised: the sandbox's home becomes ``/home/you``, and the
values that differ on every run (Hub commit ids, clock times, durations, temporary names,
process ids) become placeholders. ``MODELCAS_DOCS_UPDATE=1`` writes the real output back into
the page instead of comparing: that is how the pages are produced.

The pages show the ports a reader would use (the local Hub on 8765, a registry on 5000). A test
never depends on a fixed port: :func:`run` moves each documented port to a free one in the
commands, and maps it back in the output, so the page is compared as written.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HOME = "/home/you"
# The ports the pages show: the local Hub, a registry, and a web server.
DOC_PORTS = (8765, 5000, 8080)
_FENCE = re.compile(r"^```console[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
_VOLATILE = [
    (re.compile(r"\b[0-9a-f]{40}\b"), "<commit>"),
    (re.compile(r'(\\?)"[0-9a-f]{8}-[0-9a-f]+\1"'), r'\1"<etag>\1"'),  # nginx's ETag: mtime-size
    (re.compile(r"(commit |weights-v[^ ]* at |at commit )[0-9a-f]{12}\b"), r"\1<commit>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9]+-[0-9a-f]{32}\b"), "<tmp>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?(\.\d+)?Z?\b"), "<time>"),
    (re.compile(r"\b\d+(\.\d+)? ?(s|ms|MiB/s|GiB/s)\b"), "<duration>"),
    (re.compile(r"\bpid \d+\b"), "pid <pid>"),
    (re.compile(r"\bkill \d+\b"), "kill <pid>"),
    (re.compile(r"\.[A-Za-z0-9_]{6}\.partial\b"), ".<random>.partial"),
    (re.compile(r"(quarantine/[0-9a-f]{64})\.[0-9a-f]{12}\b"), r"\1.<random>"),
    # A key made on the page (openssl) has a new fingerprint on every run (docs/signing.md).
    (re.compile(r"\b(key|root) sha256:[0-9a-f]{64}\b"), r"\1 sha256:<fingerprint>"),
    # ...and a signature names its key by model_signing's hint, the sha256 of the key's PEM.
    (re.compile(r"\b(PEM has sha256) [0-9a-f]{64}\b"), r"\1 <hint>"),
    (re.compile(r"[ \t]+$", re.MULTILINE), ""),
]


@dataclass
class Command:
    """One ``$`` command of a page and the output the page shows for it."""

    text: str
    expected: list[str]
    block: int  # which console block of the page


@dataclass
class Page:
    """A markdown page's console blocks, in order."""

    path: Path
    source: str
    commands: list[Command] = field(default_factory=list)


def parse(path: Path) -> Page:
    """The commands and expected outputs of every console block of ``path``."""
    source = path.read_text(encoding="utf-8")
    page = Page(path, source)
    for i, m in enumerate(_FENCE.finditer(source)):
        current: Command | None = None
        continuing = False
        for line in m.group(1).splitlines():
            if continuing and current is not None:
                current.text += "\n" + line
                continuing = line.endswith("\\")
            elif line.startswith("$ "):
                current = Command(line[2:], [], i)
                page.commands.append(current)
                continuing = line.endswith("\\")
            elif current is not None:
                current.expected.append(line)
    for c in page.commands:
        while c.expected and not c.expected[-1].strip():
            c.expected.pop()
    return page


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _port_pattern(port: int) -> re.Pattern[str]:
    # A port as a URL or config writes it (`:8765`) or as an option's value (`--port 8765`).
    return re.compile(rf"(?<=:){port}\b|(?<=--port ){port}\b")


def run(page: Page, sandbox: Path, env: dict[str, str], timeout: float = 900) -> list[list[str]]:
    """Run every command of ``page`` in one bash session; the output of each, as lines.

    Each documented port (:data:`DOC_PORTS`) runs on a free port instead, and is shown back
    as documented in the output.
    """
    ports = {doc: free_port() for doc in DOC_PORTS}
    home = sandbox / "home"
    home.mkdir(parents=True, exist_ok=True)
    marker = f"@@doccheck-{uuid.uuid4().hex}@@"
    script = [f'cd "{home}"']
    for c in page.commands:
        script.append(f"printf '\\n{marker} start\\n'")
        text = c.text
        for doc, real in ports.items():
            text = _port_pattern(doc).sub(str(real), text)
        script.append(f"{{\n{text}\n}} 2>&1 < /dev/null")
        script.append(f"printf '\\n{marker} exit %d\\n' $?")
    proc = subprocess.Popen(
        ["bash", "--norc", "--noprofile"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=home,
        env={**env, "HOME": str(home)},
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate("\n".join(script).encode(), timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)  # servers a page started in the background
    shown = out.decode("utf-8", "replace")
    for doc, real in ports.items():
        shown = _port_pattern(real).sub(str(doc), shown)
    return _split(shown, marker)


def _split(text: str, marker: str) -> list[list[str]]:
    outputs = []
    for chunk in text.split(f"\n{marker} start\n")[1:]:
        body, _, tail = chunk.rpartition(f"\n{marker} exit ")
        lines = body.splitlines()
        code = int(tail.split()[0])
        if code:
            lines.append(f"[exit {code}]")
        outputs.append(lines)
    return outputs


def normalise(lines: list[str], sandbox: Path) -> list[str]:
    """Both sides' lines with run-specific values replaced by placeholders."""
    text = "\n".join(lines).replace(str(sandbox / "home"), HOME)
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text.splitlines()


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, where a line ``...`` in ``expected`` matches any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and matches(expected[1:], actual[1:])


def update(page: Page, outputs: list[list[str]], sandbox: Path) -> str:
    """The page's source with each command's expected output replaced by the real one."""
    by_block: dict[int, list[str]] = {}
    for c, out in zip(page.commands, outputs, strict=True):
        shown = "\n".join(out).replace(str(sandbox / "home"), HOME).splitlines()
        by_block.setdefault(c.block, []).extend([f"$ {c.text}", *shown, *([""] if shown else [])])
    pieces, last = [], 0
    for i, m in enumerate(_FENCE.finditer(page.source)):
        pieces.append(page.source[last : m.start(1)])
        body = by_block.get(i, [])
        while body and not body[-1]:
            body.pop()
        pieces.append("\n".join(body) + "\n")
        last = m.end(1)
    pieces.append(page.source[last:])
    return "".join(pieces)
