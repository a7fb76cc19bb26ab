"""Soak under load: two nodes holding a VIP while stress-ng loads the machine.

Two nodes in network namespaces on one bridge, n1 holding one VIP, each
implementation on its own (hbd, Heartbeat 3.0.6, keepalived), each timer
setting for `--minutes` while `stress-ng` runs on the host:

  CPU hogs   --cpu 2 x the CPU count
  memory     --vm 1 --vm-keep, sized from MemAvailable, inside a memory
             cgroup whose limit leaves a margin to the rest of the machine
             (no swap here: the hog and the I/O hog's page cache fill the
             cgroup, so the kernel reclaims, and an OOM kill can only ever
             pick a process of that cgroup)
  I/O hog    --hdd 1 (writes, reads and fsyncs a file in the lab's work dir)

Nothing should happen: every VIP move is a false failover.  Counted per
implementation and timer setting:

  vip moves      n1 losing the VIP or n2 gaining it (`ip -ts monitor address`
                 in both namespaces from before the load starts: kernel events,
                 not polls)
  both held      time both nodes held the VIP at once (split brain)
  dead           "node n1: is dead" declarations (keepalived: a node entering
                 MASTER or BACKUP after the start)
  late hb        "Late heartbeat" warnings (hbd and Heartbeat, warntime = 2 x
                 keepalive) and the worst interval they report
  loop lag       hbd's event loop's worst lag since start: the LoopLagMax
                 property on D-Bus (each hbd runs on its own private system bus,
                 tests/infra/privbus.py, as in production with D-Bus), read at
                 the end of the soak; an hbd without it (before hbd/looplag.py)
                 shows "-".  Its "event loop stalled ... N ms late" journal
                 lines are counted too (stalls beyond half a keepalive)
  sched          the daemons' scheduling policies (/proc/PID/stat), so the
                 table says what each ran with: Heartbeat `realtime on` as
                 shipped, keepalived as shipped, hbd with its defaults

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--timers 100ms,50ms]
        [--impls hbd,heartbeat,keepalived] [--mem-margin-gib 2] [--pause 0]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import cpu_seconds, installed_impls, save, table, tree
from hbd.bus.names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH
from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.kapeer import KeepalivedPeer, render_keepalived_conf
from tests.infra.netns import Lab, wait_for
from tests.infra.privbus import PrivateBus, PrivBusError
from tests.test_bus import install_hbd_files

VIP = "10.77.0.100"
MONITOR = re.compile(r"^\[(\S+)\] (Deleted )?\d+: \S+\s+inet (\d+\.\d+\.\d+\.\d+)/")
LATE = re.compile(r"Late heartbeat: Node (\S+): interval (\d+) ms")
DEAD = re.compile(r"node (\S+): is dead")
KA_STATE = re.compile(r"Entering (MASTER|BACKUP|FAULT) STATE")
# hbd/looplag.py's journal lines on a bad stall: "event loop stalled: hbd's timer ran
# 123 ms late ..." and "event loop stalled 3 times in the last minute, the worst 123 ms late"
LOOP_STALL = re.compile(r"event loop stalled(?: (\d+) times)?\D*?(\d+(?:\.\d+)?) ms late")
POLICIES = {0: "OTHER", 1: "FIFO", 2: "RR", 3: "BATCH", 5: "IDLE", 6: "DEADLINE"}
MiB = 1 << 20


@dataclass(frozen=True)
class Timers:
    name: str
    keepalive: str
    deadtime: str
    warntime: str
    advert: str  # keepalived advert_int


TIMERS = {t.name: t for t in (Timers("100ms", "100ms", "300ms", "200ms", "0.1"),
                              Timers("50ms", "50ms", "150ms", "100ms", "0.05"))}


class Subject:
    """One implementation's two nodes."""

    name = ""

    def __init__(self, lab: Lab, timers: Timers) -> None:
        self.lab, self.timers = lab, timers
        self.nodes: list[HbdNode] = []
        self.peers: list[Any] = []
        self.buses: list[PrivateBus] = []

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The daemons' process trees (host pids)."""
        raise NotImplementedError

    def logs(self) -> dict[str, str]:
        raise NotImplementedError


