import numpy as np
import pytest
from matplotlib import image as mpimg

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
    assert {"accuracy_by_backbone_head.png", "accuracy_vs_compute.png", "roc_test.png",
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
    assert {"accuracy_by_backbone_head.png", "accuracy_vs_compute.png"} <= names


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
    monkeypatch.setattr(plots, "_save", lambda fig, path, title, run_dir=None: figures.append(fig))
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


def test_bars_show_the_best_validation_run_per_cell(tmp_path, monkeypatch):
    make_run(tmp_path, "worse", val=0.6, test=0.9)
    make_run(tmp_path, "better", val=0.9, test=0.7, seed=1)
    runs, _ = collect_runs([tmp_path])
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, title, run_dir=None: figures.append(fig))
    plots.accuracy_bars([r["row"] for r in runs], tmp_path / "bars.png")
    (bar,) = figures[0].axes[0].patches
    assert bar.get_height() == pytest.approx(0.7)


def test_a_random_initialised_copy_of_a_base_is_a_group_of_its_own(tmp_path, monkeypatch):
    make_run(tmp_path, "pretrained", val=0.9, test=0.9)
    make_run(tmp_path, "random", val=0.3, test=0.25, pretrained=False)
    runs, _ = collect_runs([tmp_path])
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, title, run_dir=None: figures.append(fig))
    plots.accuracy_bars([r["row"] for r in runs], tmp_path / "bars.png")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["keras:VGG16", "keras:VGG16 (random init)"]
    assert [round(bar.get_height(), 2) for bar in ax.patches] == [0.9, 0.25]


def test_no_pyplot_figures_are_left_open(tmp_path):
    import matplotlib.pyplot as plt

    make_run(tmp_path, "a", history=make_history())
    runs, _ = collect_runs([tmp_path])
    before = plt.get_fignums()
    write_plots(runs, tmp_path / "plots")
    assert plt.get_fignums() == before
