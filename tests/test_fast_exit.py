"""featpipe.fast_exit: the objects alive at exit are frozen by the last exit handler, once, in the CLI and the
worker processes. Each case is a real process ending (freezing the test process would keep its garbage)."""

import json
import subprocess
import sys

# Exit handlers run last registered first: one registered before the code under test runs after its handlers,
# one registered after runs before them. Each prints whether the collector's permanent generation holds objects.
REPORT = "import atexit, gc; atexit.register(lambda: print('{when}', gc.get_freeze_count() > 0, flush=True))"


def _ending(code: str, stdin: str = "") -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=120)
    return [line for line in result.stdout.splitlines() if line.startswith(("first", "later"))]


def test_freezes_after_every_other_exit_handler():
    code = "; ".join([REPORT.format(when="first"), "from featpipe.fast_exit import skip_collection_at_exit",
                      "skip_collection_at_exit()", REPORT.format(when="later")])
    assert _ending(code) == ["later False", "first True"]


def test_a_second_call_moves_the_one_registration():
    # gc.freeze counted: registered twice, it would be called twice at exit.
    code = "; ".join(["import gc", "freeze = gc.freeze", "gc.freeze = lambda: print('later freeze') or freeze()",
                      REPORT.format(when="first"), "from featpipe.fast_exit import skip_collection_at_exit as s",
                      "s()", REPORT.format(when="later"), "s()"])
    assert _ending(code) == ["later freeze", "later True", "first True"]


def test_without_it_nothing_is_frozen():
    assert _ending(REPORT.format(when="first")) == ["first False"]


def test_a_command_freezes_at_exit():
    code = "; ".join([REPORT.format(when="first"), "from featpipe.cli import main", "main(['backbones'])"])
    assert _ending(code) == ["first True"]


def test_a_worker_freezes_at_exit():
    # A request from another parent (pid 1): the worker ends before any work, through its exit handlers.
    code = "; ".join([REPORT.format(when="first"), "from featpipe.worker import main", "main()"])
    assert _ending(code, json.dumps({"parent": 1, "job": {}, "parts": []})) == ["first True"]
