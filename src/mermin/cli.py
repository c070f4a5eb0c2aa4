"""`mermin` command line: run | replay | config check|defaults | diagnose | k8s manifests."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mermin import __version__
from mermin.errors import MerminError

__all__ = ["main"]

# subcommand -> module whose `run(args) -> int` implements it
_HANDLERS = {
    "run": "mermin.agent",
    "replay": "mermin.replay",
    "config": "mermin.config.commands",
    "diagnose": "mermin.diagnose",
    "k8s": "mermin.deploy",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mermin", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mermin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent on this node")
    run.add_argument("-c", "--config", help="config file (.hcl/.yaml); env MERMIN_CONFIG_PATH")
    run.add_argument("-a", "--auto-reload", action="store_true", default=None,
                     help="reload when the config file changes; env MERMIN_CONFIG_AUTO_RELOAD")
    run.add_argument("-l", "--log-level", help="trace|debug|info|warn|error; env MERMIN_LOG_LEVEL")

    replay = sub.add_parser("replay", help="run the datapath over a pcap/pcapng capture")
    replay.add_argument("file", help="capture file")
    replay.add_argument("-c", "--config", help="config file applied as for `mermin run`")
    replay.add_argument("--format", choices=("text", "json"), default="text")
    replay.add_argument("--no-export", action="store_true",
                        help="print only; do not start the exporters the config names")

    config = sub.add_parser("config", help="check a config file or print the defaults")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    config_sub.add_parser("defaults", help="print the full default config as HCL")

    diagnose = sub.add_parser("diagnose", help="check this node can run the agent")
    diagnose.add_argument("-c", "--config", help="config file (interface patterns, k8s)")
    diagnose.add_argument("--skip-attach", action="store_true", help="skip the test attach")

    k8s = sub.add_parser("k8s", help="Kubernetes deployment helpers")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True)
    manifests = k8s_sub.add_parser("manifests", help="print plain manifests (no Helm)")
    manifests.add_argument("--namespace", default="mermin")
    manifests.add_argument("--image", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        module = importlib.import_module(_HANDLERS[args.command])
        return int(module.run(args) or 0)
    except MerminError as exc:
        print(f"mermin: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
