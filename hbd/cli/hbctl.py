"""hbctl: the admin client.  Talks to a running hbd over D-Bus.

Subcommands that only read configuration work without a daemon.  The
cl_status subcommands (hbstatus, listnodes, nodestatus, listhblinks,
hblinkstatus, rscstatus) print exactly what Heartbeat's cl_status prints,
with its exit codes, so existing scripts keep working.

`status --watch` stays and redraws on every change (hbd/cli/watch.py);
`history` reads the cluster's events from the journal and needs no daemon
(hbd/cli/history.py).

Exit codes: 0 ok (also a watch ended by Ctrl-C); 1 refused or failed (Busy,
InvalidScope...; also the cl_status "no" answers: node or link down,
heartbeat stopped); 2 usage; 3 hbd not running or not reachable (also a
watch whose hbd went away); 4 not authorized (by polkit; for history: no
read access to the journal).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from hbd import __version__, configfiles
from hbd.bus import client
from hbd.cli import export_pacemaker, history, watch
from hbd.control import GroupInfo, Snapshot

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_AUTHORIZED = 0, 1, 2, 3, 4
_NOT_AUTHORIZED = {"NotAuthorized", "AccessDenied", "InteractiveAuthorizationRequired"}


def _cmd_config(args: argparse.Namespace) -> int:
    config, problems = configfiles.load(args.config_dir, node_name=args.node)
    for problem in problems:
        print(problem, file=sys.stderr)
    if config is None:
        return 1
    print(configfiles.describe(config))
    return 0


# --- output helpers ------------------------------------------------------------------


def _emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in (headers, *rows)]
    return "\n".join(lines)


def _nodes_json(snap: Snapshot) -> list[dict[str, Any]]:
    return [asdict(n) for n in snap.nodes]


def _links_json(snap: Snapshot) -> list[dict[str, Any]]:
    return [asdict(lk) for lk in snap.links]


def _groups_json(snap: Snapshot) -> list[dict[str, Any]]:
    return [asdict(g) for g in snap.groups]


def _nodes_table(snap: Snapshot) -> str:
    rows = [[n.name + (" (this node)" if n.local else ""), n.status,
             " ".join(f"{lk.link}:{lk.status}" for lk in snap.links if lk.node == n.name)]
            for n in snap.nodes]
    rows += [[f"{p.name} (ping node)", p.status, ""] for p in snap.ping_nodes]
    return _table(["NODE", "STATUS", "LINKS"], rows)


def _tracked_table(snap: Snapshot) -> str:
    rows = [[t.interface, t.state, " ".join(t.groups)] for t in snap.tracked_links]
    return _table(["TRACKED LINK", "STATE", "GROUPS"], rows)


def _links_table(snap: Snapshot) -> str:
    return _table(["NODE", "LINK", "STATUS"], [[lk.node, lk.link, lk.status] for lk in snap.links])


def _groups_table(snap: Snapshot) -> str:
    """One row per group; FAILS and LAST MONITOR once any group has health to show, and
    on the corosync stack each group's node order (last: it holds spaces)."""
    health = any(g.last_monitor or g.fail_count or g.unfit for g in snap.groups)
    order = dict(snap.placement)
    head = ["GROUP", "HOME", "OWNER", "STATE"]
    head += ["FAILS", "LAST MONITOR"] if health else []
    head += ["ORDER"] if snap.placement else []
    rows = []
    for g in snap.groups:
        row = [g.key, g.home, g.owner or "-", g.state]
        row += [str(g.fail_count), _monitor_text(g)] if health else []
        row += [" ".join(order.get(g.key, ()))] if snap.placement else []
        rows.append(row)
    unfit = [f"{g.key}: unfit here, kept running (nobody else can take it): {g.unfit}"
             if g.state == "running" else f"{g.key}: not on this node: {g.unfit}"
             for g in snap.groups if g.unfit]
    return "\n".join([_table(head, rows), *unfit])


def _monitor_text(group: GroupInfo) -> str:
    if not group.last_monitor:
        return "-"
    when = time.strftime("%H:%M:%S", time.localtime(group.last_monitor_at))
    return f"{group.last_monitor} at {when}"


def _stack_line(snap: Snapshot) -> str:
    """The corosync stack's quorum, e.g. `stack corosync: quorate, votes 3 of 5 (quorum 3)`."""
    return (f"stack {snap.stack}: {snap.quorum}, votes {snap.votes} of "
            f"{snap.expected_votes} (quorum {snap.quorum_votes})")


