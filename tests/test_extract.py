import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from conftest import make_dataset
from featpipe.backbones import load_backbone
from featpipe.data import load_image_folder
from featpipe.distribute import LocalEngine
from featpipe import extraction as extraction_module
from featpipe.errors import FeatpipeError
from featpipe.extraction import extract, extract_shard, merge
from featpipe.parts import Part
from featpipe.pipeline import indexed_images
from featpipe.store import FeatureCache
from featpipe.workdir import WorkDir


@pytest.fixture
def base(tiny_model_file):
    return load_backbone(tiny_model_file)


def test_extracts_every_split_and_records_skipped(corrupt_dataset, base, tmp_path):
    data = load_image_folder(corrupt_dataset)
    result = extract(data, base, tmp_path / "cache", batch_size=4, progress=False)
    assert not result.cached and result.rows == {"train": 12, "validation": 6, "test": 6}
    assert sorted(p for p, _ in result.skipped["train"]) == [
        "train/cat/text.png", "train/cat/truncated.jpg", "train/cat/zero.jpg"]
    assert dict(result.skipped["train"])["train/cat/zero.jpg"] == "empty file"
    with FeatureCache(result.path) as cache:
        assert cache.classes == ["cat", "dog"] and cache.feature_shape == (16,)
        assert cache.attrs["backbone"] == base.spec and cache.attrs["dataset"]["root"] == str(corrupt_dataset)
        paths = cache.paths("train")
        expected_labels = [data.splits["train"].labels[data.splits["train"].paths.index(p)] for p in paths]
        assert cache.labels("train").tolist() == expected_labels
        # The cached features are the model's features of exactly those images.
        files = [os.path.join(corrupt_dataset, p) for p in cache.paths("test")]
        images = np.stack([x for x, _ in indexed_images(files, base.image_size).as_numpy_iterator()])
        np.testing.assert_allclose(cache.features("test"), base.feature_model("avg")(images), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_second_run_is_cached_and_any_change_makes_a_new_file(dataset, base, tmp_path):
    data = load_image_folder(dataset)
    first = extract(data, base, tmp_path, batch_size=5, progress=False)
    mtime = first.path.stat().st_mtime_ns
    again = extract(load_image_folder(dataset), base, tmp_path, batch_size=3, progress=False)
    assert again.cached and again.path == first.path and first.path.stat().st_mtime_ns == mtime
    variants = [
        extract(data, base, tmp_path, pooling="max", progress=False),
        extract(data, base, tmp_path, dtype="float16", progress=False),
        extract(data, base, tmp_path, splits=["train", "test"], progress=False),
        extract(data, base, tmp_path, crop_to_aspect_ratio=True, progress=False),
        extract(data, load_backbone(base.spec, preprocess="tf"), tmp_path, progress=False),
    ]
    assert len({first.path, *(v.path for v in variants)}) == 6 and not any(v.cached for v in variants)
    with FeatureCache(variants[1].path) as cache:
        assert cache.features("train").dtype == np.float16
    (dataset / "test" / "dog" / "dog.0.jpg").unlink()
    changed = extract(load_image_folder(dataset), base, tmp_path, progress=False)
    assert not changed.cached and changed.path != first.path and changed.rows["test"] == 5


def test_spatial_features_and_val_fraction(tmp_path, base):
    data = load_image_folder(make_dataset(tmp_path / "d", per_split={"train": 10, "test": 2}), val_fraction=0.2)
    result = extract(data, base, tmp_path / "c", pooling="none", progress=False)
    with FeatureCache(result.path) as cache:
        assert cache.splits == ["train", "validation", "test"] and cache.n_rows("validation") == 4
        assert cache.feature_shape == (8, 8, 16)


@pytest.mark.parametrize("kwargs, message", [
    ({"splits": ["holdout"]}, "no split holdout"),
    ({"pooling": "sum"}, "pooling must be one of"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"batch_size": 0}, "batch size must be positive"),
])
def test_bad_options(dataset, base, tmp_path, kwargs, message):
    with pytest.raises(FeatpipeError, match=message):
        extract(load_image_folder(dataset), base, tmp_path, progress=False, **kwargs)


