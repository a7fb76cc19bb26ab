"""corosync.conf from ha.cf: unit tests, then the real corosync 3.

Every generated corosync.conf is checked with `corosync -t` inside a private
mount and network namespace (`unshare --mount --net`): /etc/corosync is a
tmpfs holding the file and a fresh authkey, /etc/hosts is a private copy
that makes the placeholder names resolve, and the first node's addresses are
put on the namespace's loopback so corosync finds its own node.  The host's
/etc/corosync is never touched.  For two configurations, two corosync
processes then really start in two network namespaces joined by veth pairs
(one per knet link) and must form a quorate two-node membership over the
encrypted links.  Every process lives in a PID namespace that dies with the
test's `unshare`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hbd.core.config import ClusterConfig
from hbd.export import HostView, Sources, export
from hbd.export.corosync import render_corosync, token_ms
from tests.export_scenarios import ALL, IPV6, SEED, TWO_HOMES, WEB, Scenario
from tests.infra import commands
from tests.infra.corosync import need_corosync_tools, private_mounts_script


def _conf(scenario: Scenario, host: HostView | None = None) -> str:
    return render_corosync(scenario.config(), host or scenario.host).text


def _node_block(text: str, name: str) -> dict[str, str]:
    block = text.split(f"name: {name}\n", 1)[1].split("}", 1)[0]
    return dict(re.findall(r"^\s+(\w+): (\S+)$", block, re.M))


# --- unit tests ------------------------------------------------------------------

@pytest.mark.parametrize("deadtime,token", [(30000, 13600), (5000, 2300), (500, 1000),
                                            (10000, 4500)])
def test_token_gives_heartbeats_detection_time(deadtime: int, token: int) -> None:
    assert token_ms(deadtime) == token


def test_seed_corosync_conf() -> None:
    result = render_corosync(SEED.config(), sources=Sources("ha.cf"))
    text = result.text
    for line in ("cluster_name: linux-ha", "transport: knet", "crypto_cipher: aes256",
                 "crypto_hash: sha256", "token: 2300", "two_node: 1",
                 "provider: corosync_votequorum"):
        assert f"    {line}\n" in text, line
    assert _node_block(text, "n1") == {"nodeid": "1", "ring0_addr": "n1"}
    assert _node_block(text, "n2") == {"nodeid": "2", "ring0_addr": "n2"}
    assert text.count("linknumber:") == 1  # bcast eth0; the serial line has no counterpart
    assert result.placeholders == ("n1", "n2")
    notes = [str(n) for n in result.notes]
    assert any(n.startswith("ha.cf:8: link 0 (bcast eth0): ha.cf names no address")
               for n in notes)
    assert any(n.startswith("ha.cf:13: serial /dev/ttyS0: not carried over") for n in notes)
    assert "to_syslog: no" in text  # ha.cf has no logfacility


def test_shared_ucast_file_on_a_cluster_node() -> None:
    """Both ucast addresses listed; this machine is db1 and owns one of them."""
    text = _conf(TWO_HOMES)
    assert _node_block(text, "db1") == {"nodeid": "1", "ring0_addr": "198.51.100.1",
                                        "ring1_addr": "192.0.2.1"}
    assert _node_block(text, "db2") == {"nodeid": "2", "ring0_addr": "198.51.100.2",
                                        "ring1_addr": "db2-eth0"}


def test_shared_ucast_file_elsewhere_is_not_guessed() -> None:
    result = render_corosync(TWO_HOMES.config(), HostView())
    assert _node_block(result.text, "db1")["ring0_addr"] == "db1"
    assert any("cannot tell which node owns 198.51.100.1, 198.51.100.2" in n.message
               for n in result.notes)


def test_per_node_ucast_file_with_origin_node() -> None:
    text = _conf(IPV6)  # HostView(origin_node="left"): its lone ucast peer is "right"
    assert _node_block(text, "right")["ring0_addr"] == "203.0.113.2"
    assert _node_block(text, "left")["ring0_addr"] == "left"
    assert _node_block(text, "left")["ring1_addr"] == "left-eth1"


def test_logfacility_outside_corosyncs_list_becomes_daemon() -> None:
    scenario = Scenario("fac", WEB.hacf.replace("logfacility daemon", "logfacility user"),
                        WEB.haresources)
    result = render_corosync(scenario.config())
    assert "syslog_facility: daemon" in result.text
    assert any(n.message.startswith("logfacility user:") for n in result.notes)


def test_more_than_eight_networks() -> None:
    media = "".join(f"bcast eth{i}\n" for i in range(10))
    config = Scenario("many", media + "node a b\n", "a 192.0.2.1\n").config()
    result = render_corosync(config)
    assert result.text.count("linknumber:") == 8
    dropped = [n for n in result.notes if "at most 8 links" in n.message]
    assert [n.line for n in dropped] == [9, 10]


def test_corosync_stack_without_media() -> None:
    config: ClusterConfig = Scenario("cs", "cluster_stack corosync\nnode a b\n",
                                     "a 192.0.2.1\n").config()
    result = render_corosync(config)
    assert _node_block(result.text, "a")["ring0_addr"] == "a"
    assert any("no UDP medium" in n.message for n in result.notes)


# --- the real corosync --------------------------------------------------------------

def _nodes(text: str) -> list[dict[str, str]]:
    blocks = re.findall(r"node \{\n(.*?)\n\s+\}", text, re.S)
    return [dict(re.findall(r"^\s+(\w+): (\S+)$", b, re.M)) for b in blocks]


def _address_plan(text: str) -> tuple[dict[str, str], list[list[str]]]:
    """Hosts entries for placeholder names, and each node's addresses by link."""
    hosts: dict[str, str] = {}
    per_node: list[list[str]] = []
    for n, node in enumerate(_nodes(text), start=1):
        addresses = []
        for key in sorted(k for k in node if k.startswith("ring")):
            value = node[key]
            try:
                ipaddress.ip_address(value)
            except ValueError:
                link = int(key[4:key.index("_")])
                hosts[value] = f"10.{200 + link}.0.{n}"
                value = hosts[value]
            addresses.append(value)
        per_node.append(addresses)
    return hosts, per_node


