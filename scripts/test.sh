#!/usr/bin/env bash
# The test command of the README: set everything up, lint, then run every test (as root:
# the eBPF and end-to-end tiers load programs into the real kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
uv() { if type -P uv >/dev/null; then command uv "$@"; else python3 -m uv "$@"; fi; }
uv run --frozen ruff check .
uv run --frozen pytest -q -p no:cacheprovider "$@"
