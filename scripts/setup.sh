#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine (run as root):
#   apt packages (clang, llvm, libbpf-dev, bpftool, iproute2, tshark, iperf3, ...),
#   uv + the project's Python environment (.venv), and the BPF object (build/mermin.bpf.o).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iputils-ping clang llvm libbpf-dev libbpf1 bpftool iproute2 tshark iperf3 tcpdump libcap2-bin make gcc libc6-dev linux-libc-dev)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer once, non-interactively
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
    echo "setup: installing uv" >&2
    python3 -m pip install -q uv 2>/dev/null || python3 -m pip install -q --break-system-packages uv
    command -v pyenv >/dev/null 2>&1 && pyenv rehash  # a pyenv Python needs a shim for `uv`
fi
# `python3 -m uv` works wherever pip put uv, even when its bin folder is not on PATH
uv() { if type -P uv >/dev/null; then command uv "$@"; else python3 -m uv "$@"; fi; }

uv sync --quiet --frozen 2>/dev/null || uv sync --quiet
make -s bpf