# --- commands that read state --------------------------------------------------------

Reader = Callable[[argparse.Namespace, client.State], int]


def status_json(state: client.State) -> dict[str, Any]:
    snap = state.snapshot
    return {"node_name": snap.node_name, "version": state.version,
            "resources_held": snap.resources_held, "nodes": _nodes_json(snap),
            "links": _links_json(snap), "groups": _groups_json(snap),
            "stack": snap.stack, "quorum": snap.quorum, "votes": snap.votes,
            "expected_votes": snap.expected_votes, "quorum_votes": snap.quorum_votes,
            "placement": {key: list(nodes) for key, nodes in snap.placement},
            "ping_nodes": [asdict(p) for p in snap.ping_nodes],
            "tracked_links": [asdict(t) for t in snap.tracked_links],
            "fence_device": snap.fence_device,
            "fencing": [asdict(f) for f in snap.fencing],
            "realtime": snap.realtime, "loop_lag": _loop_lag_json(snap)}


def status_text(state: client.State) -> str:
    """What `hbctl status` prints (also each screen of `hbctl status --watch`)."""
    snap = state.snapshot
    parts = [f"hbd {state.version} on {snap.node_name}: holding {snap.resources_held} resources"]
    if snap.stack != "heartbeat":
        parts.append(_stack_line(snap))
    parts += ["", _nodes_table(snap)]
    if snap.groups:
        parts += ["", _groups_table(snap)]
    if snap.tracked_links:
        parts += ["", _tracked_table(snap)]
    if snap.fence_device != "none" or snap.fencing:
        parts += ["", f"fence device: {snap.fence_device}"]
        if snap.fencing:
            parts.append(_table(["FENCING", "STATE", "DETAIL"],
                                [[f.node, f.state, f.detail] for f in snap.fencing]))
    if snap.realtime or snap.loop_lag:
        parts.append("")
        if snap.realtime:
            parts.append(f"realtime: {snap.realtime}")
        if snap.loop_lag:
            parts.append(_loop_lag_line(snap))
    return "\n".join(parts)


def _watch(args: argparse.Namespace) -> int:
    if args.json:
        return watch.run(lambda state: json.dumps(status_json(state)), json_lines=True)
    return watch.run(status_text)


def _status(args: argparse.Namespace, state: client.State) -> int:
    if args.json:
        _emit_json(status_json(state))
    else:
        print(status_text(state))
    return EXIT_OK


def _loop_lag_json(snap: Snapshot) -> dict[str, Any]:
    """JSON has no infinity: the last bucket's bound is null."""
    return {"max_s": snap.loop_lag_max,
            "buckets": [[None if math.isinf(b) else b, n] for b, n in snap.loop_lag]}


def _loop_lag_line(snap: Snapshot) -> str:
    """`loop lag: worst 3.1 ms; timer runs by lateness: <=0.5ms 1200, <=5ms 3`."""
    def bound(b: float) -> str:
        return "more" if math.isinf(b) else f"<={b * 1000:g}ms"

    seen = ", ".join(f"{bound(b)} {n}" for b, n in snap.loop_lag if n)
    return (f"loop lag: worst {snap.loop_lag_max * 1000:.1f} ms; timer runs by lateness: "
            f"{seen or 'none yet'}")


def _listing(json_of: Callable[[Snapshot], Any],
             table_of: Callable[[Snapshot], str]) -> Reader:
    def show(args: argparse.Namespace, state: client.State) -> int:
        if args.json:
            _emit_json(json_of(state.snapshot))
        else:
            print(table_of(state.snapshot))
        return EXIT_OK

    return show


def _node_statuses(snap: Snapshot) -> list[tuple[str, str, str]]:
    """(name, status, nodetype) for cluster nodes, then ping nodes, as cl_status lists them."""
    return ([(n.name, n.status, "normal") for n in snap.nodes]
            + [(p.name, p.status, "ping") for p in snap.ping_nodes])


def _find_node(snap: Snapshot, name: str) -> str | None:
    """The node's status, or None (and cl_status's complaint) for an unknown name."""
    status = next((st for n, st, _ in _node_statuses(snap) if n == name), None)
    if status is None:
        print("Error. May be due to incorrect node name", file=sys.stderr)
    return status


