"""cl_status for machines without the heartbeat package: the same tool, in Python.

It speaks Heartbeat's client API (hbd.core.hbapi) on
/var/run/heartbeat/register, exactly as Debian's cl_status does, and prints
the same lines with the same exit codes (tools/cl_status.c): 0 ok, 1 a
"normal" failure (node or link dead, client offline, cannot sign on), 11 a
parameter error, 12 a timeout, 13 anything else.  It is served by hbd and
by Heartbeat alike.  Unlike Debian's binary it is not setgid haclient: users
other than root need to be in the haclient group (or an apiauth line).
"""

from __future__ import annotations

import contextlib
import getopt
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

from hbd.core.hbapi import FrameError, FrameReader, decode, encode

SOCKET = "/var/run/heartbeat/register"
OK, NORMAL_FAIL, PARAMETER_ERROR, TIMEOUT, UNKNOWN_ERROR = 0, 1, 11, 12, 13
DEFAULT_TIMEOUT = 5  # seconds, then exit 12, as cl_status's alarm()

HELP = """Usage: cl_status <sub-command> [<options>] [<parameters>]

Sub-commands:
clientstatus <node-name> <client-id> [<timeout>]
	Show the status of heartbeat clients.
hblinkstatus <node-name> <link-name>
	Show the status of a heartbeat link
hbstatus
	Indicate if heartbeat is running on the local system.
	Options:
		-v	verbose: also add "listnodes -v" output
listnodes [<option>]
	List the nodes in the cluster.
	Options:
		-p	list only 'ping' type nodes
		-n	list only 'normal' type nodes
		-v	verbose: also list type and status,
			then add "listhblinks -v" output
listhblinks <node-name>
	List the network interfaces used as hearbeat links.
	Options:
		-v	verbose: list link status as well
nodestatus <node-name>
	List the node status.
nodeweight <node-name>
	List the node weight.
nodesite <node-name>
	List the node site.
nodetype <node-name>
	List the nodes of a given type.
rscstatus
	Show the status of cluster resources.
hbparameter -p <parameter-name>
	Retrieve the value of a cluster parameter.
	As for the valid parameter names, please refer to the man page.
"""


class ApiError(Exception):
    """The daemon refused or did not answer."""


