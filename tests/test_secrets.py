"""Secrets and access: the authkeys secret never leaves /etc/ha.d/authkeys.

* an authkeys file that group or others may read is refused, by the daemon
  (exit 1) and by `hbd --check-config`, with the chmod that fixes it;
* nothing hbd shows contains a key: `hbd --check-config`, `hbctl config`
  and `hbctl export pacemaker` on good and broken files;
* two real daemons run with --debug while things happen (bad packets,
  refused reloads with the key in awkward places, a loose file mode, a key
  rotation, a handover over D-Bus): neither key appears in anything they
  wrote: stderr, the Heartbeat-style logfile and debugfile, every field of
  every journal entry (n1's journal sender is replaced, by a sitecustomize,
  with one that records what JournalSink sends), the state and runtime directories, D-Bus
  introspection, properties and error replies, hbctl's output;
* unprivileged callers are refused every D-Bus management method, and the
  refusal moves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hbd.bus.names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH
from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for
from tests.infra.privbus import PrivateBus, PrivBusError
from tests.test_bus import dbus_send, install_hbd_files
from tests.test_hostile import WRONG_KEYS, forged
from tests.vipclient import start_responders, wait_answer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "Qz7-hbd-SECRET-k3y"  # the cluster key
ROTATED = "Wv4-hbd-ROTATED-k3y"  # the key rotated in during the run
KEYS = (SECRET, ROTATED)
AUTHKEYS = f"auth 1\n1 sha1 {SECRET}\n"
VIP = "10.77.0.240"
GROUP = f"{VIP}/24/eth0"

# authkeys files an admin may get wrong, with the key where a parser might echo it
BROKEN_AUTHKEYS = [
    f"auth 1\n1 {SECRET}\n",  # method forgotten
    f"auth 1\n1 sha1\n{SECRET}\n",  # key wrapped onto its own line
    f"auth 1\n1 crc {SECRET}\n",  # crc takes no key
    f"auth {SECRET}\n1 sha1 {SECRET}\n",
    f"auth 1\n1 sha256 {SECRET}\n",  # unknown method
    f"auth 1\n1 sha1 {SECRET} {SECRET}\n",  # a key is one word
    f"auth 2\n1 sha1 {SECRET}\n",
    f"auth 1\n16 sha1 {SECRET}\n",
]

JOURNAL_SHIM = '''
"""sitecustomize: hbd's journal sender records what JournalSink sends instead."""
import json, os, sys

if os.environ.get("HBD_TEST_JOURNAL"):
    from hbd import journalsend

    def send(self, fields):
        journalsend.encode(fields)  # journald's rules for field names still apply
        record = {k: str(v) for k, v in fields.items()}
        with open(os.environ["HBD_TEST_JOURNAL"], "a") as out:
            out.write(json.dumps(record) + "\\n")
        sys.stderr.write(str(fields["MESSAGE"]) + "\\n")
        sys.stderr.flush()

    journalsend.JournalSocket.send = send