def _listnodes(args: argparse.Namespace, state: client.State) -> int:
    snap = state.snapshot
    wanted = {"ping"} if args.p else {"normal"} if args.n else {"normal", "ping"}
    nodes = [entry for entry in _node_statuses(snap) if entry[2] in wanted]
    if args.json:
        _emit_json([name for name, _, _ in nodes])
        return EXIT_OK
    if args.m:
        print("The nodes are as follow:")
    for name, status, nodetype in nodes:
        if args.v:
            print(f"\n{name}\t{status}\t(nodetype: {nodetype})")
            if nodetype == "normal":
                _print_links(snap, name, verbose=True, human=args.m)
        else:
            print(name)
    return EXIT_OK


def _nodestatus(args: argparse.Namespace, state: client.State) -> int:
    snap = state.snapshot
    status = _find_node(snap, args.node)
    if status is None:
        return EXIT_USAGE
    if args.json:
        _emit_json({"node": args.node, "status": status})
    elif args.m:
        print(f"The cluster node {args.node} is {status}")
    else:
        print(status)
    return EXIT_OK if status in ("active", "up", "ping") else EXIT_FAILED


def _print_links(snap: Snapshot, node: str, *, verbose: bool, human: bool) -> None:
    if human:
        print("\tthis node has the following heartbeat links:")
    for link in snap.links:
        if link.node == node:
            print(f"\t{link.link}\t{link.status}" if verbose else f"\t{link.link}")


def _listhblinks(args: argparse.Namespace, state: client.State) -> int:
    snap = state.snapshot
    if _find_node(snap, args.node) is None:
        return EXIT_USAGE
    if args.json:
        _emit_json([asdict(lk) for lk in snap.links if lk.node == args.node])
    else:
        _print_links(snap, args.node, verbose=args.v, human=args.m)
    return EXIT_OK


def _hblinkstatus(args: argparse.Namespace, state: client.State) -> int:
    snap = state.snapshot
    status = next((lk.status for lk in snap.links
                   if lk.node == args.node and lk.link == args.link), None)
    if status is None:
        print("Cannot get heartbeat link status: no such node or link", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _emit_json({"node": args.node, "link": args.link, "status": status})
    elif args.m:
        print(f"The node {args.node}'s heartbeat link {args.link} is {status}")
    else:
        print(status)
    return EXIT_OK if status == "up" else EXIT_FAILED


def _rscstatus(args: argparse.Namespace, state: client.State) -> int:
    held = state.snapshot.resources_held
    if args.json:
        _emit_json({"resources_held": held})
    elif args.m:
        print(f"This node is holding {held} resources.")
    else:
        print(held)
    return EXIT_OK


def _hbstatus(args: argparse.Namespace) -> int:
    """cl_status hbstatus: 0 and "running", or 1 and "stopped" (not 3: scripts test 0/1)."""
    try:
        state = client.read_state()
    except client.ClientError as err:
        if args.json:
            _emit_json({"running": False, "error": err.short, "message": err.message})
        else:
            print("Heartbeat is stopped on this machine.")
            if args.v:
                print(f"({err.message})")
        return EXIT_FAILED
    if args.json:
        _emit_json({"running": True, "version": state.version,
                    "node_name": state.snapshot.node_name})
    elif args.v:
        print(f"version:\t{state.version}" if not args.m else f"Heartbeat version {state.version}")
        print('managed by:\t"haresources"' if not args.m else
              'Resources controlled by "haresources"')
        _listnodes(argparse.Namespace(json=False, m=False, v=True, p=False, n=False), state)
    else:
        print("Heartbeat is running on this machine.")
    return EXIT_OK


# --- commands that change the cluster ----------------------------------------------


def _command(method: str, arg_name: str | None) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        call_args = [getattr(args, arg_name)] if arg_name else []
        interactive = not args.no_ask_password and sys.stdin.isatty()
        client.call(method, *call_args, interactive=interactive)
        if args.json:
            result = {"ok": True, "command": args.command}
            if arg_name:
                result[arg_name] = getattr(args, arg_name)
            _emit_json(result)
        return EXIT_OK

    return run


# --- dispatch ----------------------------------------------------------------------


def _exit_code(err: client.ClientError) -> int:
    if err.unreachable:
        return EXIT_UNREACHABLE
    if err.short in _NOT_AUTHORIZED:
        return EXIT_NOT_AUTHORIZED
    return EXIT_FAILED


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except client.ClientError as err:
            code = _exit_code(err)
            if args.json:
                _emit_json({"ok": False, "error": err.short, "name": err.name,
                            "message": err.message})
            else:
                hint = " (is hbd running?)" if code == EXIT_UNREACHABLE else ""
                print(f"hbctl: {err.short}: {err.message}{hint}", file=sys.stderr)
            return code

    return guarded


def _reading(show: Reader) -> Callable[[argparse.Namespace], int]:
    return _guarded(lambda args: show(args, client.read_state()))


def _add(sub: Any, parent: argparse.ArgumentParser, name: str, help_text: str,
         func: Callable[[argparse.Namespace], int], *, aliases: Sequence[str] = (),
         cl_status: str = "") -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, parents=[parent],
                                                     aliases=list(aliases))
    if "m" in cl_status:
        parser.add_argument("-m", action="store_true", help="human-readable (cl_status -m)")
    if "v" in cl_status:
        parser.add_argument("-v", action="store_true", help="verbose (cl_status -v)")
    parser.set_defaults(func=func, m=False, v=False)
    return parser


