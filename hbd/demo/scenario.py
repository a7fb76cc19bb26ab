"""The story the demo tells, step by step, and the checks that prove it happened.

1. build the lab; 2. write /etc/ha.d for both nodes (shown); 3. start the
cluster: n1 serves the virtual IP; 4. move it by hand over D-Bus (busctl on
n2) and back (hbctl on n1); 5. pull n1's cable: n2 takes over after deadtime,
with the client's outage measured; 6. put the cable back: the split brain
heals and the address is served from n1 again; 7. stop hbd on n1 gracefully:
n2 takes over at once; start it again: auto_failback hands the address back.

Every check prints one line, `NAME OK: ...` or `NAME FAILED: ...`, and
`failed` tells the caller whether any did not hold.
"""

from __future__ import annotations

import itertools
import select
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hbd.bus.names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH
from hbd.control import Snapshot
from hbd.demo import cluster, commands
from hbd.demo.cluster import NODES, PORT, VIP, Node
from hbd.demo.lab import NETWORK, SWITCH, Lab
from hbd.demo.view import Screen

PROBE_MS = 10  # the client's probe interval
LOCAL_STATUS = "Local status now set to: "  # hbd's log line for its own status
VIEW_INTERVAL = 0.25  # seconds between refreshes of the status view
STEPS = 8
# what show_metrics prints of a scrape (the lines whose value is not 0)
_METRICS_SHOWN = ("hbd_node_state", "hbd_link_up", "hbd_group_state", "hbd_group_owner",
                  "hbd_failovers_total", "hbd_failover_duration_seconds_count",
                  "hbd_failover_duration_seconds_sum")


