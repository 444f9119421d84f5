"""The CLI's one error contract, held against every command with generated bad inputs.

For a single bad input: exit 1 or 2 as the contract says, never a traceback, at most two lines
on stderr (the error and one `hint:`), and nothing changed in the store or the lockfile.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcas.store import Store

KINDS = ("missing", "empty", "random", "directory", "non-utf8", "deep-yaml")

# Commands that read the bad input as a lockfile, bundle, config or checksum file.
FILE_COMMANDS: dict[str, list[str]] = {
    "hash --check": ["hash", "--check", "{f}"],
    "verify --lock": ["verify", "--lock", "{f}"],
    "sync": ["sync", "--lock", "{f}"],
    "lock ls": ["lock", "ls", "--lock", "{f}"],
    "lock show": ["lock", "show", "m", "--lock", "{f}"],
    "lock rm": ["lock", "rm", "m@v1", "--lock", "{f}"],
    "lock check": ["lock", "check", "--offline", "--lock", "{f}"],
    "path": ["path", "m", "--lock", "{f}"],
    "get": ["get", "m", "-o", "out.bin", "--lock", "{f}"],
    "update": ["update", "m", "--lock", "{f}"],
    "push": ["push", "remote-dir", "--lock", "{f}"],
    "pull dir": ["pull", "{f}"],
    "add --name": ["--lock", "{f}", "add", "w.bin", "--name", "m", "--version", "v2"],
    "bundle create": ["bundle", "-i", "{f}", "-o", "out.zip"],
    "bundle ls": ["bundle", "ls", "{f}"],
    "bundle verify": ["bundle", "verify", "{f}"],
    "bundle extract": ["bundle", "extract", "{f}", "-d", "out"],
    "bundle add": ["bundle", "add", "{f}"],
    "sign key": ["sign", "m@v1", "--key", "{f}"],
    "sign lock": ["sign", "m@v1", "--key", "w.bin", "--lock", "{f}"],
    "verify public key": ["verify", "m@v1", "--public-key", "{f}"],
    "add --signature": [
        "add",
        "remote-dir",
        "--signature",
        "{f}",
        "--public-key",
        "{f}",
        "--name",
        "m",
        "--version",
        "v2",
    ],
    "trust add": ["trust", "add", "{f}"],
    "trust ls": ["trust", "ls", "--lock", "{f}"],
}

# One bad value each: out of range, malformed, or a remote that is not there.
BAD_VALUES: dict[str, list[str]] = {
    "gc negative grace": ["gc", "--grace", "-5"],
    "gc nan grace": ["gc", "--grace", "nan"],
    "gc word grace": ["gc", "--grace", "soon"],
    "hash unknown algo": ["hash", "--algo", "md5", "w.bin"],
    "add missing": ["add", "nope.bin"],
    "add version without name": ["add", "w.bin", "--version", "v1"],
    "add bad range": ["add", "w.bin", "--name", "m", "--version", "v9", "--requires", ">>1"],
    "add bad version": ["add", "w.bin", "--name", "m", "--version", "one"],
    "add bad name": ["add", "w.bin", "--name", "../m", "--version", "v9"],
    "move without pin": ["add", "--move", "w.bin"],
    "publish bad version": ["publish", "m", "--version", "one", "--repo", "a/b", "--file", "w.bin"],
    "publish unreachable hub": [
        "publish",
        "m",
        "--version",
        "v9",
        "--repo",
        "a/b",
        "--file",
        "w.bin",
    ],
    "pull unreachable hub": ["pull", "hf://a/b@weights-v1"],
    "pull no revision": ["pull", "hf://a/b"],
    "pull unknown scheme": ["pull", "ftp://x/y"],
    "pull no such share": ["pull", "/nonexistent/share"],
    "path unreachable hub": ["path", "hf://a/b@weights-v1"],
    "path bad address": ["path", "sha256:xyz"],
    "path unknown model": ["path", "nope"],
    "update bad range": ["update", "m", "--to", "garbage!"],
    "verify bad address": ["verify", "sha256:zz"],
    "lock rm without version": ["lock", "rm", "m"],
    "bundle bad compression": [
        "bundle",
        "-i",
        "cfg.yml",
        "-o",
        "x.zip",
        "--compression",
        "zstd:99",
    ],
    "bundle zero level": ["bundle", "-i", "cfg.yml", "-o", "x.zip", "--compression", "zstd:0"],
    "bundle deflate level": [
        "bundle",
        "-i",
        "cfg.yml",
        "-o",
        "x.zip",
        "--compression",
        "deflate:10",
    ],
    "store is a file": ["--store", "w.bin", "store", "info"],
    "sign keyless": ["sign", "m@v1"],
    "sign unknown version": ["sign", "m@v9", "--key", "w.bin"],
    "sign chain without certificate": [
        "sign",
        "m@v1",
        "--key",
        "w.bin",
        "--certificate-chain",
        "w.bin",
    ],
    "trust rm unknown": ["trust", "rm", "sha256:" + "0" * 64],
    "trust add certificate without root": ["trust", "add", "--certificate", "x@lab.example"],
    "verify public key two refs": ["verify", "m@v1", "m@v1", "--public-key", "w.bin"],
    "add signature without key": [
        "add",
        "remote-dir",
        "--signature",
        "w.bin",
        "--name",
        "m",
        "--version",
        "v2",
    ],
    "completion unknown shell": ["completion", "powershell"],
    "unknown command": ["frobnicate"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bad(kind: str, where: Path) -> Path:
    p = where / f"bad-{kind}"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(os.urandom(4096))
    elif kind == "directory":
        p.mkdir()
    elif kind == "non-utf8":
        p.write_bytes(b"lock-version: 1\nmodels:\n  \xff\xfe\xfa: {}\n")
    elif kind == "deep-yaml":
        p.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    return p


def _snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.exists():
                out[str(p)] = "dir"
    return out


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project with a store holding one pinned object, a valid cas.lock and a config."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "w.bin").write_bytes(b"some weights")
    (proj / "remote-dir").mkdir()
    (proj / "cfg.yml").write_text("seg:\n  model_path: w.bin\n")
    env = {
        **os.environ,
        "MODELCAS_HOME": str(tmp_path / "store"),
        "CAS_NO_PROGRESS": "1",
        "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_TOKEN": "hf_contract_token",
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    r = subprocess.run(
        [sys.executable, "-m", "modelcas", "add", "w.bin", "--name", "m", "--version", "v1"],
        cwd=proj,
        env=env,
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    Store(tmp_path / "store")
    yield proj, env


def _check_contract(
    argv: list[str], proj: Path, env: dict[str, str], store: Path, *, as_json: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``cas ARGV`` and hold it to the contract; ``as_json`` adds ``--json`` and also
    requires exactly one error document on stdout."""
    if as_json:
        argv = [*argv, "--json"]
    before = _snapshot(store, proj)
    r = subprocess.run(
        [sys.executable, "-m", "modelcas", *argv],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode in (1, 2), (argv, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, (argv, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, (argv, r.stderr)
    if len(lines) == 2:
        assert lines[1].lstrip().startswith("hint:"), (argv, r.stderr)
    if as_json:
        doc = json.loads(r.stdout)  # one document, nothing else
        assert doc["schema"] == "cas.error/1", (argv, doc)
        assert doc["exit_code"] == r.returncode, (argv, doc)
        assert doc["message"] and doc["message"] in lines[0], (argv, doc, lines)
        assert doc["hint"] == (lines[1].split("hint:", 1)[1].strip() if len(lines) == 2 else None)
    after = _snapshot(store, proj)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    # The store may have made its own directories on first use; nothing else may change.
    assert not {k for k in changed if after.get(k) != "dir"}, (argv, changed)
    return r


# Inputs that are not bad for that command: a new lockfile is created at a missing --lock, and
# an empty directory is a remote with nothing the lockfile still needs.
VALID = {("add --name", "missing"), ("pull dir", "directory")}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", sorted(FILE_COMMANDS))
def test_every_command_refuses_bad_files_by_the_contract(
    project: tuple[Path, dict[str, str]], tmp_path: Path, command: str, kind: str
) -> None:
    if (command, kind) in VALID:
        pytest.skip("not a bad input for this command")
    proj, env = project
    bad = _bad(kind, tmp_path)
    argv = [a.replace("{f}", str(bad)) for a in FILE_COMMANDS[command]]
    _check_contract(argv, proj, env, tmp_path / "store")


@pytest.mark.parametrize("command", sorted(FILE_COMMANDS))
def test_under_json_every_error_is_also_one_json_document(
    project: tuple[Path, dict[str, str]], tmp_path: Path, command: str
) -> None:
    proj, env = project
    bad = _bad("random", tmp_path)
    argv = [a.replace("{f}", str(bad)) for a in FILE_COMMANDS[command]]
    _check_contract(argv, proj, env, tmp_path / "store", as_json=True)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_every_bad_value_is_refused_by_the_contract(
    project: tuple[Path, dict[str, str]], tmp_path: Path, case: str, as_json: bool
) -> None:
    proj, env = project
    r = _check_contract(BAD_VALUES[case], proj, env, tmp_path / "store", as_json=as_json)
    if case == "pull no such share":
        assert "no such directory" in r.stderr and "push it there" not in r.stderr


def test_an_unexpected_error_is_one_line_and_the_traceback_needs_cas_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelcas import cli
    from modelcas.store import Store as RealStore

    def broken(self: RealStore) -> list[object]:
        raise RuntimeError("a bug\nspanning lines")

    monkeypatch.setattr(RealStore, "objects", broken)
    argv = ["--store", str(tmp_path / "s"), "ls"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "cas: error: ls: unexpected error: RuntimeError: a bug spanning lines",
        "  hint: this is a bug in modelcas; run again with CAS_DEBUG=1 for the traceback",
    ]
    monkeypatch.setenv("CAS_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(argv)


def test_global_options_go_before_or_after_the_command(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    proj, env = project
    other = tmp_path / "other-store"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelcas", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    lock = str(proj / "cas.lock")
    for argv in (
        ("lock", "ls", "--lock", lock),
        ("--lock", lock, "lock", "ls"),
        ("lock", "--lock", lock, "ls"),
    ):
        r = run(*argv)
        assert r.returncode == 0 and "m@v1" in r.stdout, (argv, r.stderr)
    for argv in (("ls", "--store", str(other)), ("--store", str(other), "ls")):
        assert run(*argv).returncode == 0
    assert (other / "store.json").exists()
    quiet = run("-q", "verify", "--lock", lock)
    assert quiet.returncode == 0 and quiet.stdout == ""