class Hbd(Subject):
    name = "hbd"

    def start(self) -> None:
        t = self.timers
        # no `realtime` line: hbd's default, as for Heartbeat
        conf = ha_cf("bcast eth0", keepalive=t.keepalive, deadtime=t.deadtime,
                     warntime=t.warntime, initdead="1", extra="auto_failback off\n")
        for n in ("n1", "n2"):
            bus = PrivateBus().start()
            self.buses.append(bus)
            install_hbd_files(bus)
            self.nodes.append(HbdNode(self.lab, n, conf, f"n1 {VIP}/24/eth0\n", extra_args=(),
                                      env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address}).start())
        self.nodes[0].wait_log(r"group \S+ start done", 30)
        for node in self.nodes:
            node.wait_log(r"owning org\.linuxha\.hbd1 on the system bus", 30)
        time.sleep(2.0)

    def manager_property(self, index: int, name: str) -> str | None:
        """A Manager property as busctl prints it ("d 0.0031"), None if hbd has none."""
        try:
            out = self.buses[index].busctl("get-property", BUS_NAME, OBJECT_PATH,
                                           MANAGER_IFACE, name)
        except PrivBusError:
            return None
        value = out.strip().split(" ", 1)[1] if " " in out.strip() else None
        return json.loads(value) if value is not None and value.startswith('"') else value

    def loop_lag_histogram(self) -> list[tuple[float, int]] | None:
        """The two nodes' LoopLagHistogram summed: (upper bound s, firings), None without."""
        total: dict[float, int] = {}
        for i in range(len(self.nodes)):
            text = self.manager_property(i, "LoopLagHistogram")  # "12 0.0005 1200 ... inf 0"
            if text is None:
                return None
            words = text.split()[1:]
            for bound, count in zip(words[::2], words[1::2], strict=True):
                total[float(bound)] = total.get(float(bound), 0) + int(count)
        return sorted(total.items())

    def loop_lag_max_ms(self) -> float | None:
        values = [self.manager_property(i, "LoopLagMax") for i in range(len(self.nodes))]
        found = [float(v) * 1000 for v in values if v is not None]
        return max(found) if found else None

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
        for bus in self.buses:
            bus.stop()

    def pids(self) -> list[int]:
        return [p for node in self.nodes if node.proc is not None for p in tree(node.pid)]

    def logs(self) -> dict[str, str]:
        return {node.node: node.log(since_start=True) for node in self.nodes}


def worst_bucket_ms(before: list[tuple[float, int]] | None,
                    after: list[tuple[float, int]] | None) -> float | None:
    """The upper bound (ms) of the latest-lateness bucket that gained firings in between."""
    if before is None or after is None:
        return None
    counts = dict(before)
    grew = [bound for bound, n in after if n > counts.get(bound, 0)]
    return max(grew) * 1000 if grew else 0.0


class Heartbeat(Subject):
    name = "heartbeat"

    def start(self) -> None:
        t = self.timers
        # no `realtime` line: Heartbeat's default, realtime on (SCHED_RR, memory locked)
        conf = ha_cf("bcast eth0", keepalive=t.keepalive, deadtime=t.deadtime,
                     warntime=t.warntime, initdead="1",
                     extra="auto_failback off\ncrm no\nlogfile /var/log/ha-log\n")
        self.peers = [HeartbeatPeer(self.lab, n, ha_cf=conf,
                                    haresources=f"n1 IPaddr2::{VIP}/24/eth0\n")
                      .start(daemon=True) for n in ("n1", "n2")]
        wait_for(lambda: self.lab.has_address("n1", VIP), 90, "heartbeat to start the VIP")
        time.sleep(6.0)  # Heartbeat advertises deadtime + 2 s for its first 5 s

    def kill(self) -> None:
        for peer in self.peers:
            peer.kill()

    def pids(self) -> list[int]:
        return [p for peer in self.peers if peer.iso is not None
                for p in tree(peer.iso.proc.pid)]

    def logs(self) -> dict[str, str]:
        # ha-log alone: peer.log() appends stdout.log after it, so an offset taken into
        # that concatenation before the load would skip the start of what ha-log gains
        out = {}
        for peer in self.peers:
            with contextlib.suppress(OSError):
                out[peer.node] = (peer.log_dir / "ha-log").read_text(errors="replace")
        return out


