"""The command tables against .ci/bootstrap and dpkg, and the enforcement behind them.

A fresh Debian 12 machine once failed every link-cutting test because `nft`
came from a package the bootstrap never installed.  These tests make that
class of mistake fail here instead: each declared package must be in the
bootstrap's list (the demo's in the demo's set), `dpkg -S` of each declared
command present on this machine must name the declared package, and running
an undeclared command, or skipping a test under `.ci/run`, must fail.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hbd.demo import commands as demo_commands
from tests.infra import commands
from tests.infra.commands import OWN, TESTS, UndeclaredCommand

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / ".ci" / "bootstrap"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNDECLARED = "hbd-test-undeclared-command"


def bootstrap_set(name: str) -> set[str]:
    """The packages of the bash array `name` in .ci/bootstrap (comments dropped)."""
    text = BOOTSTRAP.read_text()
    match = re.search(rf"^{name}=\((.*?)^\)", text, re.M | re.S)
    assert match, f"{name}=( ... ) not found in {BOOTSTRAP}"
    words = []
    for line in match.group(1).splitlines():
        words += line.split("#", 1)[0].split()
    return set(words)


def test_every_declared_package_is_bootstrapped() -> None:
    demo, rest = bootstrap_set("DEMO_PACKAGES"), bootstrap_set("TEST_PACKAGES")
    need_demo = set(demo_commands.DEMO_COMMANDS.values())
    need_all = {p for p in [*TESTS.commands.values(), *TESTS.paths.values()] if p != OWN}
    assert not need_demo - demo, f"missing from DEMO_PACKAGES: {sorted(need_demo - demo)}"
    missing = need_all - (demo | rest)
    assert not missing, f"declared but missing from .ci/bootstrap: {sorted(missing)}"


def test_demo_and_test_entry_points_ask_for_their_sets() -> None:
    ci = ROOT / ".ci"
    assert "bash .ci/bootstrap demo\n" in (ci / "demo").read_text()
    assert "bash .ci/bootstrap test\n" in (ci / "test").read_text()
    run = (ci / "run").read_text()
    assert "export HBD_CI_STRICT=1\n" in run and "bash .ci/bootstrap test\n" in run
    # the demo's set stays small: nothing of the peers, the packaging or the linters
    heavy = {"debhelper", "rpm", "lintian", "pcs", "crmsh", "heartbeat", "corosync",
             "keepalived", "devscripts", "pacemaker-cli-utils"}
    assert not heavy & bootstrap_set("DEMO_PACKAGES")


def _usrmerge_aliases(path: str) -> list[str]:
    """`path` and its other spelling: dpkg records /bin/ip while PATH finds /usr/sbin/ip."""
    out = [path]
    for short, full in (("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/"), ("/lib/", "/usr/lib/")):
        if path.startswith(full):
            out.append(short + path[len(full):])
        elif path.startswith(short):
            out.append(full + path[len(short):])
    # /usr/sbin/ip may be dpkg's /sbin/ip or /bin/ip (merged /usr: all the same dir)
    name = os.path.basename(path)
    out += [d + name for d in ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/")
            if os.path.dirname(path) in ("/bin", "/sbin", "/usr/bin", "/usr/sbin")]
    return list(dict.fromkeys(out))


def dpkg_owners(path: str) -> set[str]:
    """Packages dpkg says own `path` (or its usrmerge alias, or what it links to)."""
    candidates = _usrmerge_aliases(path)
    real = os.path.realpath(path)
    if real != path:
        candidates += _usrmerge_aliases(real)
    for candidate in candidates:
        res = commands.run(["dpkg", "-S", candidate], capture_output=True, text=True,
                           timeout=60)
        owners: set[str] = set()
        for line in res.stdout.splitlines():
            if line.startswith("diversion by"):
                continue
            pkgs, _, owned = line.rpartition(": ")
            if owned == candidate:
                owners |= {p.strip().split(":")[0] for p in pkgs.split(",")}
        if owners:
            return owners
    return set()


def _declared_on_this_machine() -> list[tuple[str, str, str]]:
    found = []
    for name, package in sorted(TESTS.commands.items()):
        path = shutil.which(name, path=SYSTEM_PATH)
        if path is not None and package != OWN:
            found.append((name, path, package))
    for path, package in sorted(TESTS.paths.items()):
        if package != OWN and os.path.exists(path):
            found.append((path, path.rstrip("/"), package))
    return found


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian system (no dpkg)")
def test_dpkg_names_the_declared_package() -> None:
    found = _declared_on_this_machine()
    assert len(found) > 20, found  # the check is not vacuous on a bootstrapped machine
    wrong = {}
    for name, path, package in found:
        owners = dpkg_owners(path)
        if package not in owners:
            wrong[name] = f"{path}: declared {package}, dpkg -S says {sorted(owners)}"
    assert not wrong, wrong


def test_usrmerge_aliases() -> None:
    assert "/sbin/ip" in _usrmerge_aliases("/usr/sbin/ip")
    assert "/bin/ip" in _usrmerge_aliases("/usr/sbin/ip")
    assert "/usr/lib/polkit-1/polkitd" in _usrmerge_aliases("/lib/polkit-1/polkitd")


# --- what counts as declared -------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["ip", "-n", "x", "link"],
    ["ip", "netns", "exec", "ns1", "nft", "-f", "-"],
    ["setpriv", "--pdeathsig", "KILL", "--", "ip", "netns", "exec", "ns1", "sleep", "1"],
    ["nsenter", "-t", "1", "-m", "-u", "--wd=/", "--", "cl_status", "rscstatus"],
    ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", 'exec "$@"', "sh",
     "keepalived", "-n"],
    ["env", "A=1", "PATH=/usr/bin", "busctl", "status"],
    ["timeout", "-s", "KILL", "5", "corosync", "-f"],
    ["/usr/sbin/ip", "link"],
    ["/usr/lib/ocf/resource.d/heartbeat/IPaddr2", "start"],
    [sys.executable, "-m", "hbd"],
    [str(ROOT / "packaging" / "build-deb"), "/tmp/out"],
    ["/tmp/some-test/agent.sh", "start"],  # a test's own script
    ["sh", "-c", "echo hello"],  # an opaque script
    ["/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", "/sys/fs/cgroup/x/procs",
     "setpriv", "--", "unshare", "--mount", "--", "/bin/sh", "/tmp/x/init.sh"],
])
def test_declared_command_lines_pass(argv: list[str]) -> None:
    TESTS.check(argv)


@pytest.mark.parametrize("argv", [
    [UNDECLARED],
    ["/usr/bin/" + UNDECLARED],
    ["/opt/vendor/bin/ip"],  # a known name in an unknown place is not the package's
    ["ip", "netns", "exec", "ns1", UNDECLARED],
    ["setpriv", "--pdeathsig", "KILL", "--", "ip", "netns", "exec", "ns1", UNDECLARED],
    ["setpriv", "--reuid=1000", "--init-groups", UNDECLARED],
    ["nsenter", "-t", "1", "-m", "--", UNDECLARED],
    ["unshare", "--mount", "--", "sh", "-c", 'mount --bind a b; exec "$@"', "sh", UNDECLARED],
    ["env", "A=1", UNDECLARED],
    ["sh", "-c", 'echo $$ > "$1"; shift; exec "$@"', "sh", "/tmp/pidfile", UNDECLARED],
    ["timeout", "5", UNDECLARED],
    ["systemd-run", "--wait", "-p", "Type=oneshot", UNDECLARED],
])
def test_undeclared_command_lines_are_refused(argv: list[str]) -> None:
    with pytest.raises(UndeclaredCommand, match=UNDECLARED.replace("-", ".") + "|/opt/"):
        TESTS.check(argv)


def test_the_demo_table_refuses_what_only_tests_declare() -> None:
    demo_commands.DEMO.check(["ip", "netns", "exec", "x", "sysctl", "-qw", "a=1"])
    with pytest.raises(UndeclaredCommand, match="'nft'"):
        demo_commands.run(["ip", "netns", "exec", "x", "nft", "-f", "-"])


# --- enforcement: every way of starting a process ----------------------------------------


def test_checked_runners_refuse_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with commands.expect_refusal():
        with pytest.raises(UndeclaredCommand):
            commands.run([UNDECLARED, str(marker)])
        with pytest.raises(UndeclaredCommand):
            commands.popen(["setpriv", "--", UNDECLARED])
    assert not marker.exists()


def test_audit_hook_refuses_raw_subprocess_exec_and_spawn() -> None:
    with commands.expect_refusal():
        with pytest.raises(UndeclaredCommand):
            subprocess.run([UNDECLARED], check=False)
        with pytest.raises(UndeclaredCommand):
            subprocess.Popen(["ip", "netns", "exec", "x", UNDECLARED])
        with pytest.raises(UndeclaredCommand):
            os.posix_spawn("/usr/bin/" + UNDECLARED, [UNDECLARED], {})
        with pytest.raises(UndeclaredCommand):
            os.execv("/usr/bin/" + UNDECLARED, [UNDECLARED])
        with pytest.raises(UndeclaredCommand):
            asyncio.run(asyncio.create_subprocess_exec(UNDECLARED))
    assert commands.take_violations() == []  # tolerated here, and only here


def _pytest_on(tmp_path: Path, source: str, *, strict: bool) -> subprocess.CompletedProcess[str]:
    """Run pytest, with this repository's conftest as a plugin, on a small test file."""
    test = tmp_path / "test_probe.py"
    test.write_text(textwrap.dedent(source))
    # the inner run is on its own: not strict unless asked, not reporting to this run
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "HBD_CI", commands.CHILD_LOG_ENV))}
    env["PYTHONPATH"] = str(ROOT)
    if strict:
        env["HBD_CI_STRICT"] = "1"
    return commands.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-rA", "-p",
         "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull, str(test)],
        capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))


