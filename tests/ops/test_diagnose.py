"""`mermin diagnose` and least privilege: the agent's kernel work under exactly the
capabilities the Helm chart grants (capsh), and clear messages when one is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.netns import Topology
from tests.k8s.apiserver import ApiServer, write_kubeconfig
from tests.ops.chart_helpers import container, render

from mermin import diagnose
from mermin.config import parse_config

REPO = Path(__file__).resolve().parents[2]
CURRENT_NETNS = 'discovery "instrument" {\n  netns = "current"\n  interfaces = ["lo"]\n}\n'


# --- pure logic ----------------------------------------------------------------------------------
def test_effective_caps_parses_capeff():
    status = "Name:\tx\nCapEff:\t000000c000001000\n"  # bits 12 (NET_ADMIN), 38, 39
    assert diagnose.effective_caps(status) == {"NET_ADMIN", "PERFMON", "BPF"}
    assert diagnose.effective_caps("CapEff:\t0000000000000000\n") == set()
    assert "SYS_ADMIN" in diagnose.effective_caps("CapEff:\t0000000000200000\n")


def test_missing_caps_rules():
    new = (6, 6, 0)
    assert diagnose.missing_caps({"BPF", "PERFMON", "NET_ADMIN"}, new) == []
    assert diagnose.missing_caps({"PERFMON", "NET_ADMIN"}, new) == ["BPF"]
    assert diagnose.missing_caps({"SYS_ADMIN", "NET_ADMIN"}, new) == []  # stands in
    assert diagnose.missing_caps({"BPF", "PERFMON"}, new) == ["NET_ADMIN"]
    assert diagnose.missing_caps({"BPF", "PERFMON", "NET_ADMIN"}, (5, 4, 0)) == [
        "SYS_ADMIN", "NET_ADMIN"]


def test_kernel_version_and_check():
    assert diagnose.kernel_version("6.18.44-fc-v657ls") == (6, 18, 44)
    assert diagnose.kernel_version("5.15.0-1051-aws") == (5, 15, 0)
    assert diagnose.check_kernel((5, 4, 0)).failed
    assert "no TCX" in diagnose.check_kernel((6, 1, 0)).detail
    assert diagnose.check_kernel((6, 6, 1)).status == "PASS"


def test_format_results():
    text = diagnose.format_results([
        diagnose.Result("kernel", "PASS", "6.6"),
        diagnose.Result("capabilities", "FAIL", "missing CAP_BPF", "grant CAP_BPF"),
        diagnose.Result("k8s api", "SKIP", "no cluster"),
    ])
    lines = text.splitlines()
    assert lines[0].startswith("PASS  kernel")
    assert lines[1].startswith("FAIL  capabilities  missing CAP_BPF")
    assert lines[2].strip() == "fix: grant CAP_BPF"
    assert lines[-1] == "1 check(s) failed"


def test_chart_grants_exactly_the_required_capabilities():
    """The chart's default capability set is what diagnose (and this test file) call enough."""
    caps = container(render())["securityContext"]["capabilities"]["add"]
    assert tuple(caps) == diagnose.REQUIRED_CAPS


