"""Real-time scheduling and locked memory, as Heartbeat's `realtime on` gave them.

Heartbeat 3.0.6 (cluster-glue's cl_make_realtime, called by the master
control process and each read/write child) asks for SCHED_RR at `rtprio`
(default: the policy's lowest priority, 1), lifts RLIMIT_MEMLOCK when it may
and calls mlockall(MCL_CURRENT | MCL_FUTURE); its resource scripts are run
after cl_make_normaltime().  hbd does the same for the one thread that
carries heartbeats, the asyncio event loop (the main thread), with two
differences:

- SCHED_RESET_ON_FORK rides on the policy, so every process hbd starts runs
  at normal scheduling: resource agents, hooks, fence devices, respawned
  clients (asyncio subprocesses fork from the loop thread).  Memory locks are
  never inherited by a child (fork drops them, exec would anyway).
- hbd's own helper threads (the log drainer, the state writer, the default
  executor's: config reads, netlink lookups) run SCHED_RR at the same
  priority: those running are switched here, those started later switch
  themselves (`join_thread`, as RESET_ON_FORK starts them at normal
  priority).  At normal priority one of them preempted by any busy process
  while it holds the GIL would hold up the real-time loop behind it (priority
  inversion through the GIL).  They mostly wait (on I/O, without the GIL) and
  never run long; the log queue drops and counts rather than wait.
- MCL_ONFAULT (Linux 4.4): what is resident is locked at once and every
  other page the moment it is first touched, never paged out after.  Without
  it mlockall would fault in every page of every mapping: all of libpython
  and each extension library (+14 MB RSS measured, benchmarks/pauses.py),
  and with MCL_FUTURE each new thread's whole 8 MiB stack and 64 MiB malloc
  arena.  (VmLck counts the locked mappings' size, touched or not.)

A refusal (no CAP_SYS_NICE or CAP_IPC_LOCK, systemd's RestrictRealtime=, a
container, a cgroup without a real-time budget, RLIMIT_MEMLOCK) is one
warning line; the daemon carries on at normal priority.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
DEFAULT_RTPRIO = 1  # Heartbeat: priority <= 0 -> sched_get_priority_min(SCHED_RR)
_RR = os.SCHED_RR | os.SCHED_RESET_ON_FORK

_held = 0  # the SCHED_RR priority hbd's threads hold (0: normal scheduling)


@dataclass(frozen=True)
class RealtimeState:
    """What the loop thread got, for hbctl status, D-Bus and the log."""

    wanted: bool = False  # ha.cf realtime (on by default)
    priority: int = 0  # the SCHED_RR priority held, 0: normal scheduling
    memory_locked: bool = False
    refused: str = ""  # why not, when something was refused ("" otherwise)

    def text(self) -> str:
        """`SCHED_RR 1, memory locked`, `off (ha.cf realtime off)`, `refused: ...`."""
        if not self.wanted:
            return "off (ha.cf realtime off)"
        got = [f"SCHED_RR {self.priority}" if self.priority else "normal scheduling",
               "memory locked" if self.memory_locked else "memory not locked"]
        text = ", ".join(got)
        return f"{text} (refused: {self.refused})" if self.refused else text


def _libc() -> ctypes.CDLL:
    # the process's own symbols (libc is linked in): find_library would run ldconfig
    return ctypes.CDLL(None, use_errno=True)


def _mlockall(flags: int) -> int:
    """0 or the errno."""
    if _libc().mlockall(flags) == 0:
        return 0
    return ctypes.get_errno()


def _munlockall() -> None:
    _libc().munlockall()


def _lock_memory() -> str:
    """Lock what is mapped and what will be; "" or why not."""
    # Heartbeat lifts the limit when it can (root, or a raised hard limit)
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
    except (ValueError, OSError):
        pass
    err = _mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)
    if err == 22:  # EINVAL: a kernel before 4.4 has no MCL_ONFAULT
        err = _mlockall(MCL_CURRENT | MCL_FUTURE)
    if err == 0:
        return ""
    _munlockall()  # nothing half-locked stays behind
    hint = {1: "needs CAP_IPC_LOCK", 12: "RLIMIT_MEMLOCK too small (LimitMEMLOCK=)"}
    return f"mlockall: {os.strerror(err)} ({hint.get(err, 'refused')})"


def join_thread() -> None:
    """In a thread hbd starts: take the loop's real-time priority, if it has one."""
    if _held:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, _RR, os.sched_param(_held))


def _other_threads(policy: int, priority: int) -> None:
    """The process's threads besides the caller (the log drainer started before)."""
    me = threading.get_native_id()
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != me:
                with contextlib.suppress(OSError):  # it may just have ended
                    os.sched_setscheduler(int(tid), policy, os.sched_param(priority))


def _schedule(priority: int) -> str:
    """SCHED_RR at `priority` for the calling thread and hbd's others; "" or why not."""
    global _held
    try:
        os.sched_setscheduler(0, _RR, os.sched_param(priority))
    except OSError as err:
        return (f"SCHED_RR {priority}: {err.strerror} (needs CAP_SYS_NICE or LimitRTPRIO=, "
                "no RestrictRealtime=, and a real-time budget in the cgroup)")
    _held = priority
    _other_threads(_RR, priority)
    return ""


def _normal() -> None:
    """Back to SCHED_OTHER (realtime turned off by a reload)."""
    global _held
    _held = 0
    with contextlib.suppress(OSError):  # leaving real time needs no privilege
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    _other_threads(os.SCHED_OTHER, 0)
    _munlockall()


def apply(wanted: bool, rtprio: int | None, *,
          previous: RealtimeState | None = None) -> RealtimeState:
    """Put ha.cf's `realtime`/`rtprio` into effect for the calling thread (the loop's).

    Never raises: a refusal is logged once (one warning line) and reported in
    the returned state.  `previous` (a reload): nothing is done or logged when
    the settings did not change.
    """
    priority = rtprio if rtprio is not None else DEFAULT_RTPRIO
    if previous is not None and previous.wanted == wanted and (
            not wanted or previous.priority in (0, priority)):
        return previous
    if not wanted:
        if previous is not None and (previous.priority or previous.memory_locked):
            _normal()
            log.info("realtime off: normal scheduling, memory unlocked")
        return RealtimeState(wanted=False)
    sched_refused, lock_refused = _schedule(priority), _lock_memory()
    refused = [why for why in (sched_refused, lock_refused) if why]
    state = RealtimeState(wanted=True, priority=0 if sched_refused else priority,
                          memory_locked=not lock_refused, refused="; ".join(refused))
    if refused:
        log.warning("realtime refused by this system, hbd carries on with %s: %s",
                    state.text().split(" (refused")[0], state.refused)
    else:
        log.info("realtime: %s (children run at normal priority)", state.text())
    return state