class StepFailed(Exception):
    """A check did not hold: the rest of the story would not make sense."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    text: str

    def __str__(self) -> str:
        return f"{self.name} {'OK' if self.ok else 'FAILED'}: {self.text}"


class Demo:
    def __init__(self, screen: Screen, *, interactive: bool, use_dbus: bool) -> None:
        self.screen = screen
        self.interactive = interactive
        self.use_dbus = use_dbus and cluster.have_dbus()
        self.dbus_refused = not use_dbus
        self.lab = Lab()
        self.nodes: dict[str, Node] = {}
        self.client: subprocess.Popen[bytes] | None = None
        self.replies: list[tuple[float, str]] = []
        self.cut: set[str] = set()
        self.snapshots: dict[str, Snapshot | None] = {}
        self.local_status: dict[str, str] = {}  # from the logs, for when there is no bus
        self.checks: list[Check] = []
        self.t0 = time.monotonic()
        self._view_at = 0.0

    @property
    def failed(self) -> bool:
        return not self.checks or any(not c.ok for c in self.checks)

    # --- output ---------------------------------------------------------------------

    def step(self, number: int, title: str) -> None:
        self.screen.say()
        self.screen.say(self.screen.bold(f"[{number}/{STEPS}] {title}"))

    def note(self, text: str) -> None:
        for line in text.splitlines():
            self.screen.say(f"      {line}")

    def command(self, argv: list[str], comment: str = "") -> None:
        text = "$ " + shlex.join(argv)
        self.screen.say(f"      {text}" + (f"    # {comment}" if comment else ""))

    def check(self, name: str, ok: bool, text: str) -> None:
        result = Check(name, ok, text)
        self.checks.append(result)
        self.screen.say(f"  >>> {result}")
        if not ok:
            for node in self.nodes.values():
                tail = node.log_path.read_text(errors="replace").splitlines()[-15:]
                self.screen.say(f"      last lines of {node.name}'s log ({node.log_path}):")
                for line in tail:
                    self.screen.say(f"        {line}")
            raise StepFailed(str(result))

    # --- watching -----------------------------------------------------------------------

    def _events(self) -> None:
        shown = []
        for node in self.nodes.values():
            for line in node.tail.lines():
                message = cluster.interesting(line)
                if message is not None and message.startswith(LOCAL_STATUS):
                    self.local_status[node.name] = message[len(LOCAL_STATUS):].strip("'")
                if message is not None:
                    stamp = time.monotonic() - self.t0
                    shown.append(f"  {stamp:6.2f}s  {node.name} | {message}")
        if shown:
            self.screen.say("\n".join(shown))

    def _read_snapshot(self, node: Node) -> Snapshot | None:
        if not self.use_dbus or node.bus_address is None or not self._running(node):
            return None
        from hbd.bus import client

        try:
            return client.read_state(node.bus_address).snapshot
        except Exception:  # hbd starting, stopping or busy: the view just says less
            return None

    @staticmethod
    def _running(node: Node) -> bool:
        return node.proc is not None and node.proc.poll() is None

    def _last_reply(self) -> tuple[float, str] | None:
        return self.replies[-1] if self.replies else None

    def answering(self) -> str | None:
        """Who answered the client's last probe, if that was less than 0.2 s ago."""
        last = self._last_reply()
        if last is None or time.monotonic() - last[0] > 0.2:
            return None
        return last[1]

    def _view(self) -> None:
        block = [f"  .-- status at {time.monotonic() - self.t0:6.2f}s " + "-" * 48]
        plain = []
        for name, node in self.nodes.items():
            snap = self.snapshots.get(name)
            cable = "CUT      " if name in self.cut else "connected"
            vip = "holds VIP" if self.lab.has_address(name, VIP) else "-        "
            if not self._running(node):
                state, sees = "stopped", ""
            elif snap is not None:
                me = next((n.status for n in snap.nodes if n.local), "?")
                peers = [n for n in snap.nodes if not n.local]
                state = me
                sees = "; ".join(
                    f"sees {p.name} {p.status}, link " + ", ".join(
                        f"{lk.link} {lk.status}" for lk in snap.links if lk.node == p.name)
                    for p in peers)
            else:
                state, sees = self.local_status.get(name, "running"), f"(pid {node.pid})"
            block.append(f"  | {name}  hbd {state:<7} cable {cable}  {vip}  {sees}")
            plain.append(f"{name} hbd {state}{', holds VIP' if vip.strip() != '-' else ''}"
                         f"{', cable cut' if name in self.cut else ''}")
        last = self._last_reply()
        who = self.answering()
        if last is None:
            reply = "no reply yet"
        elif who is not None:
            reply = f"{who} answers"
        else:
            reply = f"NO ANSWER for {time.monotonic() - last[0]:.1f} s (last from {last[1]})"
        count = len(self.replies)
        block.append(f"  | client  probes {VIP} every {PROBE_MS} ms: {reply}  "
                     f"[{count} replies]")
        block.append("  '" + "-" * 72)
        plain.append(f"client: {reply.split(' for ')[0]}")
        self.screen.status(block, " | ".join(plain))

    def pump(self, force_view: bool = False) -> None:
        """Show new log events, and refresh the status view when it is due."""
        self._events()
        now = time.monotonic()
        if force_view or now - self._view_at >= VIEW_INTERVAL:
            self._view_at = now
            for name, node in self.nodes.items():
                self.snapshots[name] = self._read_snapshot(node)
            self._view()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Watch until `predicate` holds (True) or `timeout` passes (False).

        Raises StepFailed at once when an hbd that should run has exited.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if predicate():
                self.pump(force_view=True)
                return True
            for node in self.nodes.values():
                if node.proc is not None and node.proc.poll() is not None:
                    self.check("HBD", False, f"hbd on {node.name} exited with status "
                               f"{node.proc.returncode}")
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def settle(self, seconds: float) -> None:
        self.wait(lambda: False, seconds)

    def pause(self, what: str, settle: float) -> None:
        """Interactive: wait for Enter (the view stays live).  Otherwise: let it settle."""
        if not self.interactive:
            self.settle(settle)
            return
        self.screen.say(f"  -- press Enter to {what} (Ctrl-C stops and cleans up)")
        while True:
            self.pump()
            ready, _, _ = select.select([sys.stdin], [], [], 0.1)
            if ready:
                sys.stdin.readline()
                self.screen.line_typed()
                return

    # --- the outage -----------------------------------------------------------------------

    def _first_reply_from(self, name: str, after: float) -> float | None:
        return next((t for t, n in self.replies if n == name and t > after), None)

    def outage(self, event: float, until: float) -> float:
        """The longest silence between two replies, from just before `event` to `until`."""
        times = [t for t, _ in self.replies if event - 1.0 <= t <= until]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return max(gaps, default=0.0)

    def wait_served_by(self, name: str, event: float, timeout: float,
                       extra: Callable[[], bool] = lambda: True) -> float | None:
        """Wait until `name` answers (after `event`) and `extra` holds; return when it
        first answered."""
        def served() -> bool:
            return self.answering() == name and self._first_reply_from(name, event) is not None \
                and extra()

        if not self.wait(served, timeout):
            return None
        return self._first_reply_from(name, event)

    # --- the steps ----------------------------------------------------------------------

    def run(self) -> None:
        self.build()
        self.configure()
        self.start()
        if self.use_dbus:
            self.manual_takeover()
        else:
            why = "--no-dbus" if self.dbus_refused else "dbus-daemon is not installed"
            self.step(4, f"Manual takeover over D-Bus: skipped ({why})")
        self.cut_link()
        self.restore_link()
        self.auto_failback()
        self.history()
        self.show_metrics()

    def build(self) -> None:
        self.step(1, f"Building the lab: network namespaces {self.lab.tag}-* on {NETWORK}")
        self.note("Nothing is added to this machine's own network: every address lives in a\n"
                  "namespace made for this run, wired to a bridge in a namespace of its own.")

        def show(host: object) -> None:
            name = getattr(host, "name", "")
            address = getattr(host, "address", "")
            self.note(f"{self.lab.ns(name):<28} eth0 {address}/24 -> bridge br0 in "
                      f"{self.lab.ns(SWITCH)}")

        self.lab.build(show)
        self.note(f"The service address (VIP) {VIP} will live on whichever node serves it.")

    def configure(self) -> None:
        self.step(2, "Writing /etc/ha.d for both nodes (the same three files on each)")
        self.nodes = cluster.write_config(self.lab, cluster.authkeys_text())
        n1 = self.nodes["n1"]
        self.note(f"On a real machine these are /etc/ha.d/*; here they are in "
                  f"{self.lab.workdir}/{{n1,n2}}/ha.d/")
        for filename in ("ha.cf", "haresources", "authkeys"):
            path = n1.config_dir / filename
            mode = f" (mode {path.stat().st_mode & 0o777:o}: hbd refuses a readable one)" \
                if filename == "authkeys" else ""
            self.screen.say(f"      --- {filename}{mode}")
            for line in path.read_text().splitlines():
                self.screen.say(f"      | {line}")
        self.note("Check a configuration without starting anything:")
        self.command(["hbd", "--check-config", "--config-dir", str(n1.config_dir), "--node",
                      "n1"])
        result = commands.run(
            [sys.executable, "-m", "hbd.daemon", "--check-config", "--config-dir",
             str(n1.config_dir), "--node", "n1"], capture_output=True, text=True, timeout=60,
            env=cluster.client_env())
        for line in (result.stdout + result.stderr).splitlines():
            self.screen.say(f"      {line}")

    def start(self) -> None:
        self.step(3, "Starting the cluster: a service on each node, two hbd, a client")
        env = cluster.client_env()
        for name in NODES:
            self.lab.spawn(name, [sys.executable, "-m", "hbd.demo.probe", "respond", name,
                                  str(PORT), self.lab.tag], env=env)
        self.note(f"Each node runs a tiny UDP service on port {PORT} that answers with its "
                  "name.")
        if self.use_dbus:
            for node in self.nodes.values():
                cluster.start_bus(self.lab, node)
            self.note("Each node has a private D-Bus of its own (as each machine has its own "
                      "system bus),\nwhere hbd owns org.linuxha.hbd1.")
        for node in self.nodes.values():
            cluster.start_hbd(self.lab, node)
            self.command(self._shown_argv(node), f"pid {node.pid}, log {node.log_path}")
        self.client = self.lab.spawn("client", [
            sys.executable, "-m", "hbd.demo.probe", "client", VIP, str(PORT), str(PROBE_MS),
            self.lab.tag], stdout_pipe=True, env=env)
        threading.Thread(target=self._read_client, daemon=True).start()
        self.note(f"The client probes {VIP} every {PROBE_MS} ms; an outage is the longest "
                  "silence between two replies.")
        self.note("Waiting for the nodes to find each other and n1 to bring the VIP up...")
        started = time.monotonic()
        ok = self.wait(lambda: self.answering() == "n1" and self._cluster_formed(), 30)
        self.check("CLUSTER", ok, f"n1 and n2 are active and n1 serves {VIP} "
                   f"({time.monotonic() - started:.1f} s after start)" if ok else
                   "the cluster did not form within 30 s")
        if self.use_dbus:
            self.note("What an admin sees on n1 (the same over SSH on a real node):")
            self._hbctl("n1", ["status"])

    def _shown_argv(self, node: Node) -> list[str]:
        """How hbd is started, as an admin would type it (the demo runs `python -m
        hbd.daemon`, which is the same program)."""
        return ["ip", "netns", "exec", self.lab.ns(node.name), "hbd", *node.argv()[3:]]

    def _cluster_formed(self) -> bool:
        if not self.use_dbus:  # only the logs tell: both said they are active
            return all(self.local_status.get(name) == "active" and self._running(node)
                       for name, node in self.nodes.items())
        for name in NODES:
            snap = self.snapshots.get(name)
            if snap is None or any(n.status != "active" for n in snap.nodes):
                return False
        return True

    def _read_client(self) -> None:
        proc = self.client
        assert proc is not None and proc.stdout is not None
        try:
            for raw in proc.stdout:
                stamp, _, name = raw.decode("ascii", "replace").strip().partition(" ")
                self.replies.append((float(stamp), name))
        except (OSError, ValueError):
            return  # closed at cleanup

    def _hbctl(self, name: str, args: list[str]) -> subprocess.CompletedProcess[str]:
        node = self.nodes[name]
        self.command(["hbctl", *args], f"on {name}, with DBUS_SYSTEM_BUS_ADDRESS="
                     f"{node.bus_address}")
        env = cluster.client_env()
        env["DBUS_SYSTEM_BUS_ADDRESS"] = node.bus_address or ""
        result = commands.run([sys.executable, "-m", "hbd.cli.hbctl", *args],
                              capture_output=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL)
        for line in (result.stdout + result.stderr).splitlines():
            self.screen.say(f"      {line}")
        return result

    def manual_takeover(self) -> None:
        self.step(4, "Manual takeover over D-Bus (Heartbeat's hb_takeover)")
        self.pause("ask n2 to take the service over", 0.5)
        n2 = self.nodes["n2"]
        argv = ["busctl", f"--address={n2.bus_address}", "call", BUS_NAME, OBJECT_PATH,
                MANAGER_IFACE, "Takeover", "s", "all"]
        event = time.monotonic()
        if shutil.which("busctl"):
            self.note("On a real node: busctl call org.linuxha.hbd1 /org/linuxha/hbd1 "
                      "org.linuxha.hbd1.Manager Takeover s all")
            self.command(argv, "root may; others need polkit's org.linuxha.hbd1.manage")
            result = commands.run(argv, capture_output=True, timeout=60)
            output = (result.stdout + result.stderr).strip()
            if output:
                self.note(output)
        else:
            result = self._hbctl("n2", ["takeover", "all"])
        if result.returncode != 0:
            self.check("DBUS TAKEOVER", False, f"the Takeover call failed (rc "
                       f"{result.returncode})")
        first = self.wait_served_by("n2", event, 15, lambda: not self.lab.has_address("n1", VIP))
        self.check("DBUS TAKEOVER", first is not None,
                   f"n2 took {VIP} over from n1 in an orderly handover; client outage "
                   f"{self.outage(event, first):.2f} s" if first is not None else
                   "n2 did not start serving within 15 s")
        self.pause("hand it back with hbctl on n1", 1.0)
        event = time.monotonic()
        self._hbctl("n1", ["takeover"])
        first = self.wait_served_by("n1", event, 15, lambda: not self.lab.has_address("n2", VIP))
        self.check("HBCTL TAKEOVER", first is not None,
                   f"n1 took {VIP} back; client outage {self.outage(event, first):.2f} s"
                   if first is not None else "n1 did not start serving within 15 s")

    def cut_link(self) -> None:
        self.step(5, "Pulling n1's network cable (its switch port goes down)")
        self.note("n2 hears no heartbeat from n1 for deadtime (1 s), declares it dead and "
                  "brings the VIP up,\nthen sends gratuitous ARP so the client's ARP cache "
                  "points at n2.")
        self.pause("pull n1's cable", 1.0)
        port = self.lab.hosts["n1"].port
        self.command(["ip", "-n", self.lab.ns(SWITCH), "link", "set", port, "down"])
        event = time.monotonic()
        self.lab.cut("n1")
        self.cut.add("n1")
        first = self.wait_served_by("n2", event, 15)
        self.check("TAKEOVER", first is not None,
                   f"n2 answered after {self.outage(event, first):.2f} s outage (deadtime: "
                   "1 s after n1's last heartbeat)" if first is not None else
                   "n2 did not answer within 15 s of the cut")
        self.settle(1.2)
        self.note("n1 cannot hear n2 either: it declared n2 dead too and still holds the VIP "
                  "behind\nits cut cable. Both hold it now; only n2 is reachable.")

    def restore_link(self) -> None:
        self.step(6, "Putting n1's cable back")
        self.note("The nodes hear each other again and both claim the VIP: a split brain. "
                  "hbd's rule:\nwhen both sides declared each other dead, a group stays on its "
                  "haresources node (n1),\nwhich is where auto_failback on sends it anyway. "
                  "n2 releases it, n1 announces it.")
        self.pause("plug n1's cable back in", 1.0)
        port = self.lab.hosts["n1"].port
        self.command(["ip", "-n", self.lab.ns(SWITCH), "link", "set", port, "up"])
        event = time.monotonic()
        self.lab.restore("n1")
        self.cut.discard("n1")
        first = self.wait_served_by("n1", event, 15, lambda: not self.lab.has_address("n2", VIP))
        self.check("FAILBACK", first is not None,
                   f"n1 serves {VIP} again and n2 released it "
                   f"{time.monotonic() - event:.2f} s after the cable came back; longest gap "
                   f"{self.outage(event, first):.2f} s" if first is not None else
                   "n1 did not serve alone within 15 s of the restore")
        self.wait(self._cluster_formed, 10)

    def auto_failback(self) -> None:
        self.step(7, "auto_failback: stop hbd on n1 (systemctl stop), then start it again")
        self.note("A graceful stop releases the VIP and tells n2 (`shutdone`): n2 takes over "
                  "at once,\nwithout waiting for deadtime. When n1 is back, auto_failback on "
                  "returns the VIP to it.")
        self.pause("stop hbd on n1", 1.0)
        n1 = self.nodes["n1"]
        assert n1.proc is not None
        self.command(["kill", "-TERM", str(n1.pid)], "what systemctl stop hbd does")
        event = time.monotonic()
        status = self.lab.stop(n1.proc, timeout=15.0)
        n1.proc = None
        self.local_status.pop("n1", None)
        first = self.wait_served_by("n2", event, 15)
        self.check("HANDOVER", first is not None and status == 0,
                   f"n1 stopped gracefully (exit status {status}); n2 answered after "
                   f"{self.outage(event, first):.2f} s outage" if first is not None else
                   "n2 did not answer within 15 s of n1's stop")
        self.pause("start hbd on n1 again", 1.0)
        event = time.monotonic()
        cluster.start_hbd(self.lab, n1)
        self.command(self._shown_argv(n1), f"pid {n1.pid}")
        first = self.wait_served_by("n1", event, 20, lambda: not self.lab.has_address("n2", VIP))
        self.check("AUTO_FAILBACK", first is not None,
                   f"n1 is back and serves {VIP} again ({time.monotonic() - event:.1f} s after "
                   f"its start); client outage {self.outage(event, first):.2f} s"
                   if first is not None else "n1 did not get the VIP back within 20 s")
        self.wait(self._cluster_formed, 10)

    def history(self) -> None:
        """What happened, as `hbctl history` reads it back from n1's journal entries."""
        n1 = self.nodes["n1"]
        if n1.journal is None:
            return
        self.screen.say()
        self.screen.say(self.screen.bold("What happened, from n1's journal entries"))
        self.note("On a node, `hbctl history` reads hbd's events from the journal. The demo's "
                  "nodes have no\njournald: each hbd sends the same entries to a socket of the "
                  f"demo, kept in\n{n1.journal.out} as `journalctl -o json` prints them.")
        self.command(["hbctl", "history", "--file", str(n1.journal.out)])
        time.sleep(0.2)  # the last entries are on their way through hbd's log queue
        result = commands.run([sys.executable, "-m", "hbd.cli.hbctl", "history", "--file",
                               str(n1.journal.out)], capture_output=True, text=True,
                              timeout=60, env=cluster.client_env(), stdin=subprocess.DEVNULL)
        for line in (result.stdout + result.stderr).splitlines():
            self.screen.say(f"      {line}")
        takeovers = [line for line in result.stdout.splitlines()
                     if " takeover " in line and " ms " in line]
        self.check("HISTORY", result.returncode == 0 and len(takeovers) >= 2,
                   f"n1's history lists {len(takeovers)} takeovers with their durations"
                   if result.returncode == 0 else f"hbctl history failed ({result.returncode})")

    def show_metrics(self) -> None:
        """A few lines of n2's Prometheus metrics, scraped from the client."""
        node = self.lab.hosts["n2"]
        url = f"http://{node.address}:{cluster.METRICS_PORT}/metrics"
        self.screen.say(self.screen.bold("      Prometheus metrics (hbd.conf metrics_listen), "
                                         "as a scraper on the client sees n2's:"))
        self.command(["curl", "-s", url], "the demo's own probe does it, from the client")
        proc = self.lab.spawn("client", [sys.executable, "-m", "hbd.demo.probe", "scrape",
                                         url, self.lab.tag], stdout_pipe=True,
                              env=cluster.client_env())
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.lab.stop(proc)
            out = b""
        shown = [line for line in out.decode(errors="replace").splitlines()
                 if line.startswith(_METRICS_SHOWN) and not line.endswith(" 0.0")]
        for line in shown:
            self.screen.say(f"      | {line}")
        failovers = [line for line in shown if line.startswith("hbd_failovers_total{")]
        self.check("METRICS", bool(failovers),
                   f"n2's metrics count {len(failovers)} kind(s) of failover and their "
                   "durations" if failovers else "n2's metrics show no failover")

    # --- the end ------------------------------------------------------------------------

    def summary(self) -> None:
        self.screen.drop_status()
        self.screen.say()
        self.screen.say(self.screen.bold("Summary"))
        for result in self.checks:
            self.screen.say(f"  {result}")
        if not self.checks:
            self.screen.say("  (no step completed)")

    def cleanup(self) -> list[str]:
        self.screen.drop_status()
        self.step(STEPS, "Cleaning up: stopping hbd (it releases the VIP), the services, the "
                  "buses, the client;\n      deleting the namespaces and "
                  f"{self.lab.workdir}")
        hbds = [n.proc for n in self.nodes.values() if n.proc is not None]
        left = self.lab.teardown(stop_first=hbds)
        for node in self.nodes.values():
            if node.journal is not None:
                node.journal.close()
        if left:
            self.screen.say(f"      could not remove: {', '.join(left)}")
        else:
            self.screen.say("      done: nothing of this run is left")
        return left