def test_a_swallowed_refusal_still_fails_the_test(tmp_path: Path) -> None:
    res = _pytest_on(tmp_path, f"""
        import contextlib, os, subprocess, sys
        def test_swallows():
            with contextlib.suppress(Exception):
                subprocess.run(["{UNDECLARED}"])
        def test_declared():
            subprocess.run(["sh", "-c", "true"], check=True)
        def test_child_swallows():
            # a Python child (hbd, hbctl, the demo) is held to the table too
            code = ("import contextlib, subprocess\\n"
                    "with contextlib.suppress(Exception): subprocess.run(['{UNDECLARED}'])")
            subprocess.run([sys.executable, "-c", code], check=True)
        def test_demo_child_runs_only_the_demos_commands():
            # nft is the tests' (nftables), not the demo's: .ci/demo does not install it
            code = "import subprocess\\nsubprocess.run(['nft', '--version'])"
            env = dict(os.environ, {commands.CHILD_TABLE_ENV}="demo")
            subprocess.run([sys.executable, "-c", code], env=env, check=False)
        """, strict=False)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED test_probe.py::test_swallows" in res.stdout, res.stdout
    assert "FAILED test_probe.py::test_child_swallows" in res.stdout, res.stdout
    assert f"'{UNDECLARED}' is not a declared command" in res.stdout
    assert "in a child, pid" in res.stdout, res.stdout
    assert "FAILED test_probe.py::test_demo_child_runs_only_the_demos_commands" in res.stdout
    assert "'nft' is not a declared command" in res.stdout, res.stdout
    assert "PASSED test_probe.py::test_declared" in res.stdout, res.stdout


