#!/usr/bin/env bash
# The demo command of the README: set everything up, then show real flows from this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
uv() { if type -P uv >/dev/null; then command uv "$@"; else python3 -m uv "$@"; fi; }
exec uv run --frozen python scripts/demo.py "$@"