'''


def hbd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": commands.pythonpath()}
    env.pop("JOURNAL_STREAM", None)
    env.pop("INVOCATION_ID", None)
    return commands.run([sys.executable, "-m", "hbd.daemon", *args], capture_output=True,
                        text=True, timeout=60, env=env, check=False)


def hbctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return commands.run([sys.executable, "-m", "hbd.cli.hbctl", *args], capture_output=True,
                        text=True, timeout=60, check=False,
                        env={**os.environ, "PYTHONPATH": commands.pythonpath(), **(env or {})})


def config_dir(path: Path, authkeys: str, mode: int = 0o600) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "ha.cf").write_text(ha_cf("bcast eth0"))
    (path / "haresources").write_text(f"n1 {GROUP}\n")
    (path / "authkeys").write_text(authkeys)
    os.chmod(path / "authkeys", mode)
    return path


def assert_no_key(where: str, text: str) -> None:
    for key in KEYS:
        assert key not in text, f"{where} shows a key:\n{text[max(0, text.find(key) - 300):][:600]}"


# --- file mode and the commands that read the config -------------------------------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_loose_authkeys_refused(tmp_path: Path, mode: int) -> None:
    directory = config_dir(tmp_path / "ha.d", AUTHKEYS, mode)
    expected = (f"{directory}/authkeys: is readable by group or others (mode {mode:o}): "
                f"run 'chmod 600 {directory}/authkeys'")
    res = hbd("--check-config", "--config-dir", str(directory), "--node", "n1")
    assert res.returncode == 1 and expected in res.stderr, res
    res = hbd("--config-dir", str(directory), "--node", "n1", "--no-dbus",
              "--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run"))
    assert res.returncode == 1, res
    assert expected in res.stderr and "configuration invalid, not starting" in res.stderr
    assert not (tmp_path / "state").exists(), "refused before touching anything"
    assert_no_key("hbd output", res.stdout + res.stderr)
    os.chmod(directory / "authkeys", 0o600)
    assert hbd("--check-config", "--config-dir", str(directory), "--node", "n1").returncode == 0


def test_config_commands_never_show_a_key(tmp_path: Path) -> None:
    for i, text in enumerate([AUTHKEYS, f"auth 2\n1 md5 {SECRET}\n2 sha1 {ROTATED}\n",
                              *BROKEN_AUTHKEYS]):
        directory = config_dir(tmp_path / f"ha.d-{i}", text)
        outputs = {
            "hbd --check-config": hbd("--check-config", "--config-dir", str(directory),
                                      "--node", "n1"),
            "hbctl config": hbctl("config", "--config-dir", str(directory), "--node", "n1"),
            "hbctl export pacemaker": hbctl("export", "pacemaker", "--config-dir",
                                            str(directory), "--node", "n1", "--no-probe",
                                            "--output-dir", str(tmp_path / f"export-{i}")),
        }
        for command, res in outputs.items():
            assert_no_key(f"{command} ({text!r})", res.stdout + res.stderr)
        if i < 2:  # the good files: configuration OK, export written
            assert outputs["hbd --check-config"].returncode == 0
            assert "auth: signing with key" in outputs["hbd --check-config"].stdout
            for written in (tmp_path / f"export-{i}").iterdir():
                assert_no_key(f"export {written.name}", written.read_text())
        else:  # refused, or (a key of two words) accepted with a warning
            assert outputs["hbd --check-config"].returncode in (0, 1)
            assert "Traceback" not in outputs["hbd --check-config"].stderr


# --- two daemons at work -------------------------------------------------------------------

@dataclass
class Cluster:
    lab: Lab
    bus: PrivateBus
    n1: HbdNode  # D-Bus, journal (stand-in)
    n2: HbdNode  # stderr, logfile, debugfile
    journal: Path
    logfiles: tuple[Path, Path]

    def rewrite_authkeys(self, text: str, mode: int = 0o600) -> None:
        for node in (self.n1, self.n2):
            path = node.config_dir / "authkeys"
            path.write_text(text)
            os.chmod(path, mode)

    def reload_n1(self) -> str:
        """D-Bus Reload as root; the error text when refused, else ""."""
        try:
            self.bus.busctl("call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Reload")
        except PrivBusError as err:
            return str(err)
        return ""


@pytest.fixture(scope="module")
def cluster(module_make_lab: LabFactory, private_bus: PrivateBus,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    install_hbd_files(private_bus)
    lab = module_make_lab(("n1", "n2", "client"), networks=1)
    start_responders(lab)
    scratch = tmp_path_factory.mktemp("secrets")
    shim = scratch / "shim"
    shim.mkdir(parents=True)
    (shim / "sitecustomize.py").write_text(JOURNAL_SHIM)
    journal = scratch / "journal.jsonl"
    logfiles = (scratch / "ha-log", scratch / "ha-debug")
    hacf = ha_cf("bcast eth0", extra="auto_failback off\n")
    n1 = HbdNode(lab, "n1", hacf, f"n1 {GROUP}\n", AUTHKEYS, extra_args=("--debug",), env={
        "PYTHONPATH": f"{shim}:{ROOT}", "JOURNAL_STREAM": "8:12345",
        "HBD_TEST_JOURNAL": str(journal), "DBUS_SYSTEM_BUS_ADDRESS": private_bus.address})
    n2 = HbdNode(lab, "n2", hacf + f"logfile {logfiles[0]}\ndebugfile {logfiles[1]}\n",
                 f"n1 {GROUP}\n", AUTHKEYS, extra_args=("--no-dbus", "--debug"))
    found = Cluster(lab, private_bus, n1, n2, journal, logfiles)
    try:
        n1.start()
        n2.start()
        n1.wait_log(r"owning org\.linuxha\.hbd1 on the system bus")
        n1.wait_log(r"Status update for node n2: status active")
        n2.wait_log(r"Status update for node n1: status active")
        wait_answer(lab, VIP, "n1")
        yield found
    finally:
        n1.stop()
        n2.stop()


def test_keys_never_in_logs_journal_files_or_bus(cluster: Cluster) -> None:
    lab, n1, n2 = cluster.lab, cluster.n1, cluster.n2
    # forged packets: counted and reported, never with a key
    attack = [forged("n1", "status", [("st", "dead")], WRONG_KEYS, seq=s) for s in range(50)]
    path = lab.node_dir("client") / "attack.bin"
    path.write_bytes(b"".join(len(p).to_bytes(4, "big") + p for p in attack))
    # from n1's address (IP_TRANSPARENT): a third host's datagrams stop in the kernel's
    # socket filter once the peers are heard, and these must reach hbd's MAC check
    script = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              "s.setsockopt(socket.SOL_IP,19,1);s.bind((sys.argv[3],0))\n"
              "b=open(sys.argv[1],'rb').read();i=0\n"
              "while i<len(b):\n n=int.from_bytes(b[i:i+4],'big');"
              "s.sendto(b[i+4:i+4+n],(sys.argv[2],694));i+=4+n\n")
    lab.run("client", [sys.executable, "-c", script, str(path), lab.ip("n2"), lab.ip("n1")])
    n2.wait_log(r"bad MAC under key 1")
    # reloads refused: the key in awkward places, then a loose file mode
    errors = []
    for text in BROKEN_AUTHKEYS[:3]:
        mark = n2.mark()
        cluster.rewrite_authkeys(text)
        n2.signal(1)  # SIGHUP
        n2.wait_log(r"reload refused, keeping the running configuration", since=mark)
        errors.append(cluster.reload_n1())
        assert "InvalidConfig" in errors[-1] or "authkeys" in errors[-1], errors[-1]
    mark = n2.mark()
    cluster.rewrite_authkeys(AUTHKEYS, mode=0o644)
    n2.signal(1)
    n2.wait_log(r"is readable by group or others \(mode 644\): run 'chmod 600", since=mark)
    # a key rotation both nodes accept, then a handover over D-Bus
    mark1, mark2 = n1.mark(), n2.mark()
    cluster.rewrite_authkeys(f"auth 2\n1 sha1 {SECRET}\n2 sha1 {ROTATED}\n")
    n2.signal(1)
    n2.wait_log(r"configuration reloaded", since=mark2)
    assert cluster.reload_n1() == ""
    n1.wait_log(r"configuration reloaded", since=mark1)
    cluster.bus.busctl("call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Release", "s", "all")
    wait_answer(lab, VIP, "n2", timeout=10)
    time.sleep(1.0)
    assert "is dead" not in n1.log()[mark1:] + n2.log()[mark2:], "the rotation broke the cluster"

    # everything the daemons wrote or show
    assert_no_key("D-Bus Reload errors", "\n".join(errors))
    assert_no_key("n1 stderr", n1.log())
    assert_no_key("n2 stderr", n2.log())
    for logfile in cluster.logfiles:
        text = logfile.read_text()
        assert "debug:" in text or logfile.name == "ha-log"
        assert_no_key(logfile.name, text)
    records = [json.loads(line) for line in cluster.journal.read_text().splitlines()]
    assert len(records) > 30 and any(r.get("PRIORITY") == "7" for r in records)  # debug too
    assert {"MESSAGE_ID", "HBD_NODE", "CODE_FILE"} <= {k for r in records for k in r}
    assert_no_key("journal fields", cluster.journal.read_text())
    for node in (n1, n2):
        for sub in ("state", "run"):
            for path in (node.dir / sub).rglob("*"):
                if path.is_file():
                    assert_no_key(str(path), path.read_bytes().decode(errors="replace"))
    shown = []
    for path in cluster.bus.busctl("tree", "--list", BUS_NAME).split():
        shown.append(cluster.bus.busctl("introspect", BUS_NAME, path))  # with property values
        shown.append(cluster.bus.busctl("call", BUS_NAME, path,
                                        "org.freedesktop.DBus.Introspectable", "Introspect"))
    assert any(GROUP in text for text in shown)
    assert_no_key("D-Bus objects", "\n".join(shown))
    bus_env = {"DBUS_SYSTEM_BUS_ADDRESS": cluster.bus.address}
    for argv in (["status"], ["nodes"], ["links"], ["groups"], ["--json", "status"],
                 ["rscstatus"], ["listnodes"]):
        res = hbctl(*argv, env=bus_env)
        assert res.returncode == 0, res
        assert_no_key(f"hbctl {' '.join(argv)}", res.stdout + res.stderr)


def test_unprivileged_bus_management_refused(cluster: Cluster) -> None:
    holder = "n2" if cluster.lab.has_address("n2", VIP) else "n1"
    mark = cluster.n1.mark()
    replies = []
    for member, args in (("Takeover", ["string:all"]), ("Release", ["string:all"]),
                         ("Reload", []), ("Cleanup", [f"string:{GROUP}"])):
        res = dbus_send(cluster.bus, "hbdtest", member, *args)
        assert res.returncode != 0 and "org.linuxha.hbd1.Error.NotAuthorized" in res.stderr, res
        replies.append(res.stderr)
    res = cluster.bus.run_as("hbdtest", [sys.executable, "-m", "hbd.cli.hbctl", "takeover"],
                             env={"PYTHONPATH": str(ROOT)})
    assert res.returncode == 4, res  # hbctl's "not authorized"
    assert_no_key("refusals", "\n".join(replies) + res.stdout + res.stderr)
    time.sleep(1.0)
    wait_for(lambda: cluster.lab.has_address(holder, VIP), 1, "the VIP where it was")
    tail = cluster.n1.log()[mark:]
    assert "requested" not in tail and "reloaded" not in tail, tail
