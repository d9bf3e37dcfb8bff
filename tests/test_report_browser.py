"""report.html in a real browser: headless Chromium loads it from disk, offline, and every plot decodes."""

import html
import json
import re
import shutil
import subprocess

import pytest
from matplotlib import image as mpimg

from featpipe.report import write_report
from report_fixtures import HOSTILE, QUOTES, make_history, make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Appended to a copy of the report (never to the report itself): once the page has loaded, record
# what the browser made of it in an element that --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", function () {
  var out = document.createElement("pre");
  out.id = "featpipe-probe";
  out.textContent = JSON.stringify({
    images: Array.from(document.images).map(function (i) {
      return {complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
    }),
    summaryRows: document.querySelectorAll("table#summary tbody tr").length,
    scripts: document.scripts.length,
    title: document.title
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium(tmp_path, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_run(root, f"evil {HOSTILE}", classes=[HOSTILE, QUOTES])
    make_run(root, "resnet-svm", backbone="keras:ResNet50", head="svm", val=0.7, images_per_second=20.0)
    make_run(root, "ft", path="end-to-end", val=0.9, fit=40, history=make_history())
    return write_report([root], tmp_path_factory.mktemp("report"), title=f"Report {QUOTES}", smooth=0.6)


@pytest.mark.slow
def test_every_plot_image_loads_and_the_summary_table_is_there(report, tmp_path):
    page = report["html"].read_text()
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe_page.as_uri())
    found = re.search(r'<pre id="featpipe-probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: the page never finished loading"
    state = json.loads(html.unescape(found.group(1)))
    assert len(state["images"]) == len(report["plots"]) >= 6
    for image in state["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert state["summaryRows"] == 3
    assert state["scripts"] == 1  # only the probe: no user text became a script element
    assert state["title"] == f"Report {QUOTES}"


@pytest.mark.slow
def test_report_renders_as_is(report, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", report["html"].as_uri())
    assert '<table id="summary">' in dom
    assert HOSTILE not in dom and "<script" not in dom
    screenshot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1000,1400", f"--screenshot={screenshot}", report["html"].as_uri())
    pixels = mpimg.imread(screenshot)
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels.std() > 0.01  # something was drawn, not a blank page
