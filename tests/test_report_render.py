import base64
import html
import json
import re
from html.parser import HTMLParser

import pytest

from featpipe.report import write_report
from featpipe.report.render import SORT_SCRIPT, _md
from report_fixtures import HOSTILE, QUOTES, make_history, make_run


class _Page(HTMLParser):
    """Collects tags, attributes and text of a page for structural assertions."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(text):
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    """Two finished runs and one crashed one, with markup and quotes in every user-provided field."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    root = tmp_path / "runs"
    make_run(root, f"evil {HOSTILE} {QUOTES}", backbone=f"keras:{HOSTILE}", head="logreg",
             classes=[HOSTILE, QUOTES, "plain"])
    make_run(root, "ft", path="end-to-end", val=0.9, fit=30, history=make_history())
    (root / f"dead {QUOTES}").mkdir()
    (root / f"dead {QUOTES}" / "metrics.json").write_text("{}")
    notes = [f"backbone weights were random-initialised {HOSTILE}"]
    return write_report([root], tmp_path / "out", title=f"Report {QUOTES}", notes=notes, smooth=0.5)


def test_user_text_is_escaped_in_html_never_raw(hostile_report):
    paths = hostile_report
    page = paths["html"].read_text()
    assert HOSTILE not in page and page.lower().count("<script") == 1  # the fixed sorting script only
    assert f"<script>{SORT_SCRIPT}</script>" in page
    assert QUOTES not in page
    assert html.escape(HOSTILE) in page
    assert html.escape(QUOTES) in page
    parsed = _parse(page)
    assert parsed.tags.count("script") == 1
    text = "".join(parsed.text)
    # The escaped text decodes back to exactly what the user wrote: class names, run names, notes, title.
    assert f"evil {HOSTILE} {QUOTES}" in text
    assert f"keras:{HOSTILE}" in text
    assert f"backbone weights were random-initialised {HOSTILE}" in text
    assert f"dead {QUOTES}" in text
    assert f"<title>Report {html.escape(QUOTES)}</title>" in page


def test_html_is_self_contained(hostile_report):
    paths = hostile_report
    page = paths["html"].read_text()
    parsed = _parse(page)
    assert not re.search(r"https?://", page)
    assert "link" not in parsed.tags and "iframe" not in parsed.tags
    assert [attrs for tag, attrs in parsed.attrs if tag == "script"] == [{}]  # inline, no src
    images = [attrs for tag, attrs in parsed.attrs if tag == "img"]
    assert len(images) == len(paths["plots"])  # each figure once; no thumbnails: the images are not there
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for tag, attrs in parsed.attrs:
        for name in ("src", "href"):
            assert name not in attrs or attrs[name].startswith(("data:", "#")), (tag, attrs)


def test_html_has_summary_table_verdict_and_sections(hostile_report):
    paths = hostile_report
    page = paths["html"].read_text()
    summary = json.loads(paths["summary_json"].read_text())
    table = re.search(r'<table id="summary" class="sortable">(.*?)</table>', page, re.S).group(1)
    assert table.count("<tr>") == 1 + len(summary["runs"])
    for line in summary["verdict"]["lines"]:
        assert html.escape(line) in page
    # The verdict comes before the summary table; notes come first of all.
    assert page.index("random-initialised") < page.index('id="verdict"') < page.index('id="summary"')
    for section in ("errors", "plots", "runs", "skipped"):
        assert f'id="{section}"' in page
    assert "no run.json" in page


def test_markdown_has_the_same_content_with_relative_images(hostile_report):
    paths = hostile_report
    markdown = paths["markdown"].read_text()
    summary = json.loads(paths["summary_json"].read_text())
    assert HOSTILE not in markdown and "<script" not in markdown
    assert markdown.index("## Verdict") < markdown.index("## Summary") < markdown.index("## Skipped runs")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(images) == sorted(f"plots/{p.name}" for p in paths["plots"])
    for image in images:
        assert (paths["markdown"].parent / image).is_file()
    header = next(line for line in markdown.splitlines() if line.startswith("| # |"))
    rows = [line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(summary["runs"])
    assert all(line.count(" | ") == header.count(" | ") for line in rows)  # no cell broke the table
    assert summary["verdict"]["lines"][0].startswith(
        "Best run, selected on validation accuracy: VGG16 · fine-tune, test accuracy 75.0% [59.8, 85.8]")
    for line in summary["verdict"]["lines"]:  # the same verdict, in Markdown's escaping
        assert _md(line) in markdown


def test_multiclass_report_has_no_roc(tmp_path):
    make_run(tmp_path / "runs", "three", classes=["a", "b", "c"])
    paths = write_report([tmp_path / "runs"], tmp_path / "out")
    assert not any(p.name == "roc_test.png" for p in paths["plots"])
    page = paths["html"].read_text()
    assert "ROC curves" not in page
    assert "No end-to-end run, so no end-to-end vs cached comparison." in page
    assert "No runs were skipped." in page


def test_binary_report_has_roc(tmp_path):
    make_run(tmp_path / "runs", "two")
    paths = write_report([tmp_path / "runs"], tmp_path / "out")
    assert any(p.name == "roc_test.png" for p in paths["plots"])
    assert "ROC curves (test)" in paths["html"].read_text()