class Keepalived(Subject):
    name = "keepalived"

    def start(self) -> None:
        self.peers = []
        for node, priority in (("n1", 150), ("n2", 100)):
            conf = render_keepalived_conf(priority=priority, advert_int=self.timers.advert,
                                          vips=[f"{VIP}/24"], interface="eth0", vrid=61)
            self.peers.append(KeepalivedPeer(self.lab, node, conf).start())
        self.peers[0].wait_state("MASTER", timeout=30)
        wait_for(lambda: self.lab.has_address("n1", VIP), 30, "keepalived VIP")
        time.sleep(2.0)

    def kill(self) -> None:
        for peer in self.peers:
            peer.kill()

    def pids(self) -> list[int]:
        return [p for peer in self.peers if peer.iso is not None
                for p in tree(peer.iso.proc.pid)]

    def logs(self) -> dict[str, str]:
        return {peer.node: peer.log() for peer in self.peers}


IMPLS: dict[str, Callable[[Lab, Timers], Subject]] = {
    "hbd": Hbd, "heartbeat": Heartbeat, "keepalived": Keepalived}


# -- the load -------------------------------------------------------------------------------

def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


class MemoryCgroup:
    """A child memory cgroup of this process's own (v2 or v1), removed on close."""

    def __init__(self, name: str, limit: int) -> None:
        parent = self._parent()
        self.path = parent / name
        self.path.mkdir()
        self.v2 = (self.path / "memory.max").exists()
        if not self.v2 and not (self.path / "memory.limit_in_bytes").exists():
            self.path.rmdir()
            raise RuntimeError(f"{parent}: its children get no memory controller (cgroup v2: "
                               f"'+memory' missing from {parent}/cgroup.subtree_control): the "
                               "memory hog cannot be fenced off, so the soak does not run")
        if self.v2:
            (self.path / "memory.max").write_text(str(limit))
            (self.path / "memory.oom.group").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit))

    @staticmethod
    def _parent() -> Path:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):  # v1
                return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                base = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
                if "memory" in (base / "cgroup.controllers").read_text().split():
                    return base
        raise RuntimeError("no memory cgroup controller here")

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / name).read_text())
        return 0

    def oom_kills(self) -> int:
        with contextlib.suppress(OSError):
            if self.v2:
                text = (self.path / "memory.events").read_text()
            else:
                text = (self.path / "memory.oom_control").read_text()
            for line in text.splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def close(self) -> None:
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


@dataclass(frozen=True)
class Load:
    seconds: int
    cpu: int
    vm_bytes: int
    limit: int
    workdir: Path

    def argv(self) -> list[str]:
        return ["stress-ng", "--cpu", str(self.cpu), "--vm", "1", "--vm-bytes",
                f"{self.vm_bytes // MiB}M", "--vm-keep", "--hdd", "1", "--hdd-bytes", "1G",
                "--temp-path", str(self.workdir), "--timeout", f"{self.seconds}s",
                "--metrics-brief"]

    def describe(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "cpu_hogs": self.cpu,
                "vm_mib": self.vm_bytes // MiB, "cgroup_limit_mib": self.limit // MiB,
                "io_hogs": 1, "argv": self.argv()}