def test_concurrent_extraction_of_the_same_key_is_refused(dataset, base, tmp_path):
    data = load_image_folder(dataset)
    probe = extract(data, base, tmp_path / "probe", progress=False)  # learn the file name of this key
    with WorkDir(tmp_path / "cache" / probe.path.name).lock():
        with pytest.raises(FeatpipeError, match="another featpipe process is writing"):
            extract(data, base, tmp_path / "cache", progress=False)


def assert_same_cache(a_path, b_path):
    """Same rows, paths, labels and skipped files exactly; features up to CPU kernels' last bits."""
    with FeatureCache(a_path) as a, FeatureCache(b_path) as b:
        assert a.key == b.key and a.splits == b.splits
        for split in b.splits:
            assert a.paths(split) == b.paths(split) and a.skipped(split) == b.skipped(split)
            np.testing.assert_array_equal(a.labels(split), b.labels(split))
            np.testing.assert_allclose(a.features(split), b.features(split), rtol=1e-5, atol=1e-6)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from featpipe import writer
    from featpipe.backbones import load_backbone
    from featpipe.data import load_image_folder
    from featpipe.extraction import extract

    data, model, cache, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    original, written = writer.write_part, []

    def write_then_die(directory, key, part):
        if len(written) == kill_after:
            # Die halfway through the next part: a temporary file is left behind, as in a real crash.
            (directory / f"{part.part.file_name}.tmp-1-ab").write_bytes(b"half a part")
            os.kill(os.getpid(), signal.SIGKILL)
        original(directory, key, part)
        written.append(part)

    writer.write_part = write_then_die
    extract(load_image_folder(data), load_backbone(model), cache, batch_size=4, part_rows=4, progress=False)
