"""The Dockerfile, as far as it can be checked without a container engine.

Each build stage is replayed on this machine from exactly the files it COPYs (after
.dockerignore): the BPF stage's `make` runs in a directory holding only those files, and the
venv stage's `uv sync --frozen --no-dev --no-editable` builds a fresh environment from only its
files, whose `mermin --version` (the image's entry point) must work.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from mermin import __version__

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def stages() -> list[dict]:
    """Each stage: name, base, COPY lists, RUN commands."""
    result: list[dict] = []
    args = {}
    for word, rest in instructions():
        if word == "ARG" and not result:
            name, _, value = rest.partition("=")
            args[name] = value
        elif word == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            result.append({"name": name, "base": base, "copies": [], "runs": [], "env": {}})
        elif word == "COPY":
            tokens = shlex.split(rest)
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            source = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            result[-1]["copies"].append((source, paths[:-1], paths[-1]))
        elif word == "RUN":
            result[-1]["runs"].append(rest)
        elif word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                result[-1]["env"][key] = value
        elif word in ("ENTRYPOINT", "CMD"):
            result[-1][word.lower()] = rest
    return result


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str) -> bool:
    for pattern in dockerignore():
        pattern = pattern.removeprefix("**/")
        parts = Path(path).parts
        for i in range(len(parts)):
            if fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) or fnmatch.fnmatch(
                    parts[i], pattern):
                return True
    return False


def context_copy(stage: dict, dest: Path) -> None:
    """Copy what a stage's context COPYs into `dest`, honouring .dockerignore."""
    for source, paths, target in stage["copies"]:
        if source is not None:
            continue
        for rel in paths:
            src = REPO / rel.rstrip("/")
            into = dest / (rel if target.endswith("/") and src.is_dir() else src.name)
            if src.is_dir():
                shutil.copytree(src, into, ignore=lambda d, names: [
                    n for n in names if ignored(str(Path(d, n).relative_to(REPO)))])
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)


def by_name(name: str | None) -> dict:
    (stage,) = [s for s in stages() if s["name"] == name]
    return stage


def test_structure():
    all_stages = stages()
    assert [s["name"] for s in all_stages] == ["bpf", "venv", None]
    for stage in all_stages:
        assert stage["base"] == "debian:12-slim"
    runtime = all_stages[-1]
    assert runtime["entrypoint"] == '["mermin"]' and runtime["cmd"] == '["run"]'
    assert runtime["env"]["MERMIN_BPF_OBJECT"] == "/usr/lib/mermin/mermin.bpf.o"
    assert "/opt/mermin/venv/bin" in runtime["env"]["PATH"]
    names = {s["name"] for s in all_stages}
    for stage in all_stages:
        for source, _, _ in stage["copies"]:
            if source is None or source in names:
                continue
            assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", source), f"unpinned image {source}"


def test_every_copied_path_exists_and_is_in_the_context():
    for stage in stages():
        for source, paths, _ in stage["copies"]:
            if source is not None:
                continue
            for rel in paths:
                assert (REPO / rel).exists(), f"COPY {rel}: missing"
                assert not ignored(rel.rstrip("/")), f"COPY {rel}: excluded by .dockerignore"


def test_runtime_files_are_where_the_agent_looks():
    runtime = stages()[-1]
    targets = {target for _, _, target in runtime["copies"]}
    assert "/usr/lib/mermin/mermin.bpf.o" in targets  # README + loader fallback path
    assert "/usr/share/mermin/manifests/mermin.yaml" in targets  # mermin k8s manifests
    loader = REPO / "src" / "mermin" / "datapath" / "loader.py"
    if loader.exists():
        assert "/usr/lib/mermin/mermin.bpf.o" in loader.read_text()


def test_apt_packages_exist_in_debian_12():
    if shutil.which("apt-cache") is None:
        pytest.skip("apt-cache not available (not a Debian machine)")
    packages = set()
    for stage in stages():
        for run in stage["runs"]:
            for match in re.finditer(r"apt-get install ([^&]+)", run):
                packages.update(t for t in match.group(1).split() if not t.startswith("-"))
    assert {"clang", "libbpf-dev", "python3", "libbpf1"} <= packages
    out = subprocess.run(["apt-cache", "policy", *sorted(packages)], capture_output=True,
                         text=True, check=True).stdout
    for package in packages:
        block = out.split(f"{package}:\n", 1)
        assert len(block) == 2, f"{package} unknown to apt"
        assert "Candidate: (none)" not in block[1].split("\n", 2)[0], package


def test_bpf_stage_builds_from_its_copied_files_only(tmp_path: Path):
    stage = by_name("bpf")
    context_copy(stage, tmp_path)
    assert stage["runs"][-1] == "make build/mermin.bpf.o"
    result = subprocess.run(["make", "build/mermin.bpf.o"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "build" / "mermin.bpf.o").read_bytes()
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 247  # EM_BPF


def test_venv_stage_builds_and_entry_point_runs(tmp_path: Path):
    stage = by_name("venv")
    context_copy(stage, tmp_path)
    env = dict(os.environ, **{k: v for k, v in stage["env"].items()})
    venv = tmp_path / "venv"
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_LINK_MODE="hardlink", UV_COMPILE_BYTECODE="0",
               UV_OFFLINE="1")
    env.pop("VIRTUAL_ENV", None)
    sync = shlex.split(stage["runs"][-1])
    assert sync[:2] == ["uv", "sync"] and "--no-dev" in sync and "--frozen" in sync
    result = subprocess.run(sync, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr
    version = subprocess.run([str(venv / "bin" / "mermin"), "--version"], capture_output=True,
                             text=True, timeout=60, cwd="/")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"mermin {__version__}"
    # the installed package is a real copy (not an editable link back into the source tree)
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import mermin, sys; print(mermin.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd="/").stdout
    assert where.startswith(str(venv)), where
