"""Help that teaches, tested: every example in every `--help` runs, in a sandbox that has the
files, pins, Hub repos, registry and shared folder it names.

Each command's examples run in order in a sandbox of their own, with the local Hub server and,
where an example names one, a local OCI registry. Placeholders a reader would replace are
mapped into the sandbox: `/lab/shared/cas`, `registry.lab:5000`, the completion folders.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcas.cli import build_parser
from tests.hubserver import HubServer
from tests.nginxserver import Nginx, have_nginx
from tests.ociregistry import Registry, have_registry
from tests.pkgs import fake_package

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = re.compile(r"^\s+((?:[A-Z_]+=\S+ )*(?:cas|eval) .*)$")
HUB_REPO = "sidxz/structflo-cser-detector"
EPOCH = "1766071842"  # the seed's 2025-12-18


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _examples() -> dict[str, list[str]]:
    found = {}
    for path, parser in _walk(build_parser(), ()):
        lines = []
        for line in (parser.epilog or "").splitlines():
            m = EXAMPLE.match(line)
            if m:
                lines.append(re.split(r"\s{2,}", m.group(1).strip())[0])
        found[" ".join(path) or "cas"] = lines
    return found


EXAMPLES = _examples()


def test_every_command_has_a_description_and_examples() -> None:
    missing = []
    for path, parser in _walk(build_parser(), ()):
        name = " ".join(path) or "cas"
        if not (parser.description or "").strip():
            missing.append(f"{name}: no description")
        if not EXAMPLES[name]:
            missing.append(f"{name}: no example")
    assert missing == []


def test_cas_help_lists_the_exit_codes() -> None:
    text = build_parser().format_help()
    assert "exit status: 0" in text and "1 a check found a problem" in text and "2 a usage" in text


# What each command's sandbox holds before its examples run.
NEEDS: dict[str, set[str]] = {
    "cas": {"pin-v1.0"},
    "hash": {"bundle-dated"},
    "ls": {"added"},
    "path": {"hub-v1.1", "added", "bundle-plain", "snapshot"},
    "get": {"hub-v1.1", "added", "snapshot"},
    "verify": {"pin-v1.0", "signed-v1.0", "hub-v1.1"},
    "add": {"keys", "signed-dir"},
    "sign": {"pin-v1.0", "keys"},
    "trust": {"pin-v1.0", "keys"},
    "trust add": {"pin-v1.0", "keys"},
    "trust ls": {"pin-v1.0", "keys", "trusted"},
    "trust rm": {"pin-v1.0", "keys", "trusted"},
    "sync": {"hub-v1.1"},
    "lock": {"hub-v1.1", "legacy"},
    "lock set": {"hub-v1.1"},
    "lock import": {"hub-v1.1", "legacy"},
    "lock ls": {"hub-v1.1"},
    "lock show": {"hub-v1.1"},
    "lock rm": {"hub-v1.1"},
    "lock check": {"hub-v1.1"},
    "publish": {"hub-v1.0", "registry", "keys"},
    "pull": {"hub-v1.1", "registry", "oci-v1.1", "lab", "web"},
    "push": {"pin-v1.0"},
    "update": {"hub-v1.1"},
    "outdated": {"hub-v1.1"},
    "bundle ls": {"bundle-dated"},
    "bundle verify": {"bundle-dated"},
    "bundle extract": {"bundle-dated"},
    "bundle add": {"bundle-dated"},
    # A store named by --store must exist for commands that only read it.
    "store": {"shared-store"},
    "store info": {"shared-store"},
    "gc": {"vanished"},
}


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    with HubServer(tmp_path / "hub") as hub:
        site = tmp_path / "site"
        fake_package(site, "0.2.0", "lock-version: 1\nmodels: {}\n")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MODELCAS_", "HF_"))},
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(site),
            "MODELCAS_HOME": str(tmp_path / "store"),
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_TOKEN": "hf_examples_token",
            "HF_HOME": str(tmp_path / "hf-home"),
            "CAS_NO_PROGRESS": "1",
            "SOURCE_DATE_EPOCH": EPOCH,
        }
        yield work, env


def _sh(cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _setup(work: Path, env: dict[str, str], needs: set[str], registry: str | None) -> None:
    (work / "best.pt").write_bytes(b"test")  # sha256:9f86d0..., the address the examples use
    (work / "pyproject.toml").write_text('[project]\nname = "structflo-cser"\nversion = "0.2.0"\n')
    files = {
        "runs/yolo11l/weights/best.pt": b"a retrained detector",
        "models/a.bin": b"a", "checkpoints/c.bin": b"c", "ckpt/step-1.pt": b"s1",
        "ckpt/step-2.pt": b"s2", "exp/last.pt": b"the last epoch", "model.pt": b"ner tagger",
    }  # fmt: skip
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    shutil.copytree(ROOT / "examples" / "weights", work / "weights")
    shutil.copytree(ROOT / "examples" / "bundle" / "metadata", work / "metadata")
    shutil.copy(ROOT / "examples" / "bundle" / "tracking_config.yml", work)
    config = (ROOT / "examples" / "bundle" / "config_model_bundle.yml").read_text()
    for name in ("config_model_bundle.yml", "config.yml"):
        (work / name).write_text(config.replace("../weights/", "weights/"))
    steps = []
    if "bundle-dated" in needs:
        steps.append("cas bundle -i config.yml -o model_collection.zip")
    if "bundle-plain" in needs:
        steps.append("cas bundle -i config.yml -o model_collection.zip --no-auto-date")
    steps.append("cas bundle -i config.yml -o bundle.zip --no-auto-date")
    if "added" in needs:
        steps.append("cas add best.pt")
    if "pin-v1.0" in needs:
        steps.append("cas add best.pt --name cser-detector --version v1.0 --requires '>=0.1,<1'")
    if needs & {"hub-v1.0", "hub-v1.1"}:
        steps.append(
            f"cas publish cser-detector --version v1.0 --repo {HUB_REPO} --file best.pt "
            "--requires '>=0.1,<1'"
        )
        steps.append("mkdir -p structflo/cser analysis && cp cas.lock structflo/cser/weights.lock")
    if "hub-v1.1" in needs:
        steps.append("cas publish cser-detector --version v1.1 --file runs/yolo11l/weights/best.pt")
        steps.append("cp cas.lock analysis/cas.lock")
    if "oci-v1.1" in needs:
        steps.append(
            f"cas publish cser-detector --version v1.1 --file runs/yolo11l/weights/best.pt "
            f"--to oci://{registry}/models/cser-detector"
        )
    if "lab" in needs:
        steps.append(f"cas push {work.parent / 'lab/shared/cas'}")
    if "shared-store" in needs:
        steps.append(f"cas --store {work.parent / 'lab/shared/cas'} store init --shared")
    if "pin-v1.0" in needs:
        steps.append("mkdir -p analysis && cp cas.lock analysis/cas.lock")
    if "snapshot" in needs:  # a version with several files: an HF snapshot's layout
        steps.append(
            "mkdir -p snap/tokenizer && echo '{}' > snap/config.json && echo '{}' > "
            "snap/model.safetensors.index.json && echo a > snap/model-00001-of-00002.safetensors"
            " && echo b > snap/model-00002-of-00002.safetensors && echo x > snap/tokenizer/v.txt"
            " && cas add snap --name tiny-bert --version v1"
        )
    if "legacy" in needs:  # the seed's hand-written registry, naming the published tag
        (work / "structflo" / "cser").mkdir(parents=True, exist_ok=True)
        (work / "structflo" / "cser" / "weights.py").write_text(
            f'REGISTRY = {{"cser-detector": {{"v1.0": {{"repo_id": "{HUB_REPO}", '
            '"filename": "best.pt", "revision": "weights-v1.0", "requires": ">=0.1,<1"}}}\n'
            'LATEST = {"cser-detector": "v1.0"}\n'
        )
    if needs & {"keys", "signed-v1.0", "signed-dir", "trusted"}:
        steps.append(
            "openssl ecparam -name prime256v1 -genkey -noout -out release.pem && "
            "openssl ec -in release.pem -pubout -out release.pub"
        )
    if "signed-v1.0" in needs:
        steps.append("cas sign cser-detector@v1.0 --key release.pem")
    if "signed-dir" in needs:
        steps.append(
            "mkdir -p signed && cp model.pt exp/last.pt signed/ && python -m model_signing "
            "sign key --private_key release.pem --signature model.sig signed"
        )
    if "trusted" in needs:
        steps.append("cas trust add release.pub && cas trust add release.pub --model cser-detector")
    if "vanished" in needs:  # a project pinned something of its own, then was deleted
        steps.append("mkdir old && cas add model.pt --name ner --version v1 --lock old/cas.lock")
        steps.append("rm -r old")
    for step in steps:
        r = _sh(step, work, env)
        assert r.returncode == 0, f"setup `{step}` failed:\n{r.stdout}{r.stderr}"


def _rewrite(cmd: str, work: Path, registry: str | None, web: str | None = None) -> str:
    cmd = cmd.replace("/lab/shared/cas", str(work.parent / "lab" / "shared" / "cas"))
    if web is not None:
        cmd = cmd.replace("https://zenodo.org/", f"{web}/files/")
    if registry is not None:
        cmd = re.sub(r"registry\.lab(\.org|:5000)", registry, cmd)
    cmd = cmd.replace('"${fpath[1]}/_cas"', '"$HOME/.zfunc/_cas"')
    return cmd.replace('device="cuda"', 'device="cpu"')


@pytest.mark.parametrize("command", sorted(c for c, ex in EXAMPLES.items() if ex))
def test_every_help_example_runs(
    sandbox: tuple[Path, dict[str, str]], tmp_path: Path, command: str
) -> None:
    work, env = sandbox
    needs = NEEDS.get(command, set())
    if "registry" in needs and not have_registry():
        pytest.fail("docker-registry is not installed (.ci/run installs it)")
    for d in (".local/share/bash-completion/completions", ".config/fish/completions", ".zfunc"):
        (work.parent / d).mkdir(parents=True, exist_ok=True)
    registry_ctx = Registry(tmp_path / "registry") if "registry" in needs else None
    if registry_ctx is not None:
        registry_ctx.start()
    web = Nginx(tmp_path / "nginx") if "web" in needs else None
    if web is not None:
        if not have_nginx():
            pytest.fail("nginx is not installed (.ci/run installs nginx-light)")
        web.start()
        web.put("records/1/files/best.pt", b"test")  # what the examples' --expect names
    try:
        host = registry_ctx.host if registry_ctx is not None else None
        _setup(work, env, needs, host)
        for example in EXAMPLES[command]:
            cmd = _rewrite(example, work, host, web.base if web is not None else None)
            r = _sh(f"set -o pipefail; {cmd}", work, env)
            assert r.returncode == 0, f"`{example}` exited {r.returncode}:\n{r.stdout}{r.stderr}"
            assert "Traceback" not in r.stdout + r.stderr
    finally:
        if registry_ctx is not None:
            registry_ctx.stop()
        if web is not None:
            web.stop()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_valid_shell(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.fail(f"{shell} is not installed (.ci/run installs it)")
    script = tmp_path / f"cas.{shell}"
    r = subprocess.run(
        [sys.executable, "-m", "modelcas", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
    )
    script.write_text(r.stdout)
    assert "publish" in r.stdout and ("--store" in r.stdout or "-l store" in r.stdout)
    check = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