""")


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(corrupt_dataset, tiny_model_file, tmp_path, capsys):
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(corrupt_dataset), tiny_model_file, str(tmp_path / "resumed"), "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    partial = list((tmp_path / "resumed").glob("*.partial"))
    assert len(partial) == 1 and len(list(partial[0].glob("train-*.h5"))) == 2
    assert not list((tmp_path / "resumed").glob("*.h5"))  # nothing looks finished

    data, base = load_image_folder(corrupt_dataset), load_backbone(tiny_model_file)
    resumed = extract(data, base, tmp_path / "resumed", batch_size=8, part_rows=6)  # the first layout is kept
    assert "train (resuming: 8 of 15 images already done): 7/7 images" in capsys.readouterr().err
    whole = extract(data, base, tmp_path / "whole", batch_size=4, progress=False)
    assert resumed.key == whole.key and not resumed.cached and not partial[0].exists()
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [resumed.path.name]
    assert_same_cache(resumed.path, whole.path)


def test_one_stream_through_every_split_equals_one_image_at_a_time(corrupt_dataset, base, tmp_path, capsys):
    data = load_image_folder(corrupt_dataset)
    # A batch of 64 spans the three splits and their unreadable files; parts of 5 rows end inside batches.
    streamed = extract(data, base, tmp_path / "streamed", batch_size=64, part_rows=5, progress=True)
    single = extract(data, base, tmp_path / "single", batch_size=1, progress=False)
    with FeatureCache(streamed.path) as a, FeatureCache(single.path) as b:
        assert a.splits == b.splits == ["train", "validation", "test"]
        for split in a.splits:
            assert a.paths(split) == b.paths(split) and a.labels(split).tolist() == b.labels(split).tolist()
            assert a.skipped(split) == b.skipped(split)
            np.testing.assert_allclose(a.features(split), b.features(split), rtol=1e-5, atol=1e-6)
    err = capsys.readouterr().err
    for split, files in data.splits.items():  # each split's own progress line, with its own count
        assert f"{split}: {len(files)}/{len(files)} images" in err


def test_image_batches_are_the_usable_rows_in_order_with_a_cpus_options(corrupt_dataset):
    files = [str(corrupt_dataset / p) for p in load_image_folder(corrupt_dataset).splits["train"].paths]
    seen = {}

    def sieve(row, digest):  # knows none of them: every usable row is decoded
        seen[row] = digest
        return False

    dataset = extraction_module.image_batches(files, (8, 6), 4, rows=np.arange(1, len(files)), threads=1, sieve=sieve)
    batches = [(images.numpy(), rows.numpy()) for images, rows in dataset]
    usable = [row for _, row in indexed_images(files, (8, 6), rows=np.arange(1, len(files))).as_numpy_iterator()]
    assert np.concatenate([rows for _, rows in batches]).tolist() == usable == sorted(usable)
    assert len(usable) < len(files) - 1  # the corrupt files are dropped, not batched
    assert [len(rows) for _, rows in batches] == [len(usable[i : i + 4]) for i in range(0, len(usable), 4)]
    assert all(images.shape[1:] == (8, 6, 3) and images.dtype == np.float32 for images, _ in batches)
    assert set(usable) <= set(seen) and all(len(digest) == 32 for digest in seen.values())  # every usable row sieved
    options = dataset.options()  # on a CPU: one decoder per given thread, no autotuned buffers
    assert options.threading.private_threadpool_size == 1
    assert options.autotune.enabled is False and options.experimental_optimization.inject_prefetch is False


def test_the_base_is_prepared_once_in_the_background_and_its_failure_is_raised():
    made = []
    forward = extraction_module.Prepared(lambda: made.append(threading.current_thread().name) or (lambda x: x + 1))
    assert not forward.ready()
    forward.prepare()
    forward.prepare()
    assert forward(1) == 2 and forward(2) == 3 and made == ["featpipe-prepare"] and forward.ready()

    def fail():
        raise FeatpipeError("the base cannot be built")

    with pytest.raises(FeatpipeError, match="cannot be built"):
        extraction_module.Prepared(fail)(1)


def test_recorded_seconds_are_the_wall_time_of_the_work(dataset, base, tmp_path):
    data = load_image_folder(dataset)
    start = time.perf_counter()
    result = extract(data, base, tmp_path, batch_size=2, part_rows=3, progress=False)
    wall = time.perf_counter() - start
    with FeatureCache(result.path) as cache:
        recorded = [cache.timing(split)["seconds"] for split in cache.splits]
    assert all(s > 0 for s in recorded) and sum(recorded) <= wall
    assert result.stats["write_seconds"] > 0 and result.stats["assemble_seconds"] > 0


def test_shards_in_any_order_with_reruns_equal_one_process(corrupt_dataset, base, tmp_path):
    data = load_image_folder(corrupt_dataset)
    whole = extract(data, base, tmp_path / "whole", batch_size=4, part_rows=4, progress=False)
    done = []
    for k in (2, 0, 2):  # out of order, and one shard run twice
        done.append(extract_shard(data, base, tmp_path / "sharded", shard=(k, 3), batch_size=5, part_rows=4,
                                  progress=False))
    assert [r.parts for r in done] == [3, 2, 0] and len(done[-1].missing) == 3  # shard 1's parts
    with pytest.raises(FeatpipeError, match=r"3 parts missing: train rows 8-11 \(shard 1/3\)"):
        merge(done[-1].path)
    last = extract_shard(data, base, tmp_path / "sharded", shard=(1, 3), batch_size=3, progress=False)
    assert last.missing == [] and last.path.name == whole.path.name
    merged = merge(f"{last.path}.partial")
    assert not merged.cached and merge(last.path).cached
    assert_same_cache(merged.path, whole.path)
    assert extract_shard(data, base, tmp_path / "sharded", shard=(0, 3), progress=False).cached


@pytest.mark.slow
def test_worker_processes_equal_one_process(corrupt_dataset, base, tmp_path):
    data = load_image_folder(corrupt_dataset)
    whole = extract(data, base, tmp_path / "whole", batch_size=4, progress=False)
    workers = extract(data, base, tmp_path / "workers", batch_size=3, engine=LocalEngine([None, None]), part_rows=4,
                      progress=False)
    assert_same_cache(workers.path, whole.path)
    with pytest.raises(FeatpipeError, match="needs a backbone made by load_backbone"):
        extract(data, replace(base, recipe={}), tmp_path / "by-hand", engine=LocalEngine([None, None]), progress=False)


# Loaded by every worker process (through PYTHONPATH): the worker that reaches the validation split is
# SIGKILLed there, after it wrote its train parts.
KILL_A_WORKER = textwrap.dedent("""
    import os, signal
    from featpipe import writer
    original = writer.write_part

    def write_or_die(directory, key, part):
        if part.part.split == "validation":
            os.kill(os.getpid(), signal.SIGKILL)
        return original(directory, key, part)

    writer.write_part = write_or_die
