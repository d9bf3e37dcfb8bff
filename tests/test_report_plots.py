import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg

from featpipe.report import plots
from featpipe.report.collect import collect_runs
from featpipe.report.plots import ema, write_plots
from report_fixtures import HOSTILE, QUOTES, make_history, make_run


def _names(plot_list):
    return {p.path.name for p in plot_list}


def _assert_png(path):
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 0  # not a blank canvas


def test_ema_matches_the_recurrence():
    assert ema([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.5, 2.25])
    assert ema([4.0, 0.0], 0.9) == pytest.approx([4.0, 3.6])
    values = np.random.default_rng(0).normal(size=20)
    assert ema(values, 0.0) == pytest.approx(values.tolist())  # factor 0: no smoothing
    assert ema([2.5] * 5, 0.8) == pytest.approx([2.5] * 5)  # a constant stays constant
    expected, prev = [], None
    for x in values:
        prev = x if prev is None else prev * 0.7 + x * 0.3
        expected.append(prev)
    assert ema(values, 0.7) == pytest.approx(expected)
    assert ema([], 0.5) == []


def test_binary_runs_get_every_plot(tmp_path):
    make_run(tmp_path / "runs", "cached-a", val=0.8)
    make_run(tmp_path / "runs", "cached-b", backbone="keras:ResNet50", head="dense", val=0.7, images_per_second=9.0)
    make_run(tmp_path / "runs", "ft", path="end-to-end", fit=60, history=make_history())
    runs, _ = collect_runs([tmp_path / "runs"])
    made = write_plots(runs, tmp_path / "plots", smooth=0.5)
    names = _names(made)
    assert {"accuracy_intervals.png", "accuracy_vs_compute.png", "roc_test.png", "reliability_best.png",
            "extraction_throughput.png"} <= names
    assert sum(n.startswith("learning_") for n in names) == 1  # only the run with a history
    assert sum(n.startswith("confusion_") for n in names) == 3
    for plot in made:
        assert plot.path.parent == tmp_path / "plots"
        _assert_png(plot.path)
    per_run = {p.run_dir for p in made if p.run_dir is not None}
    assert per_run == {r["row"]["run_dir"] for r in runs}


def test_multiclass_has_no_roc_and_end_to_end_only_has_no_throughput(tmp_path):
    make_run(tmp_path, "ft", path="end-to-end", classes=["a", "b", "c"], fit=10)
    runs, _ = collect_runs([tmp_path])
    assert runs[0]["metrics"]["test"]["roc_auc"] is not None and "roc_curve" not in runs[0]["metrics"]["test"]
    names = _names(write_plots(runs, tmp_path / "plots"))
    assert "roc_test.png" not in names
    assert "extraction_throughput.png" not in names
    assert not any(n.startswith("learning_") for n in names)
    assert {"accuracy_intervals.png", "accuracy_vs_compute.png"} <= names


def test_zero_compute_and_no_throughput_skip_cleanly(tmp_path):
    make_run(tmp_path, "free", total=0.0, images_per_second=None)
    runs, _ = collect_runs([tmp_path])
    names = _names(write_plots(runs, tmp_path / "plots"))
    assert "accuracy_vs_compute.png" not in names  # nothing to place on a log axis
    assert "extraction_throughput.png" not in names


def test_hostile_names_and_mathtext_do_not_break_plots(tmp_path):
    classes = ["a$b$c", HOSTILE, QUOTES, r"$\frac{$"]
    make_run(tmp_path, f"../{HOSTILE} $x$", backbone="$bad$", head=QUOTES, classes=classes,
             history=make_history(fine_tune_at=None))
    runs, _ = collect_runs([tmp_path])
    made = write_plots(runs, tmp_path / "plots", smooth=0.3)
    for plot in made:
        assert plot.path.parent == tmp_path / "plots"
        assert all(c.isalnum() or c in "_.-" for c in plot.path.name), plot.path.name
        _assert_png(plot.path)


def _learning_curve_figure(tmp_path, monkeypatch, history, smooth):
    """The figure learning_curves draws for one end-to-end run with `history`."""
    make_run(tmp_path, "ft", path="end-to-end", history=history)
    runs, _ = collect_runs([tmp_path])
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, title, run_dir=None, kind="": figures.append(fig))
    plots.learning_curves(runs[0], tmp_path / "lc.png", smooth=smooth)
    (fig,) = figures
    return fig


