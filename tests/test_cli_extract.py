"""The extraction commands as a user runs them: exit codes, one-line errors, JSON output."""

import json

import pytest
from click.testing import CliRunner

from featpipe.cli import main
from conftest import make_image


def run(*args, **kwargs):
    result = CliRunner().invoke(main, [str(a) for a in args], **kwargs)
    assert "Traceback" not in result.output
    return result


def test_help_on_every_command():
    for command in (["--help"], ["extract", "--help"], ["split", "--help"], ["backbones", "--help"],
                    ["cache", "--help"], ["cache", "ls", "--help"], ["cache", "info", "--help"],
                    ["cache", "merge", "--help"]):
        result = run(*command)
        assert result.exit_code == 0 and "Usage:" in result.output


def test_extract_then_cached_then_inspect(corrupt_dataset, tiny_model_file, tmp_path):
    cache_dir = tmp_path / "cache"
    first = run("extract", corrupt_dataset, "--backbone", tiny_model_file, "--cache-dir", cache_dir,
                "--batch-size", 4, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["cached"] is False and summary["rows"] == {"train": 12, "validation": 6, "test": 6}
    assert summary["skipped"] == {"train": 3, "validation": 0, "test": 0}
    assert "skipped train/cat/zero.jpg: empty file" in first.stderr
    second = run("extract", corrupt_dataset, "--backbone", tiny_model_file, "--cache-dir", cache_dir, "--json")
    assert json.loads(second.stdout.strip().splitlines()[-1])["cached"] is True
    assert second.stdout.startswith("cached: ")

    listing = run("cache", "ls", "--cache-dir", cache_dir)
    assert listing.exit_code == 0 and "train=12 validation=6 test=6" in listing.output
    info = run("cache", "info", summary["cache"], "--json")
    described = json.loads(info.stdout)
    assert described["key"] == summary["key"] and described["classes"] == ["cat", "dog"]
    assert ["train/cat/text.png", "cannot identify image file"] in described["skipped_files"]["train"]


@pytest.mark.slow
def test_random_weights_are_announced(dataset, tmp_path):
    result = run("extract", dataset, "--backbone", "keras:MobileNet(alpha=0.25)", "--weights", "none",
                 "--image-size", 32, "--cache-dir", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert "random-initialised" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["extract", "{missing}", "--backbone", "keras:VGG16"], "dataset folder not found"),
    (["extract", "{data}", "--backbone", "keras:VGG61", "--weights", "none"], "unknown keras application"),
    (["extract", "{data}", "--backbone", "{model}", "--splits", "train,holdout"], "no split holdout"),
    (["extract", "{data}", "--backbone", "{model}", "--cache-dir", "{blocker}/c"], "cannot write to cache directory"),
    (["extract", "{data}", "--backbone", "{model}", "--weights", "{missing}"], "--weights must be"),
    (["cache", "info", "{missing}"], "no finished cache file"),
    (["cache", "ls", "--cache-dir", "{missing}"], "cache directory not found"),
])
def test_bad_input_is_one_line_and_exit_1(dataset, tiny_model_file, tmp_path, args, message):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    fill = {"data": dataset, "model": tiny_model_file, "missing": tmp_path / "missing", "blocker": blocker}
    result = run(*[a.format(**fill) for a in args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("featpipe: error: ") and message in lines[-1]


@pytest.mark.parametrize("args", [
    ["extract", "x", "--backbone", "b", "--image-size", "big"],
    ["extract", "x", "--backbone", "b", "--pooling", "sum"],
    ["extract", "x"],
    ["split", "a", "b", "--train", "-1"],
])
def test_bad_usage_exits_2(args):
    result = run(*args)
    assert result.exit_code == 2 and "Error:" in result.stderr


def test_split_command(tmp_path):
    for label in ("cat", "dog"):
        for i in range(4):
            make_image(tmp_path / "flat" / f"{label}.{i}.jpg", (9, 9, 9), seed=i)
    result = run("split", tmp_path / "flat", tmp_path / "out", "--train", 2, "--validation", 1, "--test", 1)
    assert result.exit_code == 0 and "train: cat 2, dog 2" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "test" / "dog").iterdir()) == ["dog.3.jpg"]
    again = run("split", tmp_path / "flat", tmp_path / "out")
    assert again.exit_code == 1 and "not empty" in again.stderr