class Client:
    """A casual API client (its id is its pid), as client_lib.c's hb_api_signon."""

    def __init__(self, path: str = SOCKET) -> None:
        self.pid = str(os.getpid())
        self.node = os.uname().nodename.lower()
        self.deadtime = 0
        self.reason = ""
        self._frames = FrameReader()
        self._pending: list[dict[str, str]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

    def _send(self, reqtype: str, *fields: tuple[str, str]) -> None:
        self.sock.sendall(encode([("t", "hbapi-req"), ("reqtype", reqtype), ("dest", self.node),
                                  ("pid", self.pid), ("from_id", self.pid), *fields]))

    def _read(self) -> dict[str, str]:
        while not self._pending:
            data = self.sock.recv(4096)
            if not data:
                raise ApiError("heartbeat closed the connection")
            try:
                self._pending += [dict(decode(b)) for b in self._frames.feed(data)]
            except FrameError as err:
                raise ApiError(str(err)) from None
        return self._pending.pop(0)

    def signon(self) -> bool:
        self._send("signon", ("uid", str(os.geteuid())), ("gid", str(os.getegid())))
        reply = self._read()
        try:
            self.deadtime = int(reply.get("deadtime", "0"), 16)
        except ValueError:
            self.deadtime = 0
        self.reason = reply.get("info", "")
        return reply.get("result") == "OK"

    def ask(self, reqtype: str, *fields: tuple[str, str]) -> dict[str, str]:
        self._send(reqtype, *fields)
        reply = self._read()
        if reply.get("result") != "OK":
            raise ApiError(reply.get("info", "request failed"))
        return reply

    def walk(self, reqtype: str, *fields: tuple[str, str]) -> list[dict[str, str]]:
        """A list answer: rows until result=OK; client_lib keeps them newest first."""
        self._send(reqtype, *fields)
        rows = []
        while True:
            reply = self._read()
            if reply.get("result") not in ("OK", "ok/more"):
                raise ApiError(reply.get("info", "request failed"))
            rows.append(reply)
            if reply["result"] == "OK":
                return rows[::-1]

    def signoff(self) -> None:
        self._send("signoff")


def _err(message: str) -> None:
    print(f"cl_status: ERROR: {message}", file=sys.stderr)


def _options(argv: list[str], optstr: str) -> tuple[dict[str, str], list[str]] | None:
    try:
        opts, rest = getopt.gnu_getopt(argv, optstr)
    except getopt.GetoptError as err:
        print(f"cl_status: {err}", file=sys.stderr)
        return None
    return {k.lstrip("-"): v for k, v in opts}, rest


def _status_rc(value: str, good: tuple[str, ...]) -> int:
    return OK if value in good else NORMAL_FAIL


def _listhblinks(c: Client, host: str, verbose: bool, human: bool) -> int:
    try:
        rows = c.walk("iflist", ("node", host))
    except ApiError as err:
        _err(f"Cannot start heartbeat link interface walk. REASON: {err}")
        return UNKNOWN_ERROR
    if human:
        print("\tthis node has the following heartbeat links:")
    for row in rows:
        name = row.get("ifname", "")
        print(f"\t{name}\t{c.ask('ifstatus', ('node', host), ('ifname', name))['st']}"
              if verbose else f"\t{name}")
    return OK


def _listnodes(c: Client, normal: bool, ping: bool, verbose: bool, human: bool) -> int:
    try:
        rows = c.walk("nodelist")
    except ApiError as err:
        _err(f"Cannot start node walk. REASON: {err}")
        return UNKNOWN_ERROR
    if normal and ping:
        normal = ping = False
    if human:
        print("The nodes are as follow:")
    for row in rows:
        node, kind = row.get("node", ""), row.get("nodetype", "")
        if (normal and kind != "normal") or (ping and kind != "ping"):
            continue
        if verbose:
            print(f"\n{node}\t{row.get('st', '')}\t(nodetype: {kind})")
            _listhblinks(c, node, True, human)
        else:
            print(node)
    return OK


def _one_node(c: Client, args: list[str], human: bool, reqtype: str, field: str,
              human_text: Callable[[str, str], str]) -> tuple[int, str | None]:
    if len(args) < 1:
        print("Not enough parameters.", file=sys.stderr)
        return PARAMETER_ERROR, None
    try:
        value = c.ask(reqtype, ("node", args[0])).get(field, "")
    except ApiError:
        print("Error. May be due to incorrect node name", file=sys.stderr)
        return PARAMETER_ERROR, None
    print(human_text(args[0], value) if human else value)
    return OK, value


def run(c: Client | None, signed: bool, cmd: str, argv: list[str]) -> int:
    optstr = {"hbstatus": "mv", "listnodes": "mpnv", "listhblinks": "mv",
              "hbparameter": "mp:"}.get(cmd, "m")
    parsed = _options(argv, optstr)
    if parsed is None:
        return OK if cmd == "hbstatus" else PARAMETER_ERROR
    opts, args = parsed
    human = "m" in opts
    if cmd == "hbstatus":
        if c is None or not signed:
            if c is None or c.deadtime == 0:
                print("Heartbeat is stopped on this machine.")
                rc = NORMAL_FAIL
            else:
                print("Heartbeat is apparently running on this machine, "
                      "but refuses my connection")
                rc = OK
            if "v" in opts and c is not None and c.reason:
                print(f"({c.reason})")
            return rc
        if "v" not in opts:
            print("Heartbeat is running on this machine.")
            return OK
        version = c.ask("getparm", ("pname", "hbversion")).get("pvalue")
        pacemaker = c.ask("getparm", ("pname", "pacemaker")).get("pvalue", "false")
        enabled = pacemaker.lower() not in ("false", "no", "off", "0", "n")
        if human:
            print(f"Heartbeat version {version}" if version
                  else "Heartbeat is running on this machine.")
            print("Resources controlled by Pacemaker." if enabled
                  else 'Resources controlled by "haresources"')
        else:
            print(f"version:\t{version or 'unknown'}")
            print(f"managed by:\tpacemaker\t({pacemaker})" if enabled
                  else 'managed by:\t"haresources"')
        sys.stdout.flush()
        _listnodes(c, False, False, True, human)
        return OK
    assert c is not None
    if cmd == "listnodes":
        return _listnodes(c, "n" in opts, "p" in opts, "v" in opts, human)
    if cmd == "nodestatus":
        rc, value = _one_node(c, args, human, "nodestatus", "st",
                              lambda n, v: f"The cluster node {n} is {v}")
        return rc if value is None else _status_rc(value, ("active", "up", "ping"))
    if cmd == "nodetype":
        return _one_node(c, args, human, "nodetype", "nodetype",
                         lambda n, v: f"The node {n}'s type: {v}")[0]
    if cmd == "nodeweight":
        return _one_node(c, args, human, "nodeweight", "weight",
                         lambda n, v: f"The weight of the cluster node {n} is {v}")[0]
    if cmd == "nodesite":
        return _one_node(c, args, human, "nodesite", "site",
                         lambda n, v: f"The site of the cluster node {n} is {v}")[0]
    if cmd == "listhblinks":
        if not args:
            print("No enough parameter.", file=sys.stderr)
            return PARAMETER_ERROR
        return _listhblinks(c, args[0], "v" in opts, human)
    if cmd == "hblinkstatus":
        if len(args) < 2:
            print("No enough parameter.", file=sys.stderr)
            return PARAMETER_ERROR
        try:
            status = c.ask("ifstatus", ("node", args[0]), ("ifname", args[1]))["st"]
        except (ApiError, KeyError) as err:
            _err(f"Cannot get heartbeat link {args[1]}'s status. REASON: {err}")
            return UNKNOWN_ERROR
        print(f"The node {args[0]}'s heartbeat link {args[1]} is {status}" if human
              else status)
        return _status_rc(status, ("up",))
    if cmd == "clientstatus":
        if len(args) < 2:
            print("No enough parameter.", file=sys.stderr)
            return PARAMETER_ERROR
        try:
            status = c.ask("clientstatus", ("node", args[0]), ("cn", args[1]))["cs"]
        except (ApiError, KeyError) as err:
            _err(f"Cannot get heartbeat client {args[1]}'s status. REASON: {err}")
            return UNKNOWN_ERROR
        print(status)
        return {"online": OK, "offline": NORMAL_FAIL, "join": 2, "leave": 3}.get(
            status, UNKNOWN_ERROR)
    if cmd == "rscstatus":
        if c.ask("getparm", ("pname", "pacemaker")).get("pvalue", "false").lower() in (
                "true", "yes", "on", "1", "y", "respawn", "manual"):
            _err("Cannot get cluster resource status of a pacemaker cluster; try crm_mon")
            return NORMAL_FAIL
        held = c.ask("getrsc").get("rsc_hold", "")
        print(f"This node is holding {held} resources." if human else held)
        return OK
    # hbparameter
    if "p" not in opts:
        _err("parameter name required")
        return PARAMETER_ERROR
    value = c.ask("getparm", ("pname", opts["p"])).get("pvalue")
    if value is None:
        _err(f"Cannot get parameter {opts['p']}'s value")
        return NORMAL_FAIL
    print(f"Heartbeat parameter {opts['p']}'s value: {value}" if human else value)
    return OK


COMMANDS = ("hbstatus", "listnodes", "nodestatus", "nodeweight", "nodesite", "nodetype",
            "listhblinks", "hblinkstatus", "clientstatus", "rscstatus", "hbparameter")


def _timeout(signum: int, frame: object) -> NoReturn:
    sys.exit(TIMEOUT)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args == ["-h"]:
        print(HELP, end="")
        return OK
    cmd = args[0]
    if cmd not in COMMANDS:
        _err(f"{cmd}: invalid sub-command.")
        return PARAMETER_ERROR
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(DEFAULT_TIMEOUT)
    client: Client | None = None
    signed = False
    try:
        client = Client()
        signed = client.signon()
    except (OSError, ApiError):
        signed = False
    if not signed and cmd != "hbstatus":
        _err("Cannot signon with heartbeat. REASON: "
             + (client.reason if client is not None and client.reason else "no heartbeat"))
        return NORMAL_FAIL
    try:
        return run(client, signed, cmd, args[1:])
    except (OSError, ApiError) as err:
        _err(str(err))
        return UNKNOWN_ERROR
    finally:
        if client is not None:
            if signed:
                with contextlib.suppress(OSError):
                    client.signoff()
            client.sock.close()


if __name__ == "__main__":
    sys.exit(main())