def plan_load(seconds: int, margin: int, workdir: Path) -> Load:
    """CPU hogs at 2 x CPUs; the memory hog at 90 % of what the cgroup may use, which is
    MemAvailable less `margin` (the I/O hog's page cache fills the rest: reclaim)."""
    limit = mem_available() - margin
    if limit < 256 * MiB:
        raise RuntimeError(f"MemAvailable leaves {limit // MiB} MiB after the margin")
    return Load(seconds, 2 * (os.cpu_count() or 1), limit * 9 // 10, limit, workdir)


def run_load(load: Load, name: str) -> tuple[int, dict[str, Any]]:
    """stress-ng in a fresh memory cgroup, to completion; its exit code and memory figures."""
    cgroup = MemoryCgroup(f"hbd-soak-{os.getpid()}-{name}", load.limit)
    procs = cgroup.path / "cgroup.procs"
    script = 'echo $$ > "$0" && exec "$@"'
    out = load.workdir / f"stress-{name}.log"
    try:
        with open(out, "wb") as log:
            proc = commands.popen(["sh", "-c", script, str(procs), *load.argv()],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(load.seconds + 120)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise
        return rc, {"peak_mib": cgroup.peak() // MiB, "oom_kills": cgroup.oom_kills()}
    finally:
        cgroup.close()


# -- what happened --------------------------------------------------------------------------

def _wall(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


def vip_events(text: str, node: str) -> list[tuple[float, str, bool]]:
    """(time, node, added) for every VIP address event `ip -ts monitor address` printed."""
    out = []
    for line in text.splitlines():
        m = MONITOR.match(line)
        if m and m.group(3) == VIP:
            out.append((_wall(m.group(1)), node, not m.group(2)))
    return out


def both_held(events: list[tuple[float, str, bool]], end: float) -> tuple[int, float]:
    """How many times, and how long in all, n1 and n2 held the VIP at once (n1 held it at
    the start, n2 did not)."""
    held = {"n1": True, "n2": False}
    since, count, total = 0.0, 0, 0.0
    for t, node, added in sorted(events):
        before = all(held.values())
        held[node] = added
        if not before and all(held.values()):
            since, count = t, count + 1
        elif before and not all(held.values()):
            total += t - since
    if all(held.values()):
        total += end - since
    return count, total


def sched(pids: list[int]) -> str:
    """The distinct scheduling policies (and RT priorities) of the processes' threads."""
    seen = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError):
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    policy, prio = int(fields[38]), int(fields[37])
                    seen.add(f"{POLICIES.get(policy, policy)}{f' {prio}' if prio else ''}")
    return ", ".join(sorted(seen)) or "-"


def log_figures(impl: str, logs: dict[str, str]) -> dict[str, Any]:
    late = [(node, int(ms)) for text in logs.values() for node, ms in LATE.findall(text)]
    dead = [m.group(0) for text in logs.values() for m in DEAD.finditer(text)]
    stalls, stall_max = 0, 0.0
    for text in logs.values():
        for times, worst in LOOP_STALL.findall(text):
            stalls += int(times or 1)
            stall_max = max(stall_max, float(worst))
    states = []
    if impl == "keepalived":
        states = [f"{node}: {s}" for node, text in logs.items() for s in KA_STATE.findall(text)]
    return {"late_heartbeats": len(late), "late_max_ms": max((ms for _, ms in late), default=0),
            "dead": len(dead), "dead_lines": dead[:20], "state_changes": states[:20],
            "loop_stalls": stalls, "loop_stall_max_ms": stall_max}


def soak_one(lab: Lab, impl: str, timers: Timers, load: Load) -> dict[str, Any]:
    for node in ("n1", "n2"):
        lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
    subject = IMPLS[impl](lab, timers)
    try:
        subject.start()
        if not lab.has_address("n1", VIP) or lab.has_address("n2", VIP):
            raise RuntimeError(f"{impl}: the VIP is not on n1 alone before the load")
        marks = {node: len(text) for node, text in subject.logs().items()}
        monitors, files = [], {}
        for node in ("n1", "n2"):
            files[node] = lab.workdir / f"monitor-{impl}-{timers.name}-{node}.txt"
            with open(files[node], "w") as out:
                monitors.append(lab.popen(node, ["ip", "-ts", "monitor", "address"],
                                          stdout=out))
        time.sleep(0.5)
        histogram = subject.loop_lag_histogram() if isinstance(subject, Hbd) else None
        pids = subject.pids()
        cpu0, started = cpu_seconds(pids), time.time()
        policies = sched(pids)
        rc, memory = run_load(load, f"{impl}-{timers.name}")
        ended = time.time()
        cpu = cpu_seconds(pids) - cpu0
        time.sleep(max(0.5, 3 * float(timers.deadtime.rstrip("ms")) / 1000))  # let it settle
        for proc in monitors:
            lab.stop(proc)
        events = [e for node, path in files.items() for e in vip_events(path.read_text(), node)]
        logs = {node: text[marks.get(node, 0):] for node, text in subject.logs().items()}
        moves = sum(1 for _, node, added in events if (node == "n2") == added)
        overlaps, overlap_s = both_held(events, time.time())
        result = {"vip_moves": moves, "both_held": overlaps,
                  "both_held_ms": round(overlap_s * 1000),
                  "vip_on_n1_at_end": lab.has_address("n1", VIP),
                  "vip_on_n2_at_end": lab.has_address("n2", VIP),
                  "daemon_cpu_s": round(cpu, 2), "sched": policies, "loop_lag_max_ms": None,
                  "stress_rc": rc, "stress_memory": memory, "seconds": round(ended - started),
                  **log_figures(impl, logs)}
        if isinstance(subject, Hbd):
            result["loop_lag_max_ms"] = subject.loop_lag_max_ms()  # since hbd started
            # during the load alone: the histogram's growth (bucket bounds)
            result["loop_lag_soak_bucket_ms"] = worst_bucket_ms(
                histogram, subject.loop_lag_histogram())
            result["realtime"] = [subject.manager_property(i, "Realtime") for i in (0, 1)]
        if impl == "keepalived":  # any state change after the start is a failover
            result["dead"] = len(result["state_changes"])
        return result
    finally:
        subject.kill()
        for node in ("n1", "n2"):
            lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


def lag_cell(r: dict[str, Any]) -> str:
    """hbd's worst loop lag since start, and the worst histogram bucket during the load."""
    if r.get("loop_lag_max_ms") is None:
        return "-"
    text = f"{r['loop_lag_max_ms']:.1f} ms"
    if r.get("loop_lag_soak_bucket_ms") is not None:
        text += f" (soak: ≤ {r['loop_lag_soak_bucket_ms']:g} ms)"
    return text


def false_failovers(r: dict[str, Any]) -> int:
    return int(r["vip_moves"]) + int(r["both_held"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="minutes of load per implementation and timer setting")
    parser.add_argument("--timers", default=",".join(TIMERS))
    parser.add_argument("--impls", default="hbd,heartbeat,keepalived")
    parser.add_argument("--mem-margin-gib", type=float, default=2.0,
                        help="memory left to the rest of the machine (default 2 GiB)")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds without load between two rows (a shared machine)")
    parser.add_argument("--out", default="soak", help="result name under benchmarks/results")
    args = parser.parse_args()
    impls = installed_impls(args.impls)
    results: dict[str, dict[str, Any]] = {}
    loads: dict[str, Any] = {}
    lab = Lab(("n1", "n2"))
    try:
        for tname in args.timers.split(","):
            timers = TIMERS[tname]
            for impl in impls:
                if results and args.pause:
                    time.sleep(args.pause)
                load = plan_load(max(1, round(args.minutes * 60)),
                                 int(args.mem_margin_gib * (1 << 30)), lab.workdir)
                r = soak_one(lab, impl, timers, load)
                loads[f"{impl}/{tname}"] = load.describe()
                results.setdefault(tname, {})[impl] = r
                lag = lag_cell(r)
                print(f"{tname:6} {impl:11} false failovers {false_failovers(r)} (VIP moves "
                      f"{r['vip_moves']}, both held {r['both_held']}), dead {r['dead']}, late "
                      f"{r['late_heartbeats']} (worst {r['late_max_ms']} ms), loop lag {lag} "
                      f"(stalls {r['loop_stalls']}), "
                      f"cpu {r['daemon_cpu_s']} s, sched {r['sched']}, stress rc "
                      f"{r['stress_rc']} peak {r['stress_memory']['peak_mib']} MiB", flush=True)
    finally:
        lab.teardown()
    rows = [["timers", "impl", "false failovers", "VIP moves", "both held", "dead",
             "late hb", "worst late", "loop lag", "daemon CPU", "scheduling"]]
    for tname, by_impl in results.items():
        t = TIMERS[tname]
        for impl, r in by_impl.items():
            rows.append([f"{t.keepalive}/{t.deadtime}", impl, str(false_failovers(r)),
                         str(r["vip_moves"]), f"{r['both_held']} ({r['both_held_ms']} ms)",
                         str(r["dead"]),
                         str(r["late_heartbeats"]) if impl != "keepalived" else "n/a",
                         f"{r['late_max_ms']} ms" if r["late_heartbeats"] else "-",
                         lag_cell(r),
                         f"{r['daemon_cpu_s']} s", r["sched"]])
    print(f"\nsoak: {args.minutes:g} min per row under stress-ng (cpu x{2 * (os.cpu_count() or 1)}"
          f", vm, hdd)")
    print(table(rows))
    path = save(args.out, {"minutes": args.minutes, "load": loads, "results": results})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