def test_backbones_listing():
    result = run("backbones", "--json")
    rows = {row["spec"]: row for row in json.loads(result.stdout)["backbones"]}
    assert rows["keras:VGG16"] == {"spec": "keras:VGG16", "image_size": 224, "feature_shape": [7, 7, 512]}
    assert "xception_41_imagenet" in run("backbones").output


def test_internal_errors_are_one_line(monkeypatch, dataset):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr("featpipe.data.load_image_folder", boom)
    result = run("extract", dataset, "--backbone", "keras:VGG16")
    assert result.exit_code == 3
    assert result.stderr.strip() == ("featpipe: internal error: RuntimeError: disk on fire "
                                     "(set FEATPIPE_DEBUG=1 for the traceback)")


def test_interrupt_exits_130_and_says_how_to_resume(monkeypatch, dataset):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("featpipe.data.load_image_folder", interrupted)
    result = run("extract", dataset, "--backbone", "keras:VGG16")
    assert result.exit_code == 130
    assert result.stderr.strip() == "featpipe: interrupted; run the same command again to resume"


def test_job_array_shards_then_merge(corrupt_dataset, tiny_model_file, tmp_path):
    cache_dir = tmp_path / "cache"
    common = ["extract", corrupt_dataset, "--backbone", tiny_model_file, "--cache-dir", cache_dir, "--part-rows", 5]
    first = run(*common, "--shard", "1/2", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["parts_written"] == 4
    assert "parts of other shards still missing; when every shard is done: featpipe cache merge" in first.stdout
    assert "resuming" not in first.stderr  # the first shard of a new extraction resumes nothing
    listing = run("cache", "ls", "--cache-dir", cache_dir)
    assert "3 parts missing: train rows 0-4 (shard 0/2)" in listing.output
    assert "; rerun its extract command (or those shards) to resume)" in listing.output
    early = run("cache", "merge", "--cache-dir", cache_dir)
    assert early.exit_code == 1 and early.stderr.count("\n") == 1
    assert "featpipe: error: cannot assemble" in early.stderr and "train rows 0-4 (shard 0/2)" in early.stderr
    second = run(*common, "--shard", "0/2")
    assert second.exit_code == 0 and "every part is done" in second.stdout
    assert "resuming" not in second.stderr  # shard 1/2's parts are not this shard's work
    [partial] = cache_dir.glob("*.partial")
    (partial / "train-0000000000-0000000005.h5").unlink()  # as if killed after its other 2 parts
    again = run(*common, "--shard", "0/2")
    assert "shard 0/2 train (resuming: 10 of 15 images already done)" in again.stderr, again.stderr
    done = run("cache", "ls", "--cache-dir", cache_dir).output
    assert "(incomplete: all 7 parts done; assemble them: featpipe cache merge " in done and "rerun" not in done
    merged = run("cache", "merge", "--cache-dir", cache_dir)
    assert merged.exit_code == 0 and merged.stdout.startswith("merged: ") and "train 12" in merged.stdout
    assert run(*common).stdout.startswith("cached: ")


@pytest.mark.parametrize("args, message", [
    (["--shard", "2/2"], "expected K/N with 0 <= K < N"),
    (["--shard", "x"], "expected K/N"),
    (["--devices", "0,1"], "no GPU is visible"),
    (["--devices", "gpu"], "--devices must be all, cpu or GPU indices like 0,1"),
])
def test_bad_sharding_and_devices(dataset, tiny_model_file, tmp_path, args, message):
    result = run("extract", dataset, "--backbone", tiny_model_file, "--cache-dir", tmp_path, *args)
    assert result.exit_code in (1, 2) and message in result.output


def test_merge_of_nothing_is_one_line(tmp_path):
    result = run("cache", "merge", "--cache-dir", tmp_path)
    assert result.exit_code == 1 and result.stderr == f"featpipe: error: no extraction in progress in {tmp_path}\n"
    result = run("cache", "merge", tmp_path / "x.h5")
    assert result.exit_code == 1 and "no extraction in progress at" in result.stderr


LOW_FILE_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from featpipe.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_more_parts_than_open_files_under_ulimit(tmp_path, tiny_model_file):
    import subprocess
    import sys

    from conftest import CLASS_COLOURS

    for i in range(300):
        make_image(tmp_path / "data" / "train" / ("cat", "dog")[i % 2] / f"{i}.png",
                   CLASS_COLOURS[("cat", "dog")[i % 2]], size=(12, 12), seed=i)
    done = subprocess.run([sys.executable, "-c", LOW_FILE_LIMIT, "extract", str(tmp_path / "data"), "-b",
                           tiny_model_file, "--cache-dir", str(tmp_path / "cache"), "--part-rows", "1", "-q"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("extracted: ") and "(train 300 rows)" in done.stdout
@pytest.mark.timeout(300)
def test_extract_and_predict_skip_hostile_files_and_record_why(tmp_path, tiny_model_file):
    """Issue 9, cases 2 and 3: a bomb, a FIFO, dangling links and link loops never abort extract or predict."""
    from test_data import _hostile_dataset

    root = _hostile_dataset(tmp_path)
    result = run("extract", root, "--backbone", tiny_model_file, "--cache-dir", tmp_path / "cache", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["skipped"]["train"] == 6 and summary["rows"]["train"] == 14  # 12 images + 2 links to images
    skipped = dict(json.loads(run("cache", "info", summary["cache"], "--json").stdout)["skipped_files"]["train"])
    assert skipped["train/cat/fifo.jpg"] == "not a regular file: a FIFO"
    assert skipped["train/cat/dangling.jpg"] == "dangling symbolic link"
    assert skipped["train/cat/loopA.jpg"] == skipped["train/cat/loopB.jpg"] == "symbolic link loop"
    assert skipped["train/cat/null.png"] == "not a regular file: a character device"
    assert skipped["train/cat/bomb.png"].startswith("image claims 900000000 pixels")
    rerun = run("extract", root, "--backbone", tiny_model_file, "--cache-dir", tmp_path / "cache", "--json", "-q")
    assert rerun.exit_code == 0 and json.loads(rerun.stdout.strip().splitlines()[-1])["cached"] is True

    train = run("train", summary["cache"], "--head", "logreg", "--runs-dir", tmp_path / "runs")
    assert train.exit_code == 0, train.output
    run_dir = next((tmp_path / "runs").iterdir())
    out = tmp_path / "p.csv"
    predicted = run("predict", run_dir, root / "train" / "cat", "-o", out)
    assert predicted.exit_code == 0, predicted.output
    import csv

    with open(out, newline="") as f:
        rows = {r["path"].rsplit("/", 1)[1]: r for r in csv.DictReader(f)}
    assert rows["bomb.png"]["error"].startswith("image claims") and rows["fifo.jpg"]["error"].endswith("FIFO")
    assert rows["outside.jpg"]["predicted_class"] in ("cat", "dog") and not rows["outside.jpg"]["error"]


@pytest.mark.slow
def test_a_100_megapixel_jpeg_is_extracted_and_the_decode_rule_is_a_key_fact(dataset, tiny_model_file, tmp_path):
    """Issue 20, item 10: a 12000 x 9000 photo (over PIL's 89.5 MP cap at full size) decodes at 1/8 for the
    32 x 32 input instead of being skipped as a bomb; a PNG of that size still is."""
    import numpy as np
    from PIL import Image

    from featpipe.pipeline import DECODE_RULE
    from featpipe.store import FeatureCache
    from hostile_fixtures import png_bomb

    coarse = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((12000, 9000)).save(dataset / "train" / "cat" / "photo.jpg", quality=85)
    png_bomb(dataset / "train" / "dog" / "scan.png", 12000, 9000)
    result = run("extract", dataset, "--backbone", tiny_model_file, "--cache-dir", tmp_path / "cache", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"]["train"] == 13 and summary["skipped"]["train"] == 1
    assert "skipped train/dog/scan.png: image claims 12000x9000 pixels, over the 89478485-pixel limit" in result.stderr
    info = json.loads(run("cache", "info", summary["cache"], "--json").stdout)
    with FeatureCache(summary["cache"]) as cache:
        assert cache.facts["decode"] == DECODE_RULE and info["key"] == cache.key


def test_shards_are_bounded_by_the_rows_and_tampered_manifests_are_redone(dataset, tiny_model_file, tmp_path,
                                                                           caplog):
    cache_dir = tmp_path / "cache"
    common = ["extract", dataset, "--backbone", tiny_model_file, "--cache-dir", cache_dir, "--part-rows", 4]
    huge = run(*common, "--shard", "0/10000000")
    assert huge.exit_code == 1 and huge.stderr.count("\n") == 1
    assert "--shard 0/10000000 asks for more shards than the 24 images to extract: use at most 24" in huge.stderr
    assert not cache_dir.exists() or not list(cache_dir.iterdir())  # nothing was planned, no manifest kept
    assert run(*common, "--shard", "0/2").exit_code == 0
    [partial] = cache_dir.glob("*.partial")
    manifest = json.loads((partial / "manifest.json").read_text())
    (partial / "manifest.json").write_text(json.dumps({**manifest, "shards": 10**20}))
    listing = run("cache", "ls", "--cache-dir", cache_dir)  # at once, and one line about it
    assert listing.exit_code == 0 and "no usable manifest.json" in listing.output
    (partial / "manifest.json").write_text(json.dumps({**manifest, "splits": {**manifest["splits"], "train": 3}}))
    done = run(*common)  # fewer rows than the dataset: redone with a warning, never a cache missing rows
    assert done.exit_code == 0, done.output
    assert "discarding the manifest" in caplog.text and "its splits is not this extraction's" in caplog.text
    assert json.loads(run(*common, "--json").stdout.strip().splitlines()[-1])["rows"]["train"] == 12


def test_float16_overflow_is_refused_with_the_hint_and_float32_works(dataset, tmp_path):
    from test_extract import scaled_base

    model = scaled_base(tmp_path, 1e9).spec  # features of ~1e9: finite in float32, inf in float16
    common = ["extract", dataset, "--backbone", model, "--cache-dir", tmp_path / "cache", "--part-rows", 4]
    refused = run(*common, "--dtype", "float16")
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1, refused.output
    assert refused.stderr.startswith("featpipe: error: split 'train': ")
    assert "have features beyond float16's range (they would be stored as inf); extract with --dtype float32" \
        in refused.stderr
    assert "RuntimeWarning" not in refused.output
    assert not list((tmp_path / "cache").glob("*.h5"))
    done = run(*common, "--dtype", "float32", "--json")
    assert done.exit_code == 0, done.output
    import numpy as np

    from featpipe.store import FeatureCache

    with FeatureCache(json.loads(done.stdout.strip().splitlines()[-1])["cache"]) as cache:
        assert np.isfinite(cache.features("train")).all() and cache.features("train").max() > 65504


def test_an_image_size_whose_batch_cannot_fit_is_refused_before_any_work(dataset, tmp_path):
    from conftest import tiny_cnn

    model = tmp_path / "any-size.keras"
    tiny_cnn(input_size=(None, None)).save(model)
    result = run("extract", dataset, "--backbone", model, "--image-size", 99999, "--cache-dir", tmp_path / "c")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("featpipe: error: --image-size 99999x99999 with --batch-size 32 needs ")
    assert "use a smaller --image-size or --batch-size" in result.stderr
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())  # no lock, no .partial


def test_extract_reports_computed_and_reused_rows_and_cache_info_their_origin(dataset, tiny_model_file, tmp_path):
    cache_dir = tmp_path / "cache"
    first = run("extract", dataset, "-b", tiny_model_file, "--cache-dir", cache_dir, "--batch-size", 4, "--json")
    first_cache = json.loads(first.output[first.output.index("{"):])["cache"]
    make_image(dataset / "train" / "cat" / "new.png", (200, 60, 40), seed=7)
    grown = run("extract", dataset, "-b", tiny_model_file, "--cache-dir", cache_dir, "--batch-size", 4, "--json")
    assert grown.exit_code == 0, grown.output
    summary = json.loads(grown.output[grown.output.index("{"):])
    assert summary["computed"] == {"train": 1, "validation": 0, "test": 0}
    assert summary["reused"] == {"train": 12, "validation": 6, "test": 6}
    assert "train 1 computed, 12 reused" in grown.output
    info = run("cache", "info", summary["cache"])
    assert f"rows from: 1 computed, 12 from {first_cache.rsplit('/', 1)[1]}" in info.output
    both = run("extract", dataset, "-b", tiny_model_file, "--no-reuse", "--reuse", "x.h5")
    assert both.exit_code == 2 and "exclude each other" in both.output
    missing = run("extract", dataset, "-b", tiny_model_file, "--cache-dir", tmp_path / "c2", "--reuse",
                  tmp_path / "nothing.h5")
    assert missing.exit_code == 1 and "--reuse: no cache file at" in missing.output