# --- kubernetes API check against the API test server --------------------------------------------
def test_k8s_check_pass_and_unauthorized(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with ApiServer(token="good") as api:
        good = write_kubeconfig(tmp_path / "good.yaml", api.url, token="good")
        cfg = parse_config(
            f'discovery "informer" "k8s" {{\n  kubeconfig_path = "{good}"\n}}\n')
        result = diagnose.check_k8s(cfg)
        assert result.status == "PASS", result
        assert "can list all 12 kinds" in result.detail
        bad = write_kubeconfig(tmp_path / "bad.yaml", api.url, token="wrong")
        cfg = parse_config(f'discovery "informer" "k8s" {{\n  kubeconfig_path = "{bad}"\n}}\n')
        result = diagnose.check_k8s(cfg)
        assert result.failed and "not allowed to list" in result.detail and "(401)" in \
            result.detail
        assert "ClusterRole" in result.hint
    url = api.url  # the server is gone now
    gone = write_kubeconfig(tmp_path / "gone.yaml", url, token="good")
    cfg = parse_config(f'discovery "informer" "k8s" {{\n  kubeconfig_path = "{gone}"\n}}\n')
    result = diagnose.check_k8s(cfg, timeout=2.0)
    assert result.failed and "unreachable" in result.detail


def test_k8s_check_skips_without_credentials(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    assert diagnose.check_k8s(parse_config("")).status == "SKIP"


# --- real kernel ---------------------------------------------------------------------------------
def _run_diagnose(tmp_path: Path, config: str, drop: list[str] | None = None,
                  ) -> subprocess.CompletedProcess:
    cfg = tmp_path / "diag.hcl"
    cfg.write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    cmd = [sys.executable, "-m", "mermin.cli", "diagnose", "--config", str(cfg)]
    if drop is not None:
        capsh = shutil.which("capsh")
        if capsh is None:
            pytest.fail("capsh missing: install libcap2-bin (scripts/setup.sh does)")
        cmd = [capsh, f"--drop={','.join(drop)}", "--", "-c", " ".join(cmd)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO)


def _drop_all_but(keep: set[str]) -> list[str]:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    names = diagnose.CAP_NAMES[: last + 1]
    return [f"cap_{n.lower()}" for n in names if n not in keep]


def _lines(out: str) -> dict[str, str]:
    return {line[6:].split()[0] if not line[6:].startswith("k8s") else "k8s api": line
            for line in out.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")}


def _assert_clean() -> None:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert "mrmdg" not in links and "mrmdp" not in links
    assert not list(Path("/sys/fs/bpf").glob("mermin-diagnose-*"))


@pytest.mark.privileged
def test_diagnose_full_privileges(require_root, bpf_object, tmp_path: Path):
    result = _run_diagnose(tmp_path, CURRENT_NETNS)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result.stdout)
    for name in ("kernel", "btf", "capabilities", "bpffs", "netns", "interfaces", "load",
                 "attach"):
        assert lines[name].startswith("PASS"), lines[name]
    assert "interfaces    1 of" in lines["interfaces"] and lines["interfaces"].endswith(": lo")
    assert lines["k8s api"].startswith("SKIP")
    _assert_clean()


@pytest.mark.privileged
def test_least_privilege_chart_capabilities_suffice(require_root, bpf_object, tmp_path: Path):
    """Load, pin, verify, TCX probe and attach/detach work with only BPF, PERFMON, NET_ADMIN."""
    result = _run_diagnose(tmp_path, CURRENT_NETNS,
                           drop=_drop_all_but(set(diagnose.REQUIRED_CAPS)))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result.stdout)
    assert lines["capabilities"].endswith("have CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN")
    assert lines["load"].startswith("PASS") and "pinned" in lines["load"]
    assert lines["attach"].startswith("PASS")
    _assert_clean()


@pytest.mark.privileged
@pytest.mark.parametrize("missing", ["BPF", "PERFMON", "NET_ADMIN"])
def test_missing_capability_is_named(require_root, bpf_object, tmp_path: Path, missing):
    keep = set(diagnose.REQUIRED_CAPS) - {missing}
    result = _run_diagnose(tmp_path, CURRENT_NETNS, drop=_drop_all_but(keep))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = _lines(result.stdout)
    assert lines["capabilities"].startswith(f"FAIL  capabilities  missing CAP_{missing}")
    assert lines["load"].startswith("FAIL") and f"missing CAP_{missing}" in lines["load"]
    assert f"fix: grant CAP_{missing}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    _assert_clean()


@pytest.mark.privileged
def test_diagnose_enters_a_namespace_and_matches_its_interfaces(require_root, bpf_object,
                                                                tmp_path: Path):
    with Topology() as topo:
        ns = topo.netns()
        outer = f"mopsh{os.urandom(3).hex()}"
        inner = f"mopsi{os.urandom(3).hex()}"
        topo.veth(name=outer, peer=inner, peer_ns=ns)
        config = (f'discovery "instrument" {{\n  netns = "/run/netns/{ns}"\n'
                  f'  interfaces = ["mopsi*"]\n}}\n')
        result = _run_diagnose(tmp_path, config)
    lines = _lines(result.stdout)
    assert lines["netns"].startswith(f"PASS  netns         can enter /run/netns/{ns}"), lines
    assert lines["interfaces"].endswith(f"1 of 2 match: {inner}"), lines["interfaces"]
    assert result.returncode == 0, result.stdout
    _assert_clean()


@pytest.mark.privileged
def test_diagnose_reports_unmatched_patterns(require_root, bpf_object, tmp_path: Path):
    config = 'discovery "instrument" {\n  netns = "current"\n  interfaces = ["nomatch*"]\n}\n'
    result = _run_diagnose(tmp_path, config)
    assert result.returncode == 1
    line = _lines(result.stdout)["interfaces"]
    assert line.startswith("FAIL") and "nomatch*" in line
