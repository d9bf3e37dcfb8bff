"""The mistakes gallery: most confident mistakes first, checked thumbnails, missing images said, never a crash."""

import base64
import io
import os

import numpy as np
from PIL import Image

from featpipe.report.collect import collect_runs
from featpipe.report.gallery import THUMBNAIL_PX, mistakes_gallery, thumbnail_uri
from report_fixtures import make_run


def _run(tmp_path, **kwargs):
    make_run(tmp_path / "runs", "a", test=0.6, n_test=40, images=True, **kwargs)
    (run,) = collect_runs([tmp_path / "runs"])[0]
    return run


def test_mistakes_come_most_confident_first_with_classes_and_thumbnails(tmp_path):
    run = _run(tmp_path)
    gallery = mistakes_gallery(run, 10)
    test = run["predictions"]["test"]
    assert gallery.n_test == 40 and gallery.n_mistakes == 16 == int((~test.correct).sum())
    assert len(gallery.mistakes) == 10 and gallery.note is None
    confidences = [m.confidence for m in gallery.mistakes]
    assert confidences == sorted(confidences, reverse=True)
    top = int(np.argmax(np.where(test.correct, -1, test.proba.max(axis=1))))
    assert gallery.mistakes[0].path == test.paths[top]
    assert gallery.mistakes[0].true == ["cat", "dog"][test.labels[top]] != gallery.mistakes[0].predicted
    for mistake in gallery.mistakes:
        assert mistake.thumbnail.startswith("data:image/jpeg;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(mistake.thumbnail.split(",", 1)[1])))
        assert max(image.size) <= THUMBNAIL_PX


def test_images_gone_are_listed_without_thumbnails(tmp_path):
    run = _run(tmp_path)
    root = run["run"]["dataset"]["root"]
    os.rename(root, root + "-moved")
    gallery = mistakes_gallery(run, 5)
    assert len(gallery.mistakes) == 5 and all(m.thumbnail is None for m in gallery.mistakes)
    assert "not on this machine" in gallery.note


def test_hostile_files_and_paths_are_reasons(tmp_path):
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "fake.png").write_bytes(b"not an image at all")
    os.mkfifo(root / "cat" / "fifo.png")
    Image.new("RGB", (4000, 3000)).save(root / "cat" / "big.jpg", quality=50)
    (tmp_path / "secret.png").write_bytes(b"x")
    assert thumbnail_uri(str(root), "cat/fake.png") == (None, "cannot identify image file")
    assert thumbnail_uri(str(root), "cat/fifo.png")[1].startswith("not a regular file")
    assert thumbnail_uri(str(root), "../secret.png") == (None, "path outside the dataset folder")
    assert thumbnail_uri(str(root), "/etc/passwd") == (None, "path outside the dataset folder")
    assert thumbnail_uri(str(root), "cat/missing.png")[0] is None
    uri, why = thumbnail_uri(str(root), "cat/big.jpg")  # a big photo shrinks to a thumbnail
    assert why is None
    assert max(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size) == THUMBNAIL_PX


def test_a_run_without_predictions_has_no_gallery_and_says_so(tmp_path):
    run = _run(tmp_path, predictions=False)
    gallery = mistakes_gallery(run, 5)
    assert gallery.mistakes == [] and "no per-image predictions" in gallery.note
