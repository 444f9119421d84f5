"""Every odd input at every edge (issue 25): one line and exit 1 or 2, never a hang, a crash, a
leak or a lockfile no command can read.

One case per item of the issue, each held to the error contract of
``tests/test_cli_contract.py`` (its ``_check_contract``: exit 1 or 2, one line plus at most one
``hint:``, with ``--json`` one error document, nothing changed in the store or the project),
with no marker secret in any output, and finishing in seconds. Files that are not regular
files (FIFOs, devices, links to them) and ``models: []`` are also fed to every command that
reads a file, in that module's ``KINDS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelcas.digest import Digest
from modelcas.lockfile import LockedModel, LockedVersion, Lockfile
from modelcas.store import Store
from tests import test_cli_contract as contract
from tests.conftest import HUB_TOKEN
from tests.hubserver import HubServer
from tests.ociregistry import RawClient, Registry, have_registry
from tests.refs import ref_sha256
from tests.test_cli_contract import _cas, _check_contract, _snapshot

Project = tuple[Path, dict[str, str]]
project = contract.project  # the contract's project: a store with m@v1 pinned in cas.lock
MARKER = "MARKER-SECRET-7f3a9c"
# What a terminal acts on: ESC (a CSI that clears the screen), the one-byte CSI 0x9B, a
# right-to-left override, and the line separator YAML folds.
ESCAPES = ("\x1b", "\x9b", "\u202e", "\u2028")
MiB = 1 << 20


def _clean(r: subprocess.CompletedProcess[str]) -> None:
    """No secret and no terminal escape in anything the command printed."""
    for text in (r.stdout, r.stderr):
        assert MARKER not in text and HUB_TOKEN not in text, text
        for c in ESCAPES:
            assert c not in text, (c, text)


def _objects(store: Path) -> set[str]:
    return {o.digest.sha256 for o in Store(store).objects()} if store.exists() else set()


# -- things that are not regular files --------------------------------------------------------


def _special(kind: str, where: Path) -> Path:
    p = where / f"odd-{kind}.bin"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "fifo-link":
        os.mkfifo(where / "a-fifo")
        p.symlink_to(where / "a-fifo")
    else:
        p.symlink_to("/dev/zero")
    return p


SPECIAL = ("fifo", "fifo-link", "device-link")


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_source_that_is_not_a_regular_file_is_refused_never_waited_on(
    project: Project, tmp_path: Path, kind: str
) -> None:
    proj, env = project
    odd = _special(kind, proj)
    cases = [
        ["add", odd.name],
        ["add", odd.name, "--name", "m", "--version", "v2"],
        ["add", "--move", odd.name, "--name", "m", "--version", "v2"],
        ["publish", "m", "--version", "v2", "--to", "remote-dir", "--file", odd.name],
    ]
    for argv in cases:
        started = time.monotonic()
        r = _check_contract(argv, proj, env, tmp_path / "store")
        _clean(r)
        assert time.monotonic() - started < 30, argv
    # A bundle config naming it as a model, and a checksum file listing it.
    (proj / "odd.yml").write_text(f"seg:\n  model_path: {odd.name}\n")
    r = _check_contract(["bundle", "-i", "odd.yml", "-o", "x.zip"], proj, env, tmp_path / "store")
    assert "is not a file" in r.stderr
    # `cas hash --check` answers as `sha256sum -c` does: a line per file, then a warning.
    (proj / "odd.sha256").write_text(f"{'0' * 64}  {odd.name}\n")
    r = _cas(["hash", "--check", "odd.sha256"], proj, env)
    assert r.returncode == 1 and r.stdout == f"{odd.name}: FAILED open or read\n"
    assert r.stderr.splitlines()[0] == f"cas: {odd.name}: cannot read: not a regular file"


def test_a_gc_root_that_is_a_fifo_or_a_device_stops_gc_unread(
    project: Project, tmp_path: Path
) -> None:
    proj, env = project
    store = tmp_path / "store"
    for kind in SPECIAL:
        odd = _special(kind, tmp_path)
        record = store / "roots" / "planted.json"
        record.write_text(json.dumps({"path": str(odd), "kind": "lockfile", "registered": 0}))
        r = _check_contract(["gc"], proj, env, store)
        assert "nothing was deleted" in r.stderr
        record.unlink()
        (tmp_path / "a-fifo").unlink(missing_ok=True)
        odd.unlink()


@pytest.mark.parametrize("kind", SPECIAL)
def test_credential_files_that_are_fifos_or_devices_are_refused_unread(
    project: Project, tmp_path: Path, kind: str
) -> None:
    """The docker/podman credential files (read when a registry asks for a login) and the Hub
    token file (read by the Hub client when HF_TOKEN is not set)."""
    proj, env = project
    login = _Shouting(401, b"{}", {"WWW-Authenticate": 'Basic realm="lab"'})
    hub = _Shouting(404, b'{"error": "no"}', {})
    try:
        docker = tmp_path / "docker"
        docker.mkdir()
        odd = _special(kind, tmp_path)
        (docker / "config.json").symlink_to(odd)
        base = {k: v for k, v in env.items() if k not in ("HF_TOKEN", "REGISTRY_AUTH_FILE")}
        cases = [
            (["pull", f"oci://{login.host}/lab/m:v1", "--name", "m"],
             {**base, "DOCKER_CONFIG": str(docker)}),
            (["pull", f"oci://{login.host}/lab/m:v1", "--name", "m"],
             {**base, "DOCKER_CONFIG": str(tmp_path / "none"), "REGISTRY_AUTH_FILE": str(odd)}),
        ]  # fmt: skip
        hf_home = tmp_path / "hf-home"
        hf_home.mkdir()
        (hf_home / "token").symlink_to(odd)
        hub_env = {**base, "HF_ENDPOINT": f"http://{hub.host}", "HF_HOME": str(hf_home)}
        cases.append((["pull", "hf://lab/m@weights-v1", "--name", "m"], hub_env))
        for argv, run_env in cases:
            started = time.monotonic()
            r = _check_contract(argv, proj, run_env, tmp_path / "store")
            _clean(r)
            assert "not a regular file" in r.stderr, r.stderr
            assert time.monotonic() - started < 30
    finally:
        login.shutdown()
        hub.shutdown()


# -- the Hugging Face cache, with entries that are not regular files ----------------------------


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as server:
        yield server


def _hub_env(env: dict[str, str], hub: HubServer, tmp_path: Path) -> dict[str, str]:
    return {
        **env,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        # As root without reflinks (CI), giving to the HF cache is a copy and opt-in.
        **({"MODELCAS_HF_CACHE": "copy"} if os.geteuid() == 0 else {}),
    }


def _publish_to_hub(proj: Path, env: dict[str, str], data: bytes, version: str = "v1.0") -> None:
    (proj / "best.pt").write_bytes(data)
    (proj / "classes.json").write_text('{"0": "panel"}\n')
    r = _cas(
        ["publish", "det", "--version", version, "--repo", "lab/det", "--file", "best.pt",
         "--file", "classes.json"],
        proj, env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("kind", ["fifo", "device-link"])
def test_hf_cache_entries_that_are_fifos_or_devices_are_never_read(
    project: Project, hub: HubServer, tmp_path: Path, kind: str
) -> None:
    proj, env = project
    env = _hub_env(env, hub, tmp_path)
    _publish_to_hub(proj, env, bytes(range(256)) * 4096)
    fill = subprocess.run(
        [sys.executable, "-c", "from huggingface_hub import snapshot_download as s; "
         "print(s('lab/det', revision='weights-v1.0'))"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert fill.returncode == 0, fill.stderr
    snapshot = Path(fill.stdout.strip())
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    offline = {**env, "HF_HUB_OFFLINE": "1", "MODELCAS_HOME": str(tmp_path / "s1")}
    Store(tmp_path / "s1")
    # Every entry of the snapshot, then the tag's ref too, points at a FIFO or /dev/zero.
    ref = snapshot.parent.parent / "refs" / "weights-v1.0"
    for entries in ([*snapshot.iterdir()], [ref]):
        for entry in entries:
            entry.unlink()
            (tmp_path / f"odd-{entry.name}").mkdir()
            entry.symlink_to(_special(kind, tmp_path / f"odd-{entry.name}"))
        for as_json in (False, True):
            started = time.monotonic()
            r = _check_contract(
                ["pull", "hf://lab/det@weights-v1.0", "--name", "det"],
                consumer, offline, tmp_path / "s1", as_json=as_json,
            )  # fmt: skip
            _clean(r)
            assert time.monotonic() - started < 60
            assert ("Hugging Face cache" in r.stderr) or ("HF cache" in r.stderr), r.stderr
    # Online, the cache's odd entries are passed over and the files are downloaded.
    online = _cas(["pull", "hf://lab/det@weights-v1.0", "--name", "det"], consumer, env)
    assert online.returncode == 0, online.stderr
    _clean(online)
    lock = Lockfile.load(consumer / "cas.lock")
    assert set(lock.models["det"].versions["v1.0"].files) == {"best.pt", "classes.json"}


# -- a source that shrinks while it is read ---------------------------------------------------


def _truncate_while_read(proc: subprocess.Popen[str], ino: int, fd: int) -> bool:
    """Shrink the file (inode ``ino``, open here as ``fd``) once ``proc`` has read into it."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for n in os.listdir(f"/proc/{proc.pid}/fd"):
                if os.stat(f"/proc/{proc.pid}/fd/{n}").st_ino != ino:
                    continue
                info = Path(f"/proc/{proc.pid}/fdinfo/{n}").read_text()
                if int(info.split()[1]) > 0:  # "pos: N": the read is under way
                    os.ftruncate(fd, 4096)
                    return True
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize("mode", ["copy", "move", "present"])
def test_a_source_that_shrinks_while_read_is_refused_never_a_sigbus(
    project: Project, tmp_path: Path, mode: str
) -> None:
    """`present`: the store holds another object of the same size, so the source is hashed
    first (the path that mapped it, and died of SIGBUS when it shrank)."""
    proj, env = project
    store = tmp_path / "store"
    size = 96 * MiB
    if mode == "present":
        other = proj / "other.bin"
        with open(other, "wb") as f:
            f.truncate(size)
        assert _cas(["add", "other.bin"], proj, env).returncode == 0
    hits = 0
    for attempt in range(6):
        big = proj / "big.bin"
        big.write_bytes(os.urandom(MiB) * (size // MiB - 1) + attempt.to_bytes(1, "big") * MiB)
        before_objects, before_lock = _objects(store), (proj / "cas.lock").read_bytes()
        fd = os.open(big, os.O_RDWR)
        try:
            ino = os.fstat(fd).st_ino
            argv = ["add", "big.bin", "--name", "big", "--version", f"v{attempt + 1}"]
            if mode == "move":
                argv.insert(1, "--move")
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelcas", *argv],
                cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            cut = _truncate_while_read(proc, ino, fd)
            _, err = proc.communicate(timeout=120)
        finally:
            os.close(fd)
        assert proc.returncode in (0, 1), (proc.returncode, err)  # 135 would be SIGBUS
        assert "Traceback" not in err
        if proc.returncode == 1:
            hits += 1
            lines = err.strip().splitlines()
            assert len(lines) == 2 and "changed while it was" in lines[0], err
            assert ("given back" if mode == "move" else "nothing was stored") in lines[0]
            assert _objects(store) == before_objects
            assert (proj / "cas.lock").read_bytes() == before_lock
            assert big.stat().st_size == 4096, "a moved file is given back, as it now is"
        else:
            assert not cut or big.stat().st_size in (4096, size), err
        big.unlink(missing_ok=True)
        if hits >= 2:
            break
    assert hits, "the source was never cut while it was read"


def test_a_bundle_that_shrinks_while_it_is_verified_is_an_error_never_a_sigbus(
    project: Project, tmp_path: Path
) -> None:
    """`cas bundle verify` maps the bundle (a user's file) for speed; a bundle cut meanwhile
    is an error naming it (rust/mapped.rs), never exit 135."""
    proj, env = project
    (proj / "big.bin").write_bytes(os.urandom(64 * MiB))
    (proj / "big.yml").write_text("big:\n  model_path: big.bin\n")
    made = _cas(["bundle", "-i", "big.yml", "-o", "made.zip", "--no-auto-date"], proj, env)
    assert made.returncode == 0, made.stderr
    hits = 0
    for _ in range(6):
        bundle = proj / "v.zip"
        shutil.copyfile(proj / "made.zip", bundle)
        fd = os.open(bundle, os.O_RDWR)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelcas", "bundle", "verify", "v.zip"],
                cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            cut = False
            while proc.poll() is None and not cut:
                with contextlib.suppress(OSError):
                    if str(bundle) in Path(f"/proc/{proc.pid}/maps").read_text():
                        os.ftruncate(fd, 8 * MiB)
                        cut = True
                time.sleep(0.0002)
            _, err = proc.communicate(timeout=120)
        finally:
            os.close(fd)
        assert proc.returncode in (0, 1, 2), (proc.returncode, err)  # -7 or 135: SIGBUS
        assert "Traceback" not in err
        if cut and proc.returncode:
            hits += 1
            lines = err.strip().splitlines()
            assert 1 <= len(lines) <= 2 and "v.zip" in lines[0], err
            if "shrank" in lines[0]:
                break
    assert hits, "the bundle was never cut while it was mapped"


# -- gc never echoes a file that is not its own --------------------------------------------------

SHAPES = {
    "ini": f"[default]\naws_access_key_id = AKIA{MARKER}\naws_secret_access_key = {MARKER}\n",
    "shadow": f"root:$6${MARKER}$x:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
    "yaml": f"token: {MARKER}\nother: [1, 2\n",
    "yaml-key": f"{MARKER}: 1\nlock-version: 1\n",
    "json": json.dumps({"lock-version": 1, "models": {MARKER: {"versions": []}}}),
    "env": f"export API_KEY={MARKER}\n",
}


@pytest.mark.parametrize("root_kind", ["lockfile", "bundle"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_gc_never_prints_bytes_of_a_root_it_cannot_read(
    project: Project, tmp_path: Path, shape: str, root_kind: str
) -> None:
    proj, env = project
    store = tmp_path / "store"
    secret = tmp_path / "elsewhere" / f"secret-{shape}"
    secret.parent.mkdir()
    secret.write_text(SHAPES[shape])
    record = store / "roots" / "planted-by-someone.json"
    record.write_text(json.dumps({"path": str(secret), "kind": root_kind, "registered": 0}))
    for argv in (["gc"], ["gc", "--dry-run"], ["gc", "--grace", "0"]):
        for as_json in (False, True):
            r = _check_contract(argv, proj, env, store, as_json=as_json)
            _clean(r)
            assert str(secret) in r.stderr and "nothing was deleted" in r.stderr
    # What gc's hint suggests, run on that file: a lockfile error names places, not bytes
    # (the shapes that hide the secret in a key are keys a lockfile would report).
    if root_kind == "lockfile" and shape not in ("yaml-key", "json"):
        r = _check_contract(["--lock", str(secret), "lock", "check"], proj, env, store)
        _clean(r)


# -- names and versions no lockfile could hold ---------------------------------------------------

LONG = "a" + "b" * 1099
BREAKS = ("\u0085", "\u2028", "\u2029")


def _odd_pins() -> dict[str, list[str]]:
    cases = {
        "long name": ["add", "w.bin", "--name", LONG, "--version", "v2"],
        "long version": ["add", "w.bin", "--name", "m", "--version", "v1." + "0" * 1100],
        "long package": ["add", "w.bin", "--name", "m", "--version", "v2", "--package", LONG],
        "publish long version": [
            "publish",
            "m",
            "--version",
            "v1." + "0" * 1100,
            "--to",
            "remote-dir",
            "--file",
            "w.bin",
        ],
        "lock set long package": ["lock", "set", "m@v1", "--package", LONG],
        "escape in name": ["add", "w.bin", "--name", "m\x1b[2J", "--version", "v2"],
        # A name or version given to pull is checked before the remote is asked (a directory
        # remote made a catalog path of it: "File name too long", the whole name echoed).
        "pull long name": ["pull", "./remote-dir", "--name", LONG],
        "pull long version": ["pull", "./remote-dir", "--name", "m", "--version", "v" + LONG],
        "pull escape in name": ["pull", "./remote-dir", "--name", "m\x1b[2J"],
    }
    for c in BREAKS:
        code = f"U+{ord(c):04X}"
        cases[f"{code} in name"] = ["add", "w.bin", "--name", f"m{c}x", "--version", "v2"]
        cases[f"{code} in version"] = ["add", "w.bin", "--name", "m", "--version", f"v2{c}"]
        package = ["--package", f"a{c}b"]
        cases[f"{code} in package"] = ["add", "w.bin", "--name", "m", "--version", "v2", *package]
        cases[f"{code} in file name"] = ["add", f"w{c}.bin", "--name", "m", "--version", "v2"]
        cases[f"pull {code} in name"] = ["pull", "./remote-dir", "--name", f"m{c}x"]
    return cases


ODD_PINS = _odd_pins()


@pytest.mark.parametrize("case", sorted(ODD_PINS))
def test_names_no_lockfile_could_hold_are_refused_at_input(
    project: Project, tmp_path: Path, case: str
) -> None:
    proj, env = project
    for c in ("\u0085", "\u2028", "\u2029"):
        (proj / f"w{c}.bin").write_bytes(b"other weights")
    for as_json in (False, True):
        r = _check_contract(ODD_PINS[case], proj, env, tmp_path / "store", as_json=as_json)
        assert r.returncode == 2
        _clean(r)
        assert len(r.stderr.splitlines()[0]) < 400, "a long name is not echoed whole"
    # The lockfile is still readable by every command.
    assert _cas(["lock", "ls"], proj, env).returncode == 0


def test_a_long_name_in_a_weights_py_is_refused_before_any_fetch(
    project: Project, tmp_path: Path
) -> None:
    proj, env = project
    (proj / "weights.py").write_text(f'REGISTRY = {{"det": {{"v1.{"0" * 1100}": {{}}}}}}\n')
    r = _check_contract(["lock", "import", "weights.py"], proj, env, tmp_path / "store")
    _clean(r)


def test_the_writer_refuses_text_that_does_not_read_back(tmp_path: Path) -> None:
    """Validation happens at input; the writer still proves what it writes parses back."""
    lock = tmp_path / "cas.lock"
    Lockfile(package="before").save(lock)
    before = lock.read_bytes()
    d = Digest("0" * 64, 1)
    for version, fname in (("v1." + "0" * 1100, "w.bin"), ("v1", "w\u2028.bin"), ("v1", LONG)):
        bad = Lockfile.load(lock)
        bad.models["m"] = LockedModel(versions={version: LockedVersion({fname: d})}, latest=version)
        with pytest.raises(Exception, match="nothing was written"):
            bad.save()
        assert lock.read_bytes() == before
    # A source with any character round-trips: the writer escapes what YAML would fold.
    ok = Lockfile.load(lock)
    source = "/lab/share\u2028with\x85breaks\x7f\u202eand\x1b[2J"
    ok.models["m"] = LockedModel(versions={"v1": LockedVersion({"w.bin": d}, source=source)})
    ok.save()
    assert Lockfile.load(lock).models["m"].versions["v1"].source == source
    assert not any(c in lock.read_text() for c in ("\u2028", "\x85", "\x7f", "\x1b"))


def test_a_hand_made_lockfile_with_models_as_a_list_or_a_bad_package_is_an_error(
    project: Project, tmp_path: Path
) -> None:
    proj, env = project
    for text in (
        "lock-version: 1\nmodels: []\n",
        "lock-version: 1\nmodels:\n  m:\n    versions: []\n",
        'lock-version: 1\npackage: "not a distribution!"\nmodels: {}\n',
        f'lock-version: 1\npackage: "{LONG}"\nmodels: {{}}\n',
    ):
        (proj / "odd.lock").write_text(text)
        for argv in (["lock", "ls", "--lock", "odd.lock"], ["verify", "--lock", "odd.lock"]):
            _clean(_check_contract(argv, proj, env, tmp_path / "store"))


# -- OCI: what a registry says, in names and in error bodies ------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    if not have_registry():
        pytest.fail("docker-registry is not installed (.ci/run installs it)")
    with Registry(tmp_path / "registry") as r:
        yield r


def _push_with_filepath(registry: Registry, proj: Path, env: dict[str, str], path: str) -> str:
    """Publish m@v1 to the registry, then push its manifest again as tag `odd`, with the
    layer's file path annotation replaced: a registry can hold any text there."""
    r = _cas(["publish", "m", "--version", "v1", "--to", registry.url("lab/m"), "--file",
              "w.bin"], proj, env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    client = RawClient(registry.host)
    status, body = client.manifest("lab/m", "v1")
    assert status == 200
    manifest = json.loads(body)
    for layer in manifest["layers"]:
        for key in list(layer.get("annotations", {})):
            if key.endswith("filepath"):
                layer["annotations"][key] = path
    client.put_manifest("lab/m", "odd", manifest)
    return f"oci://{registry.host}/lab/m:odd"


@pytest.mark.parametrize(
    "path",
    ["x" * 5000, "w\u2028.bin", "w\x1b[2J\n.bin", "\u202egnp.exe", "w\x9b31m.bin"],
    ids=["5000 characters", "U+2028", "escape and newline", "bidi override", "C1 CSI"],
)
def test_a_registry_file_path_no_lockfile_could_hold_is_refused_before_download(
    project: Project, registry: Registry, tmp_path: Path, path: str
) -> None:
    proj, env = project
    ref = _push_with_filepath(registry, proj, env, path)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    fresh = {**env, "MODELCAS_HOME": str(tmp_path / "fresh")}
    Store(tmp_path / "fresh")
    for as_json in (False, True):
        r = _check_contract(
            ["pull", ref, "--name", "odd", "--version", "v1"], consumer, fresh,
            tmp_path / "fresh", as_json=as_json,
        )  # fmt: skip
        _clean(r)
        assert len(r.stderr.splitlines()[0]) < 600
    assert _objects(tmp_path / "fresh") == set(), "nothing was downloaded"
    assert not (consumer / "cas.lock").exists()
    # Fetched without pinning, the name is printed escaped.
    plain = _cas(["pull", ref, "--no-pin"], consumer, fresh)
    _clean(plain)


class _Shouting(ThreadingHTTPServer):
    """Answers every request with one status and a body full of terminal escapes."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.extra = status, body, headers
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                server = self.server
                assert isinstance(server, _Shouting)
                server.requests += 1
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                for k, v in server.extra.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(server.body)

            do_GET = do_HEAD = do_POST = do_PUT = _answer  # noqa: N815 (http.server's names)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


NASTY = "\x1b[2J\x1b]0;pwned\x07 gotcha\x9b31m \u202eevil\u2028next\nline"


@pytest.mark.parametrize("status", [404, 500])
def test_registry_and_hub_error_text_reaches_the_terminal_escaped(
    project: Project, tmp_path: Path, status: int
) -> None:
    proj, env = project
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": NASTY}]}).encode()
    registry = _Shouting(status, body, {})
    hub_body = json.dumps({"error": NASTY}).encode()
    hub = _Shouting(status, hub_body, {"X-Error-Message": NASTY.encode().hex()})
    try:
        hub_env = {**env, "HF_ENDPOINT": f"http://{hub.host}", "HF_HUB_ETAG_TIMEOUT": "2"}
        said: list[str] = []
        for argv, run_env in (
            (["pull", f"oci://{registry.host}/lab/m:v1", "--name", "m"], env),
            (["pull", "hf://lab/m@weights-v1", "--name", "m"], hub_env),
            (["publish", "m", "--version", "v2", "--repo", "lab/m", "--file", "w.bin"], hub_env),
        ):
            for as_json in (False, True):
                started = time.monotonic()
                r = _check_contract(argv, proj, run_env, tmp_path / "store", as_json=as_json)
                _clean(r)
                assert time.monotonic() - started < 60
                said.append(r.stderr)
        assert registry.requests and hub.requests
        if status == 500:  # the registry's error body is quoted in the error, escaped
            assert "\\x1b[2J\\x1b]0;pwned\\a gotcha\\x9b31m \\u202eevil" in "".join(said)
    finally:
        registry.shutdown()
        hub.shutdown()


# -- remotes that trickle or shout ---------------------------------------------------------------


def test_a_trickling_hub_ends_at_the_low_speed_limit_and_the_next_run_resumes(
    project: Project, hub: HubServer, tmp_path: Path
) -> None:
    proj, env = project
    env = _hub_env(env, hub, tmp_path)
    data = os.urandom(2 * MiB)
    _publish_to_hub(proj, env, data)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    fresh = tmp_path / "fresh"
    slow = {
        **env,
        "MODELCAS_HOME": str(fresh),
        "HF_HOME": str(tmp_path / "hf-elsewhere"),  # not from the HF cache: downloaded
        "MODELCAS_LOW_SPEED_LIMIT": "100000",
        "MODELCAS_LOW_SPEED_TIME": "1",
    }
    hub.slow(r"best\.pt", rate=5000)
    argv = ["pull", "hf://lab/det@weights-v1.0", "--name", "det"]
    for as_json in (False, True):
        started = time.monotonic()
        r = _cas([*argv, *(["--json"] if as_json else [])], consumer, slow)
        assert time.monotonic() - started < 30, "the limit ends a trickle in seconds"
        assert r.returncode in (1, 2), r.stderr
        lines = r.stderr.strip().splitlines()
        assert 1 <= len(lines) <= 2 and "low-speed limit" in lines[0], r.stderr
        if as_json:
            assert json.loads(r.stdout)["schema"] == "cas.error/1"
        _clean(r)
        assert _objects(fresh) <= {ref_sha256(b'{"0": "panel"}\n')}
        assert not (consumer / "cas.lock").exists()
    kept = list((fresh / "tmp").glob("resume-*.partial"))
    assert len(kept) == 1 and 0 < kept[0].stat().st_size < len(data)
    hub.clear_faults()
    mark = len(hub.log)
    done = _cas(argv, consumer, slow)
    assert done.returncode == 0, done.stderr
    assert Store(fresh).path(ref_sha256(data)).read_bytes() == data
    ranged = [e for e in hub.log[mark:] if "best.pt" in e.path and e.range]
    assert ranged and ranged[0].range != "bytes=0-", "the next run resumed"


def test_a_hub_answering_500_is_one_line_and_one_document_without_retry_logs(
    project: Project, hub: HubServer, tmp_path: Path
) -> None:
    proj, env = project
    env = _hub_env(env, hub, tmp_path)
    _publish_to_hub(proj, env, os.urandom(MiB))
    hub.fail(r".", times=None, status=500)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    fresh = {**env, "MODELCAS_HOME": str(tmp_path / "fresh"), "HF_HOME": str(tmp_path / "hf2")}
    Store(tmp_path / "fresh")
    for argv, where, store in (
        (["pull", "hf://lab/det@weights-v1.0", "--name", "det"], consumer, tmp_path / "fresh"),
        (["publish", "det", "--version", "v2.0", "--repo", "lab/det", "--file", "best.pt"], proj,
         tmp_path / "store"),
        (["update", "det"], proj, tmp_path / "store"),
    ):  # fmt: skip
        run_env = fresh if where == consumer else env
        r = _check_contract(argv, where, run_env, store, as_json=True)
        _clean(r)
        assert "Retrying" not in r.stderr and "HTTP Error" not in r.stderr.splitlines()[-1]
    # An audit reports a place that fails as a place that failed (exit 1, its own document).
    r = _cas(["verify", "--remote", "det@v1.0", "--json"], proj, env)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cas.verify/1" and not doc["ok"]
    assert "500" in json.dumps(doc["audits"]) and "Retrying" not in r.stderr
    _clean(r)


# -- what the server stored ---------------------------------------------------------------------


def test_read_back_refuses_to_tag_what_the_registry_storage_damaged(
    project: Project, registry: Registry, tmp_path: Path
) -> None:
    proj, env = project
    data = os.urandom(MiB)
    (proj / "best.pt").write_bytes(data)
    target = registry.url("lab/det")
    first = _cas(["publish", "det", "--version", "v1.0", "--file", "best.pt", "--to", target],
                 proj, env)  # fmt: skip
    assert first.returncode == 0, first.stderr
    blob = registry.blob_data(f"sha256:{ref_sha256(data)}")
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # the registry checked the digest on upload; its disk did not
    blob.write_bytes(bytes(raw))
    for as_json in (False, True):
        r = _check_contract(
            ["publish", "det", "--version", "v1.1", "--file", "best.pt", "--to", target,
             "--read-back"], proj, env, tmp_path / "store", as_json=as_json,
        )  # fmt: skip
        assert r.returncode == 1 and "no tag was created" in r.stderr, r.stderr
        _clean(r)
    status, _ = RawClient(registry.host).manifest("lab/det", "v1.1")
    assert status == 404, "no tag"


def test_read_back_refuses_to_tag_what_the_hub_misrecorded(
    project: Project, hub: HubServer, tmp_path: Path
) -> None:
    proj, env = project
    env = _hub_env(env, hub, tmp_path)
    _publish_to_hub(proj, env, os.urandom(MiB))
    hub.misrecord(r"best\.pt")
    (proj / "best.pt").write_bytes(os.urandom(MiB))
    assert _cas(["add", "best.pt"], proj, env).returncode == 0  # publish stores it first
    r = _check_contract(
        ["publish", "det", "--version", "v1.1", "--repo", "lab/det", "--file", "best.pt",
         "--read-back"], proj, env, tmp_path / "store",
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    _clean(r)
    refs = _cas(["update", "det", "--dry-run", "--json"], proj, env)
    newer = json.loads(refs.stdout)["models"][0]["newer"]
    assert "v1.1" not in [c["version"] for c in newer], "no tag"


# -- legacy git-lfs pointers ---------------------------------------------------------------------

POINTERS = {
    "git-lfs": "version https://git-lfs.github.com/spec/v1\n",
    "hawser": "version https://hawser.github.com/spec/v1\n",
    "git-media": "version http://git-media.io/v/2\n",
}


@pytest.mark.parametrize("spec", sorted(POINTERS))
def test_every_git_lfs_pointer_version_is_refused_where_weights_are_expected(
    project: Project, tmp_path: Path, spec: str
) -> None:
    proj, env = project
    pointer = proj / "best.pt"
    pointer.write_text(POINTERS[spec] + f"oid sha256:{'4' * 64}\nsize 12345\n")
    r = _check_contract(["add", "best.pt"], proj, env, tmp_path / "store")
    assert "git-lfs pointer" in r.stderr and "git lfs pull" in r.stderr
    (proj / "p.yml").write_text("seg:\n  model_path: best.pt\n")
    r = _check_contract(["bundle", "-i", "p.yml", "-o", "p.zip"], proj, env, tmp_path / "store")
    assert "git-lfs pointer" in r.stderr and "git lfs pull" in r.stderr.splitlines()[-1]
    # Stored on purpose, it is still no weights: a bundle or a loader refuses it.
    stored = _cas(["add", "best.pt", "--allow-lfs-pointer", "--name", "p", "--version", "v1"],
                  proj, env)  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    (proj / "q.yml").write_text("seg:\n  model_path: p@v1\n")
    r = _check_contract(["bundle", "-i", "q.yml", "-o", "q.zip"], proj, env, tmp_path / "store")
    assert "git-lfs pointer" in r.stderr and "git lfs pull" in r.stderr.splitlines()[-1]
    load = subprocess.run(
        [sys.executable, "-c", "import modelcas.torch as t; t.load_bytes('p@v1')"],
        cwd=proj, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert load.returncode != 0 and "git-lfs pointer" in load.stderr, load.stderr
    # Not a pointer: the same words further in, or another spec's URL.
    pointer.write_text("not a pointer\n" + POINTERS[spec])
    assert _cas(["add", "best.pt"], proj, env).returncode == 0


# -- a directory remote's gc, the package, lock import ----------------------------------------


def test_gc_of_a_directory_remote_keeps_what_its_catalog_names(
    project: Project, tmp_path: Path
) -> None:
    proj, env = project
    share = tmp_path / "share"
    pushed = _cas(["push", str(share)], proj, env)
    assert pushed.returncode == 0, pushed.stderr
    before = _snapshot(share / "objects")
    gc = _cas(["--store", str(share), "gc", "--grace", "0"], proj, env)
    assert gc.returncode == 0, gc.stderr
    assert "deleted 0 object(s)" in gc.stdout and _snapshot(share / "objects") == before
    other = tmp_path / "other"
    other.mkdir()
    fresh = {**env, "MODELCAS_HOME": str(tmp_path / "fresh")}
    pulled = _cas(["pull", str(share), "--name", "m", "--version", "v1"], other, fresh)
    assert pulled.returncode == 0, pulled.stderr
    # A catalog entry that cannot be read stops gc: it must not guess.
    (share / "catalog" / "m" / "v9.json").write_text(f"{{{MARKER}")
    r = _check_contract(["--store", str(share), "gc", "--grace", "0"], proj, env, share)
    assert "nothing was deleted" in r.stderr
    _clean(r)


def test_lock_import_prints_the_keys_of_weights_py_escaped(
    project: Project, hub: HubServer, tmp_path: Path
) -> None:
    _, env = project
    env = _hub_env(env, hub, tmp_path)
    data = os.urandom(MiB)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text('[project]\nname = "structflo-cser"\n')
    _publish_to_hub(pkg, env, data)
    sha = hashlib.sha256(data).hexdigest()
    (pkg / "weights.py").write_text(
        "REGISTRY = {'det': {'v1.0': {'repo_id': 'lab/det', 'filename': 'best.pt', "
        f"'revision': 'weights-v1.0', 'sha256': '{sha}', '\\x1b[2J\\x9b31m\\u202e': 1}}}}}}\n"
    )
    r = _cas(["lock", "import", "weights.py", "--lock", "imported.lock"], pkg, env)
    assert r.returncode == 0, r.stderr
    _clean(r)
    assert "not used: weights.py:1: REGISTRY.det.v1.0.\\x1b[2J\\x9b31m\\u202e" in r.stdout


def test_quote_escapes_what_a_terminal_acts_on_and_nothing_else() -> None:
    from modelcas.cli._common import one_line, quote

    assert quote("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert quote("\x9b\x85\x7f") == "\\x9b\\x85\\x7f"
    assert quote("\u202e\u2066\u2028") == "\\u202e\\u2066\\u2028"
    assert quote("tab\there\nnew") == "tab\\there\\nnew"
    assert quote("bytes \udcff") == "bytes \\xff"
    plain = "ünïcode 模型 naïve — “quoted” ✓ back\\slash"
    assert quote(plain) == plain
    assert one_line("first\nsecond\x1b[0m") == "first second\\x1b[0m"


# -- settings from the environment ------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf"])
def test_a_lock_timeout_that_is_not_a_number_of_seconds_is_refused(
    project: Project, tmp_path: Path, value: str
) -> None:
    # As MODELCAS_LOW_SPEED_TIME: a setting that is not a finite number of seconds >= 0 is one
    # line and exit 2 (never silently 60 s, never a wait without end), and nothing is moved.
    proj, env = project
    (proj / "mine.bin").write_bytes(b"mine")
    argv = ["add", "--move", "mine.bin", "--name", "m", "--version", "v2"]
    r = _check_contract(argv, proj, {**env, "MODELCAS_LOCK_TIMEOUT": value}, tmp_path / "store")
    assert r.returncode == 2 and "MODELCAS_LOCK_TIMEOUT" in r.stderr, r.stderr
    assert (proj / "mine.bin").read_bytes() == b"mine"


# -- JSON nested deeper than the parser's recursion ----------------------------------------------

DEEP = b"[" * 3000  # 3 KiB: within every size cap, deeper than json's recursion limit


def _deep_store_json(store: Path, proj: Path) -> list[str]:
    (store / "store.json").chmod(0o644)
    (store / "store.json").write_bytes(DEEP)
    return ["verify"]


def _deep_index(store: Path, proj: Path) -> list[str]:
    for rec in (p for p in (store / "index").rglob("*") if p.is_file()):
        rec.chmod(0o644)
        rec.write_bytes(DEEP)
    return ["verify", "--lock"]


def _deep_root(store: Path, proj: Path) -> list[str]:
    (store / "roots" / ("0" * 32 + ".json")).write_bytes(DEEP)
    return ["gc", "--dry-run"]


def _deep_lock_owner(store: Path, proj: Path) -> list[str]:
    (proj / "cas.lock.lock").write_bytes(DEEP)
    return ["lock", "set", "m@v1", "--latest"]


DEEP_CASES = {
    "store.json": _deep_store_json,
    "index record": _deep_index,
    "root record": _deep_root,
    "lockfile's lock": _deep_lock_owner,
}


@pytest.mark.parametrize("case", sorted(DEEP_CASES))
def test_json_nested_too_deeply_in_the_store_is_an_error_not_a_bug(
    project: Project, tmp_path: Path, case: str
) -> None:
    proj, env = project
    argv = DEEP_CASES[case](tmp_path / "store", proj)
    env = {**env, "MODELCAS_LOCK_TIMEOUT": "1"}
    if case == "index record":
        # A record is a cache of what the object's bytes say: verify re-hashes them.
        r = _cas(argv, proj, env)
        assert r.returncode == 0, r.stderr
    else:
        r = _check_contract(argv, proj, env, tmp_path / "store")
    assert "RecursionError" not in r.stderr and "bug" not in r.stderr, r.stderr


# -- a folder that cannot be listed -------------------------------------------------------------

# Root without the capabilities that let it read any folder, so that permissions apply to it as
# to any user (CI runs as root; a uid of 0 keeps reading what root owns, such as the checkout).
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_a_folder_that_cannot_be_listed_is_an_error_never_a_partial_version(
    project: Project, tmp_path: Path
) -> None:
    proj, env = project
    (proj / "model" / "sub").mkdir(parents=True)
    (proj / "model" / "config.json").write_text("{}")
    (proj / "model" / "sub" / "weights.bin").write_bytes(b"the weights")
    (proj / "model" / "sub").chmod(0)
    before = _snapshot(tmp_path / "store", proj)
    try:
        argv = ["add", "model", "--name", "m", "--version", "v2"]
        for as_json in ((), ("--json",)):
            r = subprocess.run(
                [*NO_DAC, sys.executable, "-m", "modelcas", *argv, *as_json],
                cwd=proj,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert r.returncode == 2, (r.stdout, r.stderr)
            assert r.stderr.splitlines() == ["cas: error: model/sub: Permission denied"], r.stderr
            if as_json:
                assert json.loads(r.stdout)["schema"] == "cas.error/1"
    finally:
        (proj / "model" / "sub").chmod(0o755)
    assert _snapshot(tmp_path / "store", proj) == before, "nothing pinned, nothing stored"


@pytest.mark.parametrize("field", ["model_type", "key"])
def test_a_bundle_member_name_no_file_system_takes_is_refused(
    project: Project, tmp_path: Path, field: str
) -> None:
    # A 300-character model type (or key) made a member that no `cas bundle extract` could
    # write ("File name too long"), after a bundle and its sidecar were written.
    proj, env = project
    long = "T" * 300
    key, mtype = (long, "UNet") if field == "key" else ("seg", long)
    (proj / "long.yml").write_text(f'"{key}":\n  model_path: w.bin\n  model_type: {mtype}\n')
    for as_json in (False, True):
        argv = ["bundle", "-i", "long.yml", "-o", "long.zip", "--no-auto-date"]
        r = _check_contract(argv, proj, env, tmp_path / "store", as_json=as_json)
        assert r.returncode == 2
        assert "more than a file name can be (255)" in r.stderr, r.stderr
    assert not list(proj.glob("long*.zip*"))


@pytest.mark.parametrize("kind", ["file", "fifo", "device-link"])
def test_a_store_path_that_is_not_a_directory_is_named_as_such(
    project: Project, tmp_path: Path, kind: str
) -> None:
    proj, env = project
    where = tmp_path / "odd"
    where.mkdir()
    if kind == "file":
        store = where / "a-file"
        store.write_bytes(b"not a store")
    else:
        store = _special(kind, where)
    for argv in (["ls"], ["store", "init"], ["add", "w.bin"]):
        r = _check_contract(["--store", str(store), *argv], proj, env, tmp_path / "store")
        assert r.returncode == 2
        first = r.stderr.splitlines()[0]
        assert first.startswith(f"cas: error: {store} is ") and "not a directory" in first, first
        assert "Errno" not in r.stderr, r.stderr


@pytest.mark.parametrize("kind", ["fifo", "device-link", "directory", "dangling-link"])
def test_a_nearest_cas_lock_that_is_not_a_file_is_named_never_passed_over(
    project: Project, tmp_path: Path, kind: str
) -> None:
    # The nearest cas.lock is the project's, whatever it is: passing over a FIFO or a folder
    # of that name to a parent's cas.lock would pin into, or check, another project's file.
    proj, env = project
    sub = proj / "sub"
    sub.mkdir()
    (sub / "w.bin").write_bytes(b"sub weights")
    odd = sub / "cas.lock"
    if kind == "directory":
        odd.mkdir()
    elif kind == "dangling-link":
        odd.symlink_to(sub / "nowhere.lock")
    else:
        _special(kind, sub).rename(odd)
    for argv in (
        ["lock", "ls"],
        ["verify", "--lock"],
        ["add", "w.bin", "--name", "s", "--version", "v1"],
    ):
        r = _check_contract(argv, sub, env, tmp_path / "store")
        assert r.returncode == 2, (argv, r.stdout)
        assert str(odd) in r.stderr and "parents" not in r.stderr, (argv, r.stderr)