SKIPPING = """
    import pytest
    def test_runtime_skip():
        pytest.skip("socat not installed")
    @pytest.mark.skipif(True, reason="marked away")
    def test_marked_skip():
        pass
    @pytest.mark.xfail(reason="known bug", strict=True)
    def test_expected_failure():
        assert False
    def test_fine():
        pass
    """


def test_skips_pass_outside_ci(tmp_path: Path) -> None:
    res = _pytest_on(tmp_path, SKIPPING, strict=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed, 2 skipped, 1 xfailed" in res.stdout, res.stdout


def test_skips_fail_under_ci_strict(tmp_path: Path) -> None:
    res = _pytest_on(tmp_path, SKIPPING, strict=True)
    assert res.returncode == 1, res.stdout + res.stderr
    # a skip at set-up (a mark, a fixture) shows as an error, at run time as a failure
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in res.stdout, res.stdout
    assert "skipped under HBD_CI_STRICT=1" in res.stdout
    assert "socat not installed" in res.stdout and "marked away" in res.stdout


def test_module_level_skip_fails_under_ci_strict(tmp_path: Path) -> None:
    source = """
        import pytest
        pytest.skip("no corosync here", allow_module_level=True)
        def test_never():
            pass
        """
    res = _pytest_on(tmp_path, source, strict=False)
    assert "1 skipped" in res.stdout and res.returncode == pytest.ExitCode.NO_TESTS_COLLECTED
    res = _pytest_on(tmp_path, source, strict=True)
    assert res.returncode == pytest.ExitCode.INTERRUPTED, res.stdout + res.stderr
    assert "module skipped under HBD_CI_STRICT=1" in res.stdout, res.stdout
    assert "no corosync here" in res.stdout, res.stdout


# --- nothing starts processes beside the runners ------------------------------------------

_RAW = {("subprocess", "run"), ("subprocess", "Popen"), ("subprocess", "call"),
        ("subprocess", "check_call"), ("subprocess", "check_output"), ("os", "system"),
        ("os", "posix_spawn"), ("os", "posix_spawnp"), ("os", "execv"), ("os", "execvp"),
        ("os", "execve"), ("os", "execvpe"), ("asyncio", "create_subprocess_exec"),
        ("asyncio", "create_subprocess_shell")}
_RUNNERS = {ROOT / "hbd" / "demo" / "commands.py", ROOT / "tests" / "infra" / "commands.py",
            Path(__file__).resolve()}


def test_demo_tests_and_benchmarks_start_processes_only_through_the_runners() -> None:
    raw = []
    for top in ("hbd/demo", "tests", "benchmarks"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.resolve() in _RUNNERS:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name)
                        and (node.func.value.id, node.func.attr) in _RAW):
                    raw.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                               f"{node.func.value.id}.{node.func.attr}")
    assert not raw, "use tests/infra/commands.py (or hbd/demo/commands.py) instead:\n" + \
        "\n".join(raw)
