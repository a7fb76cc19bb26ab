"""What Heartbeat's client API reports about ha.cf: parameters and `apiauth`.

`cl_status hbparameter -p NAME` asks the daemon for a directive's value.
Heartbeat 3.0.6 answers with the last value given in ha.cf for the
directives it records (config.c: Directives[], record_value), else that
directive's built-in default, and "3.0.6" for `hbversion`; other names get
no value.  `apiauth CLIENT uid=LIST gid=LIST` lines say who may sign on as
which API client; Heartbeat adds defaults for the well-known clients
(config.c: defserv[]), which an ha.cf line for the same client replaces.
"""

from __future__ import annotations

from collections.abc import Mapping

from hbd.core.config import ApiAuth

HEARTBEAT_VERSION = "3.0.6"  # what Heartbeat's tools expect `hbversion` to say

# Heartbeat's recorded directives and their defaults (None: no default).
RECORDED: Mapping[str, str | None] = {
    "cluster": "linux-ha", "hopfudge": "1", "keepalive": "1000ms", "deadtime": "30000ms",
    "deadping": None, "initdead": None, "warntime": None, "watchdog": None, "baud": "19200",
    "udpport": None, "logfacility": None, "logfile": None, "debugfile": None,
    "auto_failback": "legacy", "rtprio": None, "hbgenmethod": "file", "realtime": "true",
    "debug": None, "msgfmt": "classic", "use_logd": None, "conn_logd_time": "60",
    "log_badpack": "true", "syslogmsgfmt": "true", "coredumps": "true", "coreroot": None,
    "crm_daemon_dir": None, "crmd_spawns_pengine": None, "pacemaker": "false",
    "autojoin": "none", "uuidfrom": "file", "compression": "zlib",
    "compression_threshold": "2", "traditional_compression": "no",
    "max_rexmit_delay": "250", "record_config_changes": "on",
    "record_pengine_inputs": "on", "enable_config_writes": "on", "memreserve": "6500",
    "quorum_server": None,
}
ALIASES: Mapping[str, str] = {"crm": "pacemaker"}  # "crm" is the old name of "pacemaker"

# config.c defserv[]: (client, users, groups)
DEFAULT_APIAUTH: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("ipfail", ("hacluster",), ()),
    ("ccm", ("hacluster",), ()),
    ("ping", (), ("haclient",)),
    ("lha-snmpagent", ("root",), ()),
    ("anon", ("root",), ("haclient",)),
)
MAX_CLIENT_NAME = 31  # client_proc_t.client_id is 32 bytes


def parameters(values: Mapping[str, str]) -> dict[str, str]:
    """Every parameter the API reports, from ha.cf's last value per directive."""
    out = {name: default for name, default in RECORDED.items() if default is not None}
    for directive, value in values.items():
        name = ALIASES.get(directive, directive)
        if name in RECORDED:
            out[name] = value
    out["hbversion"] = HEARTBEAT_VERSION
    return out


def parse_apiauth(args: list[str], line: int = 0) -> ApiAuth | str:
    """`apiauth CLIENT [uid=a,b] [gid=c,d]` -> the entry, or an error message."""
    if not args:
        return "apiauth: needs 'apiauth CLIENT uid=USERS gid=GROUPS'"
    client, rest = args[0], args[1:]
    if len(client) > MAX_CLIENT_NAME:
        return f"apiauth: client name '{client}' is longer than {MAX_CLIENT_NAME} characters"
    users: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    for item in rest:
        key, sep, value = item.partition("=")
        names = tuple(n for n in value.split(",") if n)
        if key == "uid" and sep and users is None:
            users = names
        elif key == "gid" and sep and groups is None:
            groups = names
        elif key in ("uid", "gid") and sep:
            return f"apiauth: duplicate {key} list for client '{client}'"
        else:
            return f"apiauth: '{item}' is not uid=LIST or gid=LIST"
    if not users and not groups:
        return f"apiauth: client '{client}' needs a uid= or gid= list"
    return ApiAuth(client, users or (), groups or (), line)


def apiauth_table(lines: tuple[ApiAuth, ...]) -> dict[str, tuple[tuple[str, ...],
                                                                   tuple[str, ...]]]:
    """ha.cf's apiauth lines with Heartbeat's defaults for the clients they do not name."""
    table = {entry.client: (entry.users, entry.groups) for entry in lines}
    for client, users, groups in DEFAULT_APIAUTH:
        table.setdefault(client, (users, groups))
    return table
