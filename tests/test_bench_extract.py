"""bench/bench_extract.py on a user's own data: its options, how it lists and samples a dataset, and one run."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from featpipe.data import load_image_folder

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_extract.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_extract", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_is_measured_as_it_is(bench, dataset):
    args = bench.parse_args(["--data", str(dataset)])
    assert args.regimes == [] and args.images == [] and args.weights == "none"
    for extra in (["--regimes", "forward"], ["--images", "100"]):
        with pytest.raises(SystemExit) as stop:
            bench.parse_args(["--data", str(dataset), *extra])
        assert stop.value.code == 2


def test_data_and_weights_must_exist(bench, tmp_path, dataset):
    with pytest.raises(SystemExit):
        bench.parse_args(["--data", str(tmp_path)])  # no train/
    with pytest.raises(SystemExit):
        bench.parse_args(["--data", str(dataset), "--weights", str(tmp_path / "missing.h5")])
    weights = tmp_path / "base.weights.h5"
    weights.write_bytes(b"")
    assert bench.parse_args(["--data", str(dataset), "--weights", str(weights)]).weights == str(weights)


def test_generated_regimes_by_default(bench):
    args = bench.parse_args([])
    assert args.regimes == ["forward", "decode"] and args.images == [5000, 1500]


def test_image_files_are_featpipes_rows(bench, corrupt_dataset):
    data = load_image_folder(corrupt_dataset)
    expected = [f for split in data.splits for f in data.files(split)]
    files = bench.image_files(str(corrupt_dataset))
    assert files == expected
    assert any(f.endswith(".png") for f in files) and any(f.endswith("zero.jpg") for f in files)


def test_one_per_class_copies_each_split_and_class_first_image(bench, dataset, tmp_path):
    bench.one_per_class(str(dataset), tmp_path / "tiny")
    source, tiny = load_image_folder(dataset), load_image_folder(tmp_path / "tiny")
    assert set(tiny.splits) == set(source.splits) and tiny.classes == source.classes
    for name, split in tiny.splits.items():
        assert sorted(split.labels) == list(range(len(source.classes)))
        for path in split.paths:
            first = source.splits[name].paths[source.splits[name].labels.index(split.labels[split.paths.index(path)])]
            assert path == first
            assert (tmp_path / "tiny" / path).read_bytes() == (dataset / path).read_bytes()


def test_a_failed_variant_is_its_raised_line(bench):
    code = "import sys; print('progress', file=sys.stderr); raise ValueError('no such base')"
    with pytest.raises(bench.BenchError, match=r"^ValueError: no such base$"):
        bench.run([sys.executable, "-c", code], dict(os.environ))
    assert bench.run([sys.executable, "-c", "print('ok')"], dict(os.environ)) == "ok\n"


def test_command_figures_take_each_clock_at_its_least_slowed(bench):
    runs = [{"wall": 20.0, "startup": 6.0, "started": 8.0, "recorded": 300.0, "images": 1000, "tiny_images": 6},
            {"wall": 18.0, "startup": 7.0, "started": 7.5, "recorded": 320.0, "images": 1000, "tiny_images": 6}]
    figures = bench.command_figures(runs)
    assert figures["per_second"] == pytest.approx(1000 / (18.0 - 6.0))
    assert figures["once_started"] == pytest.approx(994 / (18.0 - 7.5))
    assert figures["recorded"] == 320.0
    quick = [{**runs[0], "wall": 7.0}]  # fewer images than the start-up's noise: no rate, not a negative one
    assert math.isnan(bench.command_figures(quick)["once_started"])
    assert math.isnan(bench.command_figures([{**runs[0], "wall": 5.0}])["per_second"])


def test_each_round_is_judged_against_its_own_limit(bench):
    assert bench.limit(400.0, 1600.0) == pytest.approx(320.0)
    runs = {"a": [{"per_second": 400.0}, {"per_second": 200.0}], "d": [{"per_second": 1600.0}, {"per_second": 800.0}],
            "c": [{"images": 1000, "wall": 12.0, "startup": 7.0}, {"images": 1000, "wall": 17.0, "startup": 7.0}]}
    assert bench.ratios_by_round(runs) == pytest.approx([200 / 320, 100 / 160])
    runs["c"][1]["wall"] = 6.0  # a fresh run quicker than the cache hit: the round has no ratio
    ratios = bench.ratios_by_round(runs)
    assert ratios[0] == pytest.approx(200 / 320) and math.isnan(ratios[1])


@pytest.mark.slow
def test_bench_on_your_data_with_your_base(corrupt_dataset, tiny_model_file):
    out = subprocess.run([sys.executable, str(BENCH), "--data", str(corrupt_dataset), "--backbone", tiny_model_file,
                          "--image-size", "32", "--batch-size", "4", "--repeat", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    n = sum(len(split) for split in load_image_folder(corrupt_dataset).splits.values())
    assert f"== {corrupt_dataset}: {n} images -> {tiny_model_file} at 32, batch 4, random weights ==" in out.stdout
    rates = dict(re.findall(r"^  (\(\w+(?:-prime)?\)|L |L0 |Lr ) .*?(-?[\d.]+|nan) img/s", out.stdout, re.M))
    assert set(rates) == {"(a)", "(d)", "(r)", "L ", "L0 ", "Lr ", "(c)", "(c-prime)"}, out.stdout
    assert all(float(rates[k]) > 0 for k in ("(a)", "(d)", "(r)", "L ", "Lr "))
    assert float(rates["Lr "]) == pytest.approx(1 / (1 / float(rates["(a)"]) + 1 / float(rates["(r)"])), rel=2e-3)
    assert re.search(r"^  r / d: featpipe's reader against the plain decode +\d+\.\d\d$", out.stdout, re.M)
    ceiling = re.search(r"^  Lr / L: the most c / L can be with featpipe's checked reader +(\d+\.\d\d)$", out.stdout, re.M)
    assert ceiling and float(ceiling[1]) == pytest.approx(float(rates["Lr "]) / float(rates["L "]), abs=0.006)
    assert re.search(r"^  c / Lr: the command against the limit with its own reader +(\d+\.\d\d|nan)$", out.stdout,
                     re.M)
    # On 27 images the command's own figures are within the start-up's noise (a loaded machine can make the fresh
    # run quicker than a cache hit): a rate, or NaN, never a negative one.
    assert all(float(rates[k]) > 0 or math.isnan(float(rates[k])) for k in ("(c)", "(c-prime)"))
    assert re.search(r"^  c / L +(\d+\.\d\d|nan)   \(target >= 0\.90: (ok|MISSED)\)$", out.stdout, re.M)
    assert re.search(r"^      each round against its own a and d +(\d+\.\d\d|nan)$", out.stdout, re.M)  # --repeat 1
    assert "book loop" not in out.stdout  # written for keras.applications, not a model file


@pytest.mark.slow
def test_a_base_that_does_not_load_is_one_line(dataset, tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a model")
    out = subprocess.run([sys.executable, str(BENCH), "--data", str(dataset), "--backbone", str(broken), "--repeat",
                          "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    assert re.fullmatch(r"bench_extract: error: \(a\) failed: \S.*\n", out.stderr), out.stderr
