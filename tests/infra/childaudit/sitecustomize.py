"""Loaded at start-up by every Python process the tests start (it is first on their
PYTHONPATH, see tests/infra/commands.py): hbd, hbctl, the demo and the probes are
held to the same command table as the tests, and what they are refused reaches the
test that started them.  Outside a test run (no HBD_TEST_COMMAND_LOG) it does nothing.
"""

import os

_log = os.environ.get("HBD_TEST_COMMAND_LOG")
if _log:
    try:
        from tests.infra import commands
    except Exception:  # never break a child: without the repository, nothing to hold it to
        pass
    else:
        demo = os.environ.get(commands.CHILD_TABLE_ENV) == "demo"
        commands.install_audit_hook(_log, commands.DEMO if demo else commands.TESTS)
