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

KINDS = (
    "missing",
    "empty",
    "random",
    "directory",
    "non-utf8",
    "deep-yaml",
    # Not regular files (issue 25): opening a FIFO to read waits for a writer, forever, and
    # /dev/zero never ends; each must be refused without being waited on or read whole.
    "fifo",
    "fifo-link",
    "device-link",
    # `models: []` is a mistake, not an empty lockfile.
    "models-list",
)

# Commands that read the bad input as a lockfile, bundle, config or checksum file.
FILE_COMMANDS: dict[str, list[str]] = {
    "hash --check": ["hash", "--check", "{f}"],
    "verify --lock": ["verify", "--lock", "{f}"],
    "sync": ["sync", "--lock", "{f}"],
    "lock ls": ["lock", "ls", "--lock", "{f}"],
    "lock show": ["lock", "show", "m", "--lock", "{f}"],
    "lock rm": ["lock", "rm", "m@v1", "--lock", "{f}"],
    "lock check": ["lock", "check", "--offline", "--lock", "{f}"],
    "lock set": ["lock", "set", "m@v1", "--latest", "--lock", "{f}"],
    "lock import": ["lock", "import", "{f}"],
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
    "lock set nothing": ["lock", "set", "m@v1"],
    "lock set bad range": ["lock", "set", "m@v1", "--requires", ">>1"],
    "add empty directory": ["add", "empty-dir"],
    "get dir no match": ["get", "m", "-o", "out/", "--include", "*.onnx"],
    "get globs without dir": ["get", "m", "-o", "x.bin", "--include", "*.bin"],
    "get empty dest": ["get", "m", "-o", ""],
    "bundle -o and -d": ["bundle", "-i", "cfg.yml", "-o", "x.zip", "-d", "out"],
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
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "fifo-link":
        os.mkfifo(where / "a-fifo")
        p.symlink_to(where / "a-fifo")
    elif kind == "device-link":
        p.symlink_to("/dev/zero")
    elif kind == "models-list":
        p.write_text("lock-version: 1\nmodels: []\n")
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
    (proj / "empty-dir").mkdir()
    (proj / "cfg.yml").write_text("seg:\n  model_path: w.bin\n")
    _signing_key(proj / "release.pem")
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


def _signing_key(path: Path) -> None:
    """An EC private key and its public half (``.pub``), as `openssl ecparam` makes them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


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
    assert "unexpected error" not in r.stderr, (argv, r.stderr)  # a bug, not a refusal
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if lines and lines[0].endswith(":"):
        # The documented exception: an error that gathers problems lists them, "  - " each.
        details = [line for line in lines[1:] if line.startswith("  - ")]
        assert details, (argv, r.stderr)
        lines = [lines[0], *(line for line in lines[1:] if not line.startswith("  - "))]
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

    RealStore(tmp_path / "s")
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
    assert run("store", "init", "--store", str(other)).returncode == 0
    for argv in (("ls", "--store", str(other)), ("--store", str(other), "ls")):
        assert run(*argv).returncode == 0
    assert (other / "store.json").exists()
    quiet = run("-q", "verify", "--lock", lock)
    assert quiet.returncode == 0 and quiet.stdout == ""
    # `cas verify --lock` takes an optional path; without one it checks the global --lock's.
    for argv in (("--lock", lock, "verify", "--lock"), ("verify", "--lock", "--lock", lock)):
        r = run(*argv)
        assert r.returncode == 0 and lock in r.stdout, (argv, r.stderr)


# -- --json on success and on failure, for every command ----------------------------------------

# Commands whose success needs a server: their success documents are checked in the remote
# tests (and `lock import` in tests/test_migrate.py); their failures below like every other's.
REMOTE = {"sync", "publish", "pull", "push", "update", "outdated", "lock import"}
BUNDLE = ["bundle", "-i", "cfg.yml", "-o", "b.zip", "--no-auto-date"]

# command -> (argv, the schema its success document names, a setup command or None)
JSON_SUCCESS: dict[str, tuple[list[str], str, list[str] | None]] = {
    "hash": (["hash", "w.bin"], "cas.hash/1", None),
    "add": (["add", "w.bin"], "cas.add/1", None),
    "ls": (["ls"], "cas.ls/1", None),
    "path": (["path", "m"], "cas.path/1", None),
    "get": (["get", "m", "-o", "out/w.bin"], "cas.get/1", None),
    "verify": (["verify", "--lock"], "cas.verify/1", None),
    "lock ls": (["lock", "ls"], "cas.lock-ls/1", None),
    "lock show": (["lock", "show", "m"], "cas.lock-show/1", None),
    "lock rm": (["lock", "rm", "m@v1"], "cas.lock-rm/1", None),
    "lock check": (["lock", "check", "--offline"], "cas.lock-check/1", None),
    "lock set": (["lock", "set", "m@v1", "--latest"], "cas.lock-set/1", None),
    "sign": (["sign", "m@v1", "--key", "release.pem"], "cas.sign/1", None),
    "trust add": (["trust", "add", "release.pub"], "cas.trust-add/1", None),
    "trust ls": (["trust", "ls"], "cas.trust-ls/1", ["trust", "add", "release.pub"]),
    "trust rm": (["trust", "rm", "release.pub"], "cas.trust-rm/1", ["trust", "add", "release.pub"]),
    "bundle": (BUNDLE, "cas.bundle/1", None),
    "bundle ls": (["bundle", "ls", "b.zip"], "cas.bundle-ls/1", BUNDLE),
    "bundle verify": (["bundle", "verify", "b.zip"], "cas.bundle-verify/1", BUNDLE),
    "bundle extract": (["bundle", "extract", "b.zip", "-d", "x"], "cas.bundle-extract/1", BUNDLE),
    "bundle add": (["bundle", "add", "b.zip"], "cas.bundle-add/1", BUNDLE),
    "gc": (["gc", "--dry-run"], "cas.gc/1", None),
    "store info": (["store", "info"], "cas.store-info/1", None),
    "store init": (["store", "init"], "cas.store-init/1", None),
    "completion": (["completion", "bash"], "cas.completion/1", None),
}

# One failing command line per command (every command, the remote ones included).
JSON_FAILURE: dict[str, list[str]] = {
    "hash": ["hash", "--algo", "md5", "w.bin"],
    "add": ["add", "nope.bin"],
    "ls": ["--store", "nowhere", "ls"],
    "path": ["path", "nope"],
    "get": ["get", "nope", "-o", "x.bin"],
    "verify": ["verify", "sha256:zz"],
    "sync": ["sync", "--lock", "nope.lock"],
    "lock ls": ["lock", "ls", "--lock", "nope.lock"],
    "lock show": ["lock", "show", "nope"],
    "lock rm": ["lock", "rm", "nope@v1"],
    "lock check": ["lock", "check", "--lock", "nope.lock"],
    "lock set": ["lock", "set", "nope@v1", "--latest"],
    "sign": ["sign", "m@v1", "--key", "w.bin"],
    "trust add": ["trust", "add", "w.bin"],
    "trust ls": ["trust", "ls", "--lock", "nope.lock"],
    "trust rm": ["trust", "rm", "release.pub"],
    "lock import": ["lock", "import", "nope/weights.py"],
    "publish": ["publish", "m", "--version", "one", "--repo", "a/b", "--file", "w.bin"],
    "pull": ["pull", "ftp://x/y"],
    "push": ["push", "remote-dir", "--lock", "nope.lock"],
    "update": ["update", "m", "--to", "garbage!"],
    "outdated": ["outdated", "m", "--to", "garbage!"],
    "bundle": ["bundle", "-i", "nope.yml", "-o", "x.zip"],
    "bundle ls": ["bundle", "ls", "nope.zip"],
    "bundle verify": ["bundle", "verify", "nope.zip"],
    "bundle extract": ["bundle", "extract", "nope.zip", "-d", "x"],
    "bundle add": ["bundle", "add", "nope.zip"],
    "gc": ["--store", "nowhere", "gc"],
    "store info": ["--store", "nowhere", "store", "info"],
    "store init": ["--store", "w.bin", "store", "init"],
    "completion": ["completion", "powershell"],
}


def _commands() -> set[str]:
    """Every command line a user can run: leaves of the parser, and `bundle` itself."""
    import argparse

    from modelcas.cli import build_parser

    found = set()

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if path and (not subs or not subs[0].required):
            found.add(" ".join(path))
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, (*path, name))

    walk(build_parser(), ())
    return found


def test_every_command_has_json_cases() -> None:
    assert _commands() == set(JSON_SUCCESS) | REMOTE
    assert _commands() == set(JSON_FAILURE)


def _cas(
    argv: list[str], cwd: Path, env: dict[str, str], *, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcas", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("command", sorted(JSON_SUCCESS))
def test_under_json_every_success_is_one_document_with_its_schema(
    project: tuple[Path, dict[str, str]], command: str
) -> None:
    proj, env = project
    argv, schema, setup = JSON_SUCCESS[command]
    if setup:
        assert _cas(setup, proj, env).returncode == 0
    r = _cas([*argv, "--json"], proj, env)
    assert r.returncode == 0, (argv, r.stdout, r.stderr)
    doc = json.loads(r.stdout)  # one document, nothing else on stdout
    assert isinstance(doc, dict) and doc["schema"] == schema, (argv, doc)


@pytest.mark.parametrize("command", sorted(JSON_FAILURE))
def test_under_json_every_command_fails_with_one_error_document(
    project: tuple[Path, dict[str, str]], tmp_path: Path, command: str
) -> None:
    proj, env = project
    r = _check_contract(JSON_FAILURE[command], proj, env, tmp_path / "store", as_json=True)
    assert json.loads(r.stdout)["command"] == f"cas {command}"  # "cas lock ls", not "cas lock"


@pytest.mark.parametrize(
    "argv",
    [["gc", "--grace", "-1"], ["lock"], ["get", "m", "-o", "x", "--link", "bogus"], ["add"]],
    ids=" ".join,
)
def test_a_usage_error_of_a_command_is_cas_error_like_every_error(
    project: tuple[Path, dict[str, str]], tmp_path: Path, argv: list[str]
) -> None:
    # One contract (README): `cas: error: ...`, the command named in the hint.
    proj, env = project
    r = _check_contract(argv, proj, env, tmp_path / "store")
    assert r.returncode == 2
    first, hint = r.stderr.splitlines()
    assert first.startswith("cas: error: "), r.stderr
    assert f"`cas {argv[0]} --help`" in hint, r.stderr


# -- did you mean ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "guess"),
    [
        (["verfy"], "did you mean `cas verify`?"),
        (["lock", "sohw", "m"], "did you mean `cas lock show`?"),
        (["verify", "--lokc"], "did you mean `--lock`?"),
        (["hash", "--algo", "blak3", "w.bin"], "did you mean `--algo blake3`?"),
        (["--jsno", "ls"], "did you mean `--json`?"),
    ],
)
def test_a_mistyped_command_or_option_gets_did_you_mean(
    project: tuple[Path, dict[str, str]], tmp_path: Path, argv: list[str], guess: str
) -> None:
    proj, env = project
    for as_json in (False, True):
        r = _check_contract(argv, proj, env, tmp_path / "store", as_json=as_json)
        assert r.returncode == 2
        assert guess in r.stderr.splitlines()[1], r.stderr
        if as_json:
            assert guess in json.loads(r.stdout)["hint"]
    nothing = _check_contract(["frobnicate"], proj, env, tmp_path / "store")
    assert "did you mean" not in nothing.stderr


# -- a named store that does not exist ----------------------------------------------------------

READ_ONLY = [
    ["ls"],
    ["verify"],
    ["verify", "--lock"],
    ["verify", "m@v1", "--public-key", "release.pub"],
    ["sign", "m@v1", "--key", "release.pem"],
    ["gc"],
    ["store", "info"],
    # Commands that read the store but write elsewhere, and a bare address (nothing to fetch).
    ["push", "remote-dir"],
    ["path", "sha256:" + hashlib.sha256(b"some weights").hexdigest()],
    ["get", "sha256:" + hashlib.sha256(b"some weights").hexdigest(), "-o", "out.bin"],
]


@pytest.mark.parametrize("argv", READ_ONLY, ids=" ".join)
def test_read_commands_on_a_missing_named_store_say_so_and_create_nothing(
    project: tuple[Path, dict[str, str]], tmp_path: Path, argv: list[str]
) -> None:
    proj, env = project
    typo = tmp_path / "typo" / "store"
    for how, extra in (("--store", ["--store", str(typo)]), ("MODELCAS_HOME", [])):
        run_env = {**env, "MODELCAS_HOME": str(typo)}
        r = _check_contract([*extra, *argv], proj, run_env, tmp_path / "store")
        assert r.returncode == 2
        lines = r.stderr.splitlines()
        assert lines[0] == f"cas: error: no store at {typo} (named by {how})", r.stderr
        assert "cas store init" in lines[1]
        assert not (tmp_path / "typo").exists()
    # `cas store init` makes it; then it is simply empty.
    init = _cas(["--store", str(typo), "store", "init"], proj, env)
    assert init.returncode == 0, init.stderr
    assert _cas(["--store", str(typo), "ls"], proj, env).returncode == 0


def test_auditing_a_remote_neither_needs_nor_makes_a_named_store(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    proj, env = project
    typo = tmp_path / "typo" / "store"
    assert _cas(["push", "./remote-dir"], proj, env).returncode == 0
    r = _cas(["--store", str(typo), "verify", "--remote", "m@v1"], proj, env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "typo").exists()


def test_the_default_store_on_a_fresh_machine_is_simply_empty(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCAS_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "fresh-cache")
    ls = _cas(["ls"], tmp_path, env)
    assert (ls.returncode, ls.stdout, ls.stderr) == (0, "", "")
    verify = _cas(["verify"], tmp_path, env)
    assert verify.returncode == 0 and "0 object(s)" in verify.stdout, verify.stderr


def test_verify_lock_with_no_pins_says_so_and_fails(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    proj, env = project
    assert _cas(["lock", "rm", "m@v1"], proj, env).returncode == 0
    r = _check_contract(["verify", "--lock"], proj, env, tmp_path / "store")
    assert r.returncode == 1
    assert "pins no file: nothing to verify" in r.stderr and "intact" not in r.stdout


def test_verify_lock_checks_the_lockfile_named_before_the_command(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    # `cas --lock other.lock verify --lock` is `cas verify --lock other.lock`, not the nearest.
    proj, env = project
    (proj / "other.lock").write_text("lock-version: 1\nmodels: {}\n")
    for argv in (
        ["--lock", "other.lock", "verify", "--lock"],
        ["--lock", "other.lock", "verify"],
        ["verify", "--lock", "other.lock"],
    ):
        r = _check_contract(argv, proj, env, tmp_path / "store")
        assert r.returncode == 1, (argv, r.stdout)
        assert "other.lock pins no file" in r.stderr, (argv, r.stderr)


# -- re-running is idempotent -------------------------------------------------------------------


def test_extract_again_into_the_same_files_succeeds_and_other_bytes_name_force(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    proj, env = project
    assert _cas(BUNDLE, proj, env).returncode == 0
    first = _cas(["bundle", "extract", "b.zip", "-d", "x"], proj, env)
    assert first.returncode == 0, first.stderr
    again = _cas(["bundle", "extract", "b.zip", "-d", "x", "--json"], proj, env)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["written"] == [] and len(doc["unchanged"]) == 4, doc  # model, metadata, 2 YAML
    text = _cas(["bundle", "extract", "b.zip", "-d", "x"], proj, env)
    assert "already there with the same bytes" in text.stdout
    # Part of it missing: only that is written.
    (proj / "x" / "config.yml").unlink()
    partly = json.loads(_cas(["bundle", "extract", "b.zip", "-d", "x", "--json"], proj, env).stdout)
    assert partly["written"] == [str(Path("x") / "config.yml")]
    # Other bytes: refused by the contract (nothing changed), naming --force; --force replaces.
    member = proj / "x" / "models" / "seg.bin"
    member.chmod(0o644)
    member.write_bytes(b"other bytes")
    r = _check_contract(["bundle", "extract", "b.zip", "-d", "x"], proj, env, tmp_path / "store")
    assert r.returncode == 2 and "--force" in r.stderr.splitlines()[1], r.stderr
    assert member.read_bytes() == b"other bytes"
    forced = _cas(["bundle", "extract", "b.zip", "-d", "x", "--force"], proj, env)
    assert forced.returncode == 0 and member.read_bytes() == b"some weights"


def test_an_error_document_to_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    # `cas --json update nosuch | head -1`: writing the cas.error/1 document to a reader that
    # went away raised BrokenPipeError inside the error handler, with two tracebacks.
    (tmp_path / "cas.lock").write_text("lock-version: 1\nmodels: {}\n")
    env = {**os.environ, "MODELCAS_HOME": str(tmp_path / "store"), "CAS_NO_PROGRESS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "modelcas", "--json", "lock", "show", "nosuch"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the reader is gone before the command writes anything
    err = p.stderr.read().decode()
    code = p.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert code == 1, err
