"""Loaded at start-up by every Python process the tests start (it is first on their
PYTHONPATH, see tests/infra/commands.py): hbd, hbctl, the demo and the probes are
held to the same command table as the tests, and what they are refused reaches the
test that started them.  Outside a test run (no HBD_TEST_COMMAND_LOG) it does nothing.

Only the first sitecustomize on sys.path is imported, so this one then runs the
next one (a test's own stand-in, or the system's), as if it had not been here.
"""

import importlib.machinery
import importlib.util
import os
import sys

_log = os.environ.get("HBD_TEST_COMMAND_LOG")
if _log:
    try:
        from tests.infra import commands
    except Exception:  # never break a child: without the repository, nothing to hold it to
        pass
    else:
        demo = os.environ.get(commands.CHILD_TABLE_ENV) == "demo"
        commands.install_audit_hook(_log, commands.DEMO if demo else commands.TESTS)


def _run_next() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    later = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", later)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_run_next()
