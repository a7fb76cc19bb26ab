"""hbctl: the admin client.  Talks to a running hbd over D-Bus.

Subcommands that only read configuration work without a daemon.
"""

from __future__ import annotations

import argparse
import sys

from hbd import __version__, configfiles
from hbd.cli import export_pacemaker


def _cmd_config(args: argparse.Namespace) -> int:
    config, problems = configfiles.load(args.config_dir, node_name=args.node)
    for problem in problems:
        print(problem, file=sys.stderr)
    if config is None:
        return 1
    print(configfiles.describe(config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hbctl", description="control a running hbd")
    parser.add_argument("--version", action="version", version=f"hbctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="check /etc/ha.d and print the effective cluster")
    config.add_argument("--config-dir", default=configfiles.DEFAULT_CONFIG_DIR)
    config.add_argument("--node", default=None)
    config.set_defaults(func=_cmd_config)
    export_pacemaker.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