""")


@pytest.mark.slow
def test_a_killed_worker_is_named_and_the_rerun_finishes_the_rest(corrupt_dataset, base, tmp_path, monkeypatch):
    data = load_image_folder(corrupt_dataset)
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(KILL_A_WORKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "hook"), *sys.path]))
    with pytest.raises(FeatpipeError, match=r"worker 1/2 \(CPU\) was killed by signal 9 \(SIGKILL\) \(log: \S+worker-1\.log\)\..*run the same command "
                                            r"again to extract the 4 missing parts"):
        extract(data, base, tmp_path / "c", batch_size=4, engine=LocalEngine([None, None]), part_rows=4,
                progress=False)
    partial = next((tmp_path / "c").glob("*.partial"))
    kept = sorted(p.name for p in partial.glob("*.h5"))
    assert len(kept) == 4 and all(name.startswith("train-") for name in kept)  # both workers' train parts

    monkeypatch.delenv("PYTHONPATH")
    rerun = extract(data, base, tmp_path / "c", batch_size=4, engine=LocalEngine([None, None]), progress=False)
    whole = extract(data, base, tmp_path / "whole", batch_size=4, progress=False)
    assert_same_cache(rerun.path, whole.path)


def scaled_base(tmp_path, scale: float):
    """The tiny base with its features multiplied by `scale` (a base whose features overflow float16, or NaN)."""
    import keras

    from conftest import tiny_cnn

    inner = tiny_cnn()
    model = keras.Model(inner.input, keras.layers.Rescaling(scale, name="scale")(inner.output))
    path = tmp_path / f"scaled-{scale}.keras"
    model.save(path)
    return load_backbone(str(path))


def test_non_finite_features_stop_the_extraction_where_they_arise(dataset, tmp_path):
    data = load_image_folder(dataset)
    with pytest.raises(FeatpipeError, match=r"split 'train': \d+ of 4 images \(train rows 0-3\) gave non-finite "
                                            r"features \(NaN or inf\) from the base"):
        extract(data, scaled_base(tmp_path, float("nan")), tmp_path / "cache", part_rows=4, progress=False)
    [partial] = (tmp_path / "cache").glob("*.partial")
    assert not list((tmp_path / "cache").glob("*.h5")) and not list(partial.glob("*.h5"))  # no NaN part stored


@pytest.mark.slow
def test_a_plain_extract_leaves_a_running_shards_parts_to_it(dataset, base, tmp_path, caplog, monkeypatch):
    data = load_image_folder(dataset)
    shard_one = extract_shard(data, base, tmp_path, shard=(1, 2), part_rows=4, progress=False)
    workdir = WorkDir(shard_one.path)
    ran, holding = [], threading.Event()
    run_parts = extraction_module.run_parts
    monkeypatch.setattr(extraction_module, "run_parts",
                        lambda extraction, parts, **kw: ran.append((time.monotonic(), parts)) or
                        run_parts(extraction, parts, **kw))

    def shard_zero_running():  # another process's shard 0/2, which stops without writing anything
        with workdir.lock(shard=(0, 2)):
            holding.set()
            time.sleep(2)
            ran.append((time.monotonic(), "shard 0/2 ended"))  # before the lock is let go: the waiter may then run

    other = threading.Thread(target=shard_zero_running)
    other.start()
    holding.wait()
    with caplog.at_level(logging.WARNING, logger="featpipe"):
        result = extract(data, base, tmp_path, part_rows=4, progress=False)
    other.join()
    assert "leaving 3 parts (12 rows) to shard 0/2, running in another process" in caplog.text
    assert "waiting for shard 0/2" in caplog.text
    # Nothing of shard 0/2 was extracted while it ran; once it ended, its parts were picked up here.
    assert [what for _, what in ran] == ["shard 0/2 ended", [Part("train", 0, 4), Part("train", 4, 8),
                                                              Part("train", 8, 12)]]
    assert result.rows == {"train": 12, "validation": 6, "test": 6}
