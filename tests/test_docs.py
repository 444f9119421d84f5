"""Docs are tests: every console block in docs/ and the README runs, and its output must match.

Regenerate a page's outputs after a deliberate change with
``MODELCAS_DOCS_UPDATE=1 pytest tests/test_docs.py -k PAGE``, then read the diff.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import doccheck

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
SOURCE_DATE_EPOCH = "1766071842"  # 2025-12-18, the seed's bundle date
# Pages a reader types by hand, in a fresh shell, on any date: the harness gives them nothing
# the page does not set itself (the tutorial exports SOURCE_DATE_EPOCH where it needs it).
TYPED_BY_HAND = {"tutorial.md"}


@pytest.fixture(scope="module", autouse=True)
def documented_ports_are_taken() -> Iterator[None]:
    """Another program holds the ports the pages show while they run: they must not need them."""
    with contextlib.ExitStack() as stack:
        for port in doccheck.DOC_PORTS:
            s = stack.enter_context(socket.socket())
            try:
                s.bind(("127.0.0.1", port))
            except OSError as e:  # held already: the condition this fixture makes
                assert e.errno == errno.EADDRINUSE, e
                continue
            s.listen()
        yield


def _env(sandbox: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MODELCAS_", "HF_", "CAS_"))}
    return {
        **keep,
        "PATH": f"{venv_bin}{os.pathsep}{keep.get('PATH', '')}",
        "CAS_NO_PROGRESS": "1",
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "TZ": "UTC",
        "COLUMNS": "100",
        "XDG_CACHE_HOME": str(sandbox / "home" / ".cache"),
        # The pages show a reader in their own Hugging Face cache (a hard link there). CI runs
        # as root, where giving to the HF cache costs a copy and is opt-in (docs/store.md).
        **({"MODELCAS_HF_CACHE": "copy"} if os.geteuid() == 0 else {}),
    }


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_in_the_docs_prints_what_the_docs_show(page: Path, tmp_path: Path) -> None:
    parsed = doccheck.parse(page)
    if not parsed.commands:
        pytest.skip("no console blocks")
    sandbox = tmp_path / "sandbox"
    (sandbox / "home").mkdir(parents=True)
    # The reader's clone of modelcas, where the pages say it is.
    (sandbox / "home" / "modelcas").symlink_to(ROOT)
    env = _env(sandbox)
    if page.name in TYPED_BY_HAND:
        del env["SOURCE_DATE_EPOCH"]
    outputs = doccheck.run(parsed, sandbox, env)
    assert len(outputs) == len(parsed.commands), "a command ended the shell early"
    if os.environ.get("MODELCAS_DOCS_UPDATE"):
        page.write_text(doccheck.update(parsed, outputs, sandbox), encoding="utf-8")
        return
    failures = []
    for command, out in zip(parsed.commands, outputs, strict=True):
        want = doccheck.normalise(command.expected, sandbox)
        got = doccheck.normalise(out, sandbox)
        if not doccheck.matches(want, got):
            diff = "\n".join(difflib.unified_diff(want, got, "docs", "real", lineterm=""))
            failures.append(f"$ {command.text}\n{diff}")
    assert not failures, f"{page.name} drifted from the real output:\n\n" + "\n\n".join(failures)


def test_the_tour_runs_from_start_to_end(tmp_path: Path) -> None:
    """README command 1 runs `make demo`: setup, then this tour on the shipped examples."""
    env = _env(tmp_path)
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run(
        ["bash", str(ROOT / "examples" / "tour.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Tour complete" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert shutil.which("cas", path=env["PATH"]) is not None


def test_the_local_hub_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "hubserver.py"), "--port", "8765", "--root", "h"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert "127.0.0.1:8765" in r.stderr
    assert "--port" in r.stderr
