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
    title: document.title,
    scrollWidth: document.documentElement.scrollWidth,
    openScrollWidth: (function () {
      document.querySelectorAll("details").forEach(function (d) { d.open = true; });
      return document.documentElement.scrollWidth;
    })(),
    summaryRight: document.querySelector("table#summary").getBoundingClientRect().right,
    summaryInnerScroll: (function (wrap) { return wrap.scrollWidth - wrap.clientWidth; })(
      document.querySelector("table#summary").parentNode),
    thumbnails: document.querySelectorAll("#errors .thumb img").length,
    allThumbnails: document.querySelectorAll(".thumb img").length,
    sortedByHead: (function () {
      var heads = Array.from(document.querySelectorAll("table#summary th"));
      var head = heads.find(function (h) { return h.textContent === "head"; });
      head.click();
      var column = heads.indexOf(head);
      return Array.from(document.querySelectorAll("table#summary tbody tr")).map(function (r) {
        return r.cells[column].textContent;
      });
    })()
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


LONG_BASE = "/home/a-user-with-a-long-name/projects/transfer/bases/base-d474d63db627feef.keras:features"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "runs"
    make_run(root, f"evil {HOSTILE}", classes=[HOSTILE, QUOTES], images=True)
    make_run(root, "resnet-svm", backbone="keras:ResNet50", head="svm", val=0.7, images_per_second=20.0, seed=1)
    make_run(root, "ft", path="end-to-end", val=0.9, test=0.6, fit=40, history=make_history(), images=True,
             backbone=LONG_BASE, seed=2)
    for i, head in enumerate(["logreg", "dense", "linear-svm", "knn"]):  # long labels, long paths
        make_run(root, f"long-{head}", backbone=LONG_BASE, head=head, val=0.8, test=0.75 + i / 100, seed=3 + i)
    return write_report([root], tmp_path_factory.mktemp("report"), title=f"Report {QUOTES}", smooth=0.6)


def _probe(report, tmp_path, width):
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(report["html"].read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom",
                    probe_page.as_uri())
    found = re.search(r'<pre id="featpipe-probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: the page never finished loading"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.slow
def test_every_image_loads_the_page_fits_1280_px_and_the_table_sorts(report, tmp_path):
    state = _probe(report, tmp_path, 1280)
    thumbnails = state["thumbnails"]
    assert thumbnails >= 8  # the best run's mistakes, read from the dataset
    assert len(state["images"]) == len(report["plots"]) + state["allThumbnails"]  # each figure once
    for image in state["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert state["summaryRows"] == 7
    assert state["scripts"] == 2  # the report's sorting script and the probe: no user text became a script
    assert state["title"] == f"Report {QUOTES}"
    # At a 1280-px window the page never scrolls sideways, with every run's details open too.
    assert state["scrollWidth"] <= 1280 and state["openScrollWidth"] <= 1280, state
    # ... and the summary table is whole on screen, not scrolling inside its own box.
    assert state["summaryRight"] <= 1280 and state["summaryInnerScroll"] == 0, state
    assert state["sortedByHead"] == sorted(state["sortedByHead"])


@pytest.mark.slow
def test_report_renders_as_is(report, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", report["html"].as_uri())
    assert '<table id="summary" class="sortable">' in dom
    assert HOSTILE not in dom and dom.count("<script") == 1
    screenshot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1280,1400", f"--screenshot={screenshot}", report["html"].as_uri())
    pixels = mpimg.imread(screenshot)
    assert pixels.shape[:2] == (1400, 1280)
    assert pixels.std() > 0.01  # something was drawn, not a blank page


@pytest.mark.slow
def test_a_report_of_200_runs_stays_usable(tmp_path):
    """200 runs: the page still fits 1280 px, the table holds them all, per-run figures stay bounded."""
    root = tmp_path / "runs"
    heads = ["logreg", "svm", "dense", "linear-svm", "knn"]
    bases = ["keras:VGG16", "keras:ResNet50", "keras:MobileNet(alpha=0.25)", "keras:EfficientNetB0", LONG_BASE]
    i = 0
    for base in bases:
        for size in (96, 160, 224, 299):
            for head in heads:
                for pretrained in (True, False):
                    i += 1
                    make_run(root, f"run{i}", backbone=base, head=head, image_size=(size, size),
                             pretrained=pretrained, val=0.5 + (i % 17) / 40, test=0.6 + (i % 13) / 40, seed=i,
                             images=i == 1)
    report = write_report([root], tmp_path / "report")
    assert len([p for p in report["plots"] if p.name.startswith("confusion_")]) == 25
    state = _probe(report, tmp_path, 1280)
    assert state["summaryRows"] == 200
    assert state["scrollWidth"] <= 1280 and state["openScrollWidth"] <= 1280, state
    assert state["summaryRight"] <= 1280 and state["summaryInnerScroll"] == 0, state
    summary = json.loads(report["summary_json"].read_text())
    labels = [row["label"] for row in summary["runs"]]
    assert len(set(labels)) == 200 and all(len(label) <= 48 and "/" not in label for label in labels)
