"""Configurations the Pacemaker export is tested on.

The seed capture, Heartbeat's annotated samples (every example directive of
ha.cf uncommented, each example group line of haresources, the sample keys),
and realistic multi-group clusters written the way admins wrote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hbd.core.assemble import ConfigTexts, check
from hbd.core.config import ClusterConfig
from hbd.core.hacf import KNOWN_DIRECTIVES
from hbd.export import HostView

DATA = Path(__file__).parent / "data"
CAPTURE = DATA / "capture"
SAMPLE = DATA / "debian-sample"


@dataclass(frozen=True)
class Scenario:
    name: str
    hacf: str
    haresources: str
    authkeys: str = "auth 1\n1 sha1 secret\n"
    host: HostView = field(default_factory=HostView)

    def texts(self) -> ConfigTexts:
        return ConfigTexts("ha.cf", self.hacf, "haresources", self.haresources,
                           "authkeys", self.authkeys, None)

    def config(self) -> ClusterConfig:
        nodes = re.findall(r"^node\s+(.+)$", self.hacf, re.M)
        first = nodes[0].split()[0].lower()
        config, problems = check(self.texts(), node_name=first, local_addresses=())
        assert config is not None, [str(p) for p in problems]
        return config

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ha.cf").write_text(self.hacf)
        (directory / "haresources").write_text(self.haresources)
        (directory / "authkeys").write_text(self.authkeys)
        return directory


def _uncomment_sample_hacf() -> str:
    lines = []
    for line in (SAMPLE / "ha.cf").read_text().splitlines():
        match = re.match(r"^#([a-z_0-9]+)(\s+\S.*)$", line)
        # msgfmt's example value is "classic/netstring", a choice rather than a value
        if match and match.group(1) in KNOWN_DIRECTIVES and match.group(1) != "msgfmt":
            lines.append(match.group(1) + match.group(2).split("#")[0])
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _sample_group_lines() -> list[str]:
    lines = []
    for line in (SAMPLE / "haresources").read_text().splitlines():
        match = re.match(r"^#(just\.linux-ha\.org|node1)(\s+.*)$", line)
        if match:
            lines.append(("ken3" if match.group(1) == "node1" else "kathy") + match.group(2))
    return lines


def _sample_authkeys() -> str:
    text = (SAMPLE / "authkeys").read_text()
    return re.sub(r"^#((auth|\d) .*)$", r"\1", text, flags=re.M)


SAMPLE_HACF = _uncomment_sample_hacf()
SAMPLE_GROUP_LINES = _sample_group_lines()

SEED = Scenario("seed", (CAPTURE / "ha.cf").read_text(), (CAPTURE / "haresources").read_text(),
                (CAPTURE / "authkeys").read_text())

SAMPLES = [
    Scenario(f"sample-{n}", SAMPLE_HACF, line + "\n", _sample_authkeys())
    for n, line in enumerate(SAMPLE_GROUP_LINES, start=1)
] + [Scenario("sample-all", SAMPLE_HACF, "\n".join(SAMPLE_GROUP_LINES[:1] + SAMPLE_GROUP_LINES[3:])
              + "\n", _sample_authkeys())]

WEB = Scenario("web", """\
cluster web
logfacility daemon
keepalive 1
deadtime 10
initdead 30
bcast eth0
serial /dev/ttyS0
auto_failback on
node web1 web2
""", """\
web1 IPaddr2::192.0.2.80/24/eth0 Filesystem::/dev/sdb1::/srv/www::ext4::noatime \\
     apache::/etc/apache2/apache2.conf
""")

TWO_HOMES = Scenario("two-homes", """\
keepalive 500ms
deadtime 5
initdead 10
ucast eth1 198.51.100.1
ucast eth1 198.51.100.2
bcast eth0
auto_failback off
node db1
node db2
""", """\
db1 192.0.2.10/24/eth0 Filesystem::/dev/vg0/pg::/var/lib/postgresql::ext4 postgresql
db2 192.0.2.20/24/eth0/192.0.2.255 Filesystem::/dev/vg0/www::/srv/www::xfs nginx::reload \\
    checkout::--fast
""", host=HostView(init_scripts=frozenset({"postgresql", "nginx"}),
                   resource_scripts=frozenset({"checkout"}),
                   ocf_agents={"nginx": "heartbeat"},
                   this_node="db1", addresses=(("eth0", "192.0.2.1"), ("eth1", "198.51.100.1"))))

PING = Scenario("ping", """\
logfacility local3
deadtime 20
deadping 15
mcast eth0 239.0.0.42 694 1 0
ping 192.0.2.254 192.0.2.253
ping_group uplinks 198.51.100.254 198.51.100.253
auto_failback legacy
respawn hacluster /usr/lib/heartbeat/ipfail
apiauth ipfail gid=haclient uid=hacluster
node gw1 gw2
""", """\
gw1 IPaddr::192.0.2.1/24/eth0 portblock::tcp::25,587::block Xinetd::tftp \\
    portblock::tcp::25,587::unblock
gw2 IPaddr::198.51.100.1/24/eth1 IPsrcaddr::198.51.100.1 SendArp::198.51.100.2/eth1
""", authkeys="auth 3\n3 md5 secret\n")

IPV6 = Scenario("ipv6", """\
udpport 6940
ucast eth2 203.0.113.2
mcast eth1 225.0.0.7 6940 2 1
serial /dev/ttyS1
nice_failback on
node left right
""", """\
left IPv6addr::2001:db8::80/64/eth0 IPv6addr::2001:db8::81 135.9.216.3/28/eth0/135.9.216.12
right 192.0.2.33 Delay::30::5 MailTo::ops@example.com::storage_failover
""", authkeys="auth 1\n1 crc\n", host=HostView(origin_node="left"))

STORAGE = Scenario("storage", """\
cluster storage
bcast eth0 eth1
watchdog /dev/watchdog
stonith_host * external/ipmi node1 10.0.0.1 admin secret lanplus
node store1 store2
""", """\
store1 drbddisk::r0 Filesystem::/dev/drbd0::/srv/nfs::ext4 LVM::vgdata \\
       OCF::exportfs::nfsroot 192.0.2.50/24/eth0 MailTo::root@example.com
store2 drbddisk::r1 Raid1::/etc/mdadm/mdadm.conf::/dev/md0 ServeRAID::1::2 ICP::c0h1::/dev/sdb \\
       LinuxSCSI::0:0:2:0 AudibleAlarm::store1::store2 WinPopup::/etc/winpopup.hosts WAS::9080 \\
       db2::db2inst1 ids::/opt/informix::ifx1::onconfig.ifx1
store1 drbddisk::r2
""", host=HostView(ocf_agents={"exportfs": "heartbeat"}, ocf_instances={
    ("exportfs", "nfsroot"):
        "# exported by the OCF wrapper\nOCF_RESKEY_clientspec=192.0.2.0/24\n"
        "OCF_RESKEY_directory=/srv/nfs\nexport OCF_RESKEY_fsid='1'\n"
        'OCF_RESKEY_options="rw,no_root_squash"\n'}))

# Three nodes run on hbd's corosync stack only (Heartbeat's own stack is two nodes).
THREE = Scenario("three-nodes", """\
cluster_stack corosync
bcast eth0
auto_failback on
node a b c
""", """\
a 192.0.2.101 unknownthing
b 192.0.2.102
c 192.0.2.103
""")

REALISTIC = [WEB, TWO_HOMES, PING, IPV6, STORAGE, THREE]
ALL = [SEED, *SAMPLES, *REALISTIC]