def test_learning_curves_smooth_and_mark_the_fine_tune_phase(tmp_path, monkeypatch):
    history = make_history(epochs=8, fine_tune_at=5)
    fig = _learning_curve_figure(tmp_path, monkeypatch, history, smooth=0.6)
    accuracy_ax, loss_ax = fig.axes
    for ax, metric in ((accuracy_ax, "accuracy"), (loss_ax, "loss")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert lines["training (EMA 0.6)"].get_ydata() == pytest.approx(ema(history[metric], 0.6))
        assert lines["validation (EMA 0.6)"].get_ydata() == pytest.approx(ema(history[f"val_{metric}"], 0.6))
        assert list(lines["training (EMA 0.6)"].get_xdata()) == list(range(1, 9))
        # Fine-tuning starts at 0-based epoch 5, i.e. between epochs 5 and 6 on the 1-based axis.
        assert list(lines["fine-tune starts"].get_xdata()) == [5.5, 5.5]


def test_learning_curves_without_smoothing_plot_the_raw_history(tmp_path, monkeypatch):
    history = {"loss": [1.0, 0.5, 0.25], "phases": [{"name": "frozen", "start_epoch": 0}]}
    fig = _learning_curve_figure(tmp_path, monkeypatch, history, smooth=0.0)
    (ax,) = fig.axes  # only loss was recorded: one panel
    (line,) = ax.get_lines()  # one phase: no phase line
    assert line.get_label() == "training" and list(line.get_ydata()) == [1.0, 0.5, 0.25]


def _figure(monkeypatch, draw, *args):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, title, run_dir=None, kind="": figures.append(fig))
    draw(*args)
    (fig,) = figures
    return fig


def _overlaps(texts):
    """Pairs of texts whose drawn boxes (matplotlib's own extents) intersect."""
    fig = texts[0].figure
    renderer = (fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)).get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


def test_numbered_markers_never_overlap_each_other_or_the_legend(tmp_path, monkeypatch):
    # 40 runs crowded into a corner of accuracy x compute: numbers that fit go where no other number is.
    for i in range(40):
        make_run(tmp_path, f"r{i}", val=0.5 + i / 100, test=0.80 + (i % 5) / 40, extract=10 + i % 7, fit=1, seed=i)
    runs, _ = collect_runs([tmp_path])
    fig = _figure(monkeypatch, plots.cost_frontier, runs, tmp_path / "f.png")
    ax = fig.axes[0]
    notes = [t for t in ax.texts]
    assert len(notes) >= 10
    assert _overlaps(notes) == []
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert not any(n.get_window_extent().overlaps(legend) for n in notes)
    # Every number names a run's # in the table; points at one spot share a label.
    numbers = {int(x) for n in notes for x in n.get_text().split(",")}
    assert numbers <= {r["number"] for r in runs}


@pytest.mark.slow
def test_interval_plot_rows_are_labelled_and_never_overlap(tmp_path, monkeypatch):
    for i in range(plots.FOREST_RUNS + 5):
        make_run(tmp_path, f"r{i}", head=f"head{i}", val=0.5 + i / 200, test=0.7, seed=i)
    runs, _ = collect_runs([tmp_path])
    fig = _figure(monkeypatch, plots.accuracy_intervals, runs, tmp_path / "i.png")
    ax = fig.axes[0]
    FigureCanvasAgg(fig).draw()
    ticks = ax.get_yticklabels()
    assert len(ticks) == plots.FOREST_RUNS  # the best 40 by validation; the table has them all
    assert ticks[0].get_text() == f"1  {runs[0]['row']['label']}"
    assert _overlaps(list(ticks)) == []
    # Each row's line spans its Wilson interval.
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == pytest.approx(runs[0]["row"]["test_accuracy_ci"])


def test_reliability_diagram_draws_the_recorded_bins(tmp_path, monkeypatch):
    make_run(tmp_path, "a")
    runs, _ = collect_runs([tmp_path])
    fig = _figure(monkeypatch, plots.reliability, runs[0], tmp_path / "r.png")
    bins = runs[0]["metrics"]["test"]["reliability"]
    bars = fig.axes[0].patches
    assert [round(b.get_height(), 6) for b in bars] == [round(b["accuracy"], 6) for b in bins]
    assert "ECE" in fig.axes[0].get_title()


def test_no_pyplot_figures_are_left_open(tmp_path):
    import matplotlib.pyplot as plt

    make_run(tmp_path, "a", history=make_history())
    runs, _ = collect_runs([tmp_path])
    before = plt.get_fignums()
    write_plots(runs, tmp_path / "plots")
    assert plt.get_fignums() == before
