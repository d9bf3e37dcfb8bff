"""featpipe.collector: a command's or worker's process collects its youngest generation less often and freezes
the objects alive at exit in its last exit handler, once. Each case is a real process (changing the test
process's collector would change every test after it)."""

import json
import subprocess
import sys

from featpipe.collector import YOUNG_THRESHOLD

# Exit handlers run last registered first: one registered before the code under test runs after its handlers,
# one registered after runs before them. Each prints whether the collector's permanent generation holds objects,
# and the collector's first threshold.
REPORT = ("import atexit, gc; atexit.register(lambda: print('{when}', gc.get_freeze_count() > 0, "
          "gc.get_threshold()[0], flush=True))")


def _ending(code: str, stdin: str = "") -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=120)
    return [line for line in result.stdout.splitlines() if line.startswith(("first", "later"))]


def test_python_default_is_what_it_changes():
    # In a process of its own: the CLI tests that run here in-process set this process's collector.
    (line,) = _ending(REPORT.format(when="first"))
    _, frozen, threshold = line.split()
    assert frozen == "False" and int(threshold) < YOUNG_THRESHOLD


def test_collects_less_often_and_freezes_after_every_other_exit_handler():
    code = "; ".join([REPORT.format(when="first"), "from featpipe.collector import collect_for_a_command",
                      "collect_for_a_command()", REPORT.format(when="later")])
    assert _ending(code) == [f"later False {YOUNG_THRESHOLD}", f"first True {YOUNG_THRESHOLD}"]


def test_a_second_call_moves_the_one_exit_handler():
    # gc.freeze counted: registered twice, it would be called twice at exit.
    code = "; ".join(["import gc", "freeze = gc.freeze", "gc.freeze = lambda: print('later freeze') or freeze()",
                      REPORT.format(when="first"), "from featpipe.collector import collect_for_a_command as c",
                      "c()", REPORT.format(when="later"), "c()"])
    assert _ending(code) == ["later freeze", f"later True {YOUNG_THRESHOLD}", f"first True {YOUNG_THRESHOLD}"]


def test_a_command_sets_it():
    code = "; ".join([REPORT.format(when="first"), "from featpipe.cli import main", "main(['backbones'])"])
    assert _ending(code) == [f"first True {YOUNG_THRESHOLD}"]


def test_a_worker_sets_it():
    # A request from another parent (pid 1): the worker ends before any work, through its exit handlers.
    code = "; ".join([REPORT.format(when="first"), "from featpipe.worker import main", "main()"])
    assert _ending(code, json.dumps({"parent": 1, "job": {}, "parts": []})) == [f"first True {YOUNG_THRESHOLD}"]
