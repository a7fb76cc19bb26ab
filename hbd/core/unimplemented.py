"""ha.cf directives of Heartbeat 3.0.6 that hbd accepts but does not act on.

Each is a warning naming the directive, its line and the reason below, so
nothing in an admin's ha.cf is ignored silently (see hacf.py).
"""

from __future__ import annotations

# Directives Heartbeat knows that hbd accepts but does not act on, and why.
NOT_IMPLEMENTED: dict[str, str] = {
    "watchdog": "hbd feeds systemd's watchdog (WatchdogSec=) "
    "instead of a watchdog device",
    "hbgenmethod": "hbd keeps its own generation number in its state directory",
    "use_logd": "hbd logs to the journal and syslog itself",
    "conn_logd_time": "hbd logs to the journal and syslog itself",
    "log_badpack": "hbd always counts bad packets and logs them rate-limited",
    "use_apphbd": "apphbd is not supported",
    "syslogmsgfmt": "hbd writes logfile lines in its own fixed format",
    "coredumps": "core dumps are systemd-coredump's business",
    "coreroot": "core dumps are systemd-coredump's business",
    "uuidfrom": "hbd keeps its node uuid in its state directory",
    "compression": "hbd never compresses messages (two-node clusters never need it)",
    "compression_threshold": "hbd never compresses messages",
    "traditional_compression": "hbd never compresses messages",
    "env": "hbd gives respawned clients a fixed environment",
    "memreserve": "not needed by hbd",
    "failfast": "its program is not started: hbd never reboots the machine when a client "
    "dies; run it as a systemd unit with FailureAction=reboot, or with respawn",
    "normalpoll": "not applicable to hbd",
    "crm_daemon_dir": "only meaningful with Pacemaker",
    "crmd_spawns_pengine": "only meaningful with Pacemaker",
    "record_config_changes": "only meaningful with Pacemaker",
    "record_pengine_inputs": "only meaningful with Pacemaker",
    "enable_config_writes": "only meaningful with Pacemaker",
    "quorum_server": "hbd has no quorum server; see cluster_stack corosync",
    "hbaping": "the hbaping medium is not supported",
    "rds": "the rds medium is not supported",
    "tipc": "the tipc medium is not supported",
}