_PRIVATE_ETC = "set -eu\n" + private_mounts_script() + """\
mkdir -p /var/log/corosync && mount -t tmpfs tmpfs /var/log/corosync
mount --bind "$WORK/hosts" /etc/hosts
cp "$WORK/corosync.conf" /etc/corosync/corosync.conf
corosync-keygen -k /etc/corosync/authkey >/dev/null 2>&1
"""


def _run_private(tmp_path: Path, text: str, hosts: dict[str, str], body: str,
                 timeout: int) -> subprocess.CompletedProcess[str]:
    (tmp_path / "corosync.conf").write_text(text)
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
        f"{address} {name}\n" for name, address in hosts.items()))
    (tmp_path / "run.sh").write_text(_PRIVATE_ETC + body)
    # --pid --fork --kill-child: every process started inside dies with unshare.
    return commands.run(
        ["unshare", "--mount", "--propagation", "private", "--net", "--pid", "--fork",
         "--kill-child", "sh", str(tmp_path / "run.sh")],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "WORK": str(tmp_path)})


@pytest.mark.netns
@pytest.mark.parametrize("scenario", ALL, ids=[s.name for s in ALL])
def test_corosync_t_accepts_every_conf(scenario: Scenario, tmp_path: Path) -> None:
    need_corosync_tools(libraries=False)
    text = export(scenario.config(), scenario.host).corosync
    hosts, per_node = _address_plan(text)
    local = "".join(f"ip addr add {a}/32 dev lo\n" for a in dict.fromkeys(per_node[0]))
    result = _run_private(tmp_path, text, hosts, "ip link set lo up\n" + local
                          + "exec corosync -t\n", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "exiting normally" in output, output
    assert "error" not in output.lower(), output


_TWO_NODES = """\
ip netns add a
ip netns add b
ip -n a link set lo up
ip -n b link set lo up
{links}
# Each node gets its own /run (corosync's pid lock) in its own mount namespace, waits
# until it is quorate, records its status and stops when told to.
for n in a b; do
    ip netns exec $n unshare --mount --propagation private sh -c '
        mount -t tmpfs tmpfs /run
        corosync -f >"$WORK/$0.log" 2>&1 &
        pid=$!
        for i in $(seq 1 60); do
            corosync-quorumtool -s 2>/dev/null | grep -q "Quorate: *Yes" && break
            sleep 0.5
        done
        sleep 1
        { corosync-quorumtool -s; corosync-cfgtool -s; corosync-cmapctl -b totem
          corosync-cmapctl -b quorum; } >"$WORK/$0.status" 2>&1 || true
        touch "$WORK/$0.ready"
        while [ ! -e "$WORK/stop" ]; do sleep 0.2; done
        kill $pid
        wait $pid || true
    ' $n &
done
for i in $(seq 1 100); do
    [ -e "$WORK/a.ready" ] && [ -e "$WORK/b.ready" ] && break
    sleep 0.5
done
touch "$WORK/stop"
wait
cat "$WORK/a.status" "$WORK/b.status"
"""


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.parametrize("scenario", [SEED, TWO_HOMES], ids=["seed", "two-homes"])
def test_two_corosyncs_form_a_quorate_cluster(scenario: Scenario, tmp_path: Path) -> None:
    need_corosync_tools(libraries=False)
    if shutil.which("corosync-quorumtool") is None:
        pytest.skip("corosync-quorumtool is not installed")
    text = export(scenario.config(), scenario.host).corosync
    hosts, (first, second) = _address_plan(text)
    links = []
    for k, (mine, theirs) in enumerate(zip(first, second, strict=True)):
        links += [
            f"ip link add va{k} netns a type veth peer name vb{k} netns b",
            f"ip -n a addr add {mine}/32 dev va{k}", f"ip -n b addr add {theirs}/32 dev vb{k}",
            f"ip -n a link set va{k} up", f"ip -n b link set vb{k} up",
            f"ip -n a route add {theirs}/32 dev va{k}", f"ip -n b route add {mine}/32 dev vb{k}",
        ]
    result = _run_private(tmp_path, text, hosts, _TWO_NODES.replace("{links}", "\n".join(links)),
                          timeout=180)
    output = result.stdout + result.stderr
    logs = "".join((tmp_path / f"{n}.log").read_text() for n in "ab"
                   if (tmp_path / f"{n}.log").exists())
    assert result.returncode == 0, output + logs
    assert re.search(r"Quorate:\s+Yes", output), output + logs
    assert re.search(r"Nodes:\s+2", output), output + logs
    assert "2Node" in output  # votequorum runs with two_node
    assert re.search(r"totem\.crypto_cipher \(str\) = aes256", output), output
    # each node reports every link, with its peer connected on it
    assert len(re.findall(r"LINK ID \d+", output)) == 2 * len(first), output
    assert len(re.findall(r"nodeid:\s+\d+:\s+connected", output)) == 2 * len(first), output