def _register_cluster_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    parser = _add(sub, common, "status", "the cluster as this node sees it",
                  _guarded(lambda args: _watch(args) if args.watch
                           else _status(args, client.read_state())))
    parser.add_argument("--watch", "-w", action="store_true",
                        help="stay and redraw on every change (Ctrl-C to quit)")
    _add(sub, common, "nodes", "cluster nodes and their status",
         _reading(_listing(_nodes_json, _nodes_table)))
    _add(sub, common, "links", "heartbeat links and their status",
         _reading(_listing(_links_json, _links_table)))
    _add(sub, common, "groups", "resource groups, their owner and state",
         _reading(_listing(_groups_json, _groups_table)))
    changing = argparse.ArgumentParser(add_help=False, parents=[common])
    changing.add_argument("--no-ask-password", action="store_true",
                          help="never let polkit ask for a password")
    scope_help = "all (default), local, foreign or failback"
    for name, method, aliases, text in (
            ("takeover", "Takeover", (), "take resources over (hb_takeover)"),
            ("release", "Release", ("standby",), "hand resources to the peer (hb_standby)")):
        parser = _add(sub, changing, name, text, _guarded(_command(method, "scope")),
                      aliases=aliases)
        parser.add_argument("scope", nargs="?", default="all", help=scope_help)
    _add(sub, changing, "reload", "re-read the configuration", _guarded(_command("Reload", None)))
    parser = _add(sub, changing, "cleanup", "forget a resource group's failures",
                  _guarded(_command("Cleanup", "group")))
    parser.add_argument("group", help="the group's key (first resource of its haresources line)")
    parser = _add(sub, changing, "fence", "fencing: confirm by hand that a lost node is down",
                  _guarded(_command("FenceConfirm", "node")))
    parser.add_argument("action", choices=["confirm"],
                        help="confirm: NODE is powered off; its groups start here unfenced")
    parser.add_argument("node", help="the lost node (as in ha.cf's node lines)")
    # cl_status compatible
    _add(sub, common, "hbstatus", "cl_status hbstatus: is hbd running here?", _hbstatus,
         cl_status="mv")
    parser = _add(sub, common, "listnodes", "cl_status listnodes", _reading(_listnodes),
                  cl_status="mv")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("-p", action="store_true", help="ping nodes only (cl_status -p)")
    only.add_argument("-n", action="store_true", help="normal (cluster) nodes only (cl_status -n)")
    parser = _add(sub, common, "nodestatus", "cl_status nodestatus NODE",
                  _reading(_nodestatus), cl_status="m")
    parser.add_argument("node")
    parser = _add(sub, common, "listhblinks", "cl_status listhblinks NODE",
                  _reading(_listhblinks), cl_status="mv")
    parser.add_argument("node")
    parser = _add(sub, common, "hblinkstatus", "cl_status hblinkstatus NODE LINK",
                  _reading(_hblinkstatus), cl_status="m")
    parser.add_argument("node")
    parser.add_argument("link")
    _add(sub, common, "rscstatus", "cl_status rscstatus", _reading(_rscstatus), cl_status="m")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbctl", description="control a running hbd",
        epilog="exit codes: 0 ok, 1 refused or failed, 2 usage, 3 hbd not reachable, "
               "4 not authorized")
    parser.add_argument("--version", action="version", version=f"hbctl {__version__}")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="check /etc/ha.d and print the effective cluster")
    config.add_argument("--config-dir", default=configfiles.DEFAULT_CONFIG_DIR)
    config.add_argument("--node", default=None)
    config.set_defaults(func=_cmd_config)
    export_pacemaker.register(sub)
    history.register(sub)
    _register_cluster_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `hbctl status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
