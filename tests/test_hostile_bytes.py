"""Property: arbitrary bytes under an image name, through the decode path of extraction, fine-tuning and
predict, are decoded or skipped with a recorded reason -- never a crash, a hang or a huge allocation."""

import csv
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from featpipe import prediction as predict_module
from featpipe.pipeline import indexed_images, unreadable_reason


def _png(width=12, height=9) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


VALID = {".png": _png()}
for fmt, ext in (("JPEG", ".jpg"), ("GIF", ".gif"), ("BMP", ".bmp")):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(VALID[".png"])).convert("RGB").save(buffer, fmt)
    VALID[ext] = buffer.getvalue()
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"GIF87a", b"BM"]


@st.composite
def hostile_files(draw):
    """(extension, bytes): random bytes behind a real magic number, or a real image with bytes flipped,
    cut, or a header claiming a huge size."""
    ext = draw(st.sampled_from(sorted(VALID)))
    kind = draw(st.sampled_from(["random", "mutated", "cut", "huge"]))
    if kind == "random":
        return ext, draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=512))
    data = bytearray(VALID[ext])
    if kind == "cut":
        return ext, bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "huge" and ext == ".png":  # IHDR width and height
        data[16:24] = draw(st.binary(min_size=8, max_size=8))
        return ext, bytes(data)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return ext, bytes(data)


SETTINGS = settings(max_examples=25, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


@pytest.mark.slow
@pytest.mark.timeout(600)
@SETTINGS
@given(files=st.lists(hostile_files(), min_size=1, max_size=4))
def test_decode_path_decodes_or_records_a_reason(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("bytes")
    paths = []
    for i, (ext, data) in enumerate(files):
        paths.append(str(folder / f"{i}{ext}"))
        (folder / f"{i}{ext}").write_bytes(data)
    out = list(indexed_images(paths, (8, 8)).as_numpy_iterator())
    rows = [int(row) for _, row in out]
    assert rows == sorted(set(rows)) and set(rows) <= set(range(len(paths)))
    for image, _ in out:
        assert image.shape == (8, 8, 3) and np.isfinite(image).all()
    for row in set(range(len(paths))) - set(rows):
        reason = unreadable_reason(paths[row])
        assert isinstance(reason, str) and reason and "\n" not in reason


@pytest.mark.slow
@pytest.mark.timeout(600)
@SETTINGS
@given(files=st.lists(hostile_files(), min_size=1, max_size=3))
def test_predict_writes_a_row_for_every_file(tmp_path_factory, monkeypatch, files):
    folder = tmp_path_factory.mktemp("predict")
    for i, (ext, data) in enumerate(files):
        (folder / f"{i}{ext}").write_bytes(data)
    classifier = predict_module.ImageClassifier(
        ["a", "b"], (8, 8), False, lambda images: np.tile([0.25, 0.75], (images.shape[0], 1)))
    monkeypatch.setattr(predict_module, "load_classifier", lambda run_dir: classifier)
    result = predict_module.predict(folder, [folder], folder / "p.csv")
    with open(folder / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result.rows == len(files)
    assert all((r["predicted_class"] == "b") != bool(r["error"]) for r in rows)
    assert sum(bool(r["error"]) for r in rows) == result.errors
