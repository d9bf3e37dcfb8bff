import numpy as np
import pytest

from featpipe import shapes


def test_target_classes_are_new_pairs_of_shapes_and_textures_the_source_teaches():
    assert not set(shapes.TARGET_CLASSES) & set(shapes.SOURCE_CLASSES)
    assert len(shapes.SOURCE_CLASSES) + len(shapes.TARGET_CLASSES) == len(shapes.SHAPES) * len(shapes.TEXTURES)
    for shape, texture in shapes.TARGET_CLASSES:
        assert any(s == shape for s, _ in shapes.SOURCE_CLASSES)
        assert any(t == texture for _, t in shapes.SOURCE_CLASSES)
    # Balanced: neither attribute alone tells the target classes apart.
    assert len({s for s, _ in shapes.TARGET_CLASSES}) > 1 and len({t for _, t in shapes.TARGET_CLASSES}) > 1


def test_make_images_is_balanced_shuffled_and_reproducible():
    classes = shapes.TARGET_CLASSES[:3]
    images, labels = shapes.make_images(classes, 4, 20, seed=(3, 1))
    again, _ = shapes.make_images(classes, 4, 20, seed=(3, 1))
    other, _ = shapes.make_images(classes, 4, 20, seed=(3, 2))
    assert images.shape == (12, 20, 20, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [4, 4, 4]
    assert labels.tolist() != sorted(labels.tolist())
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert shapes.make_images(classes, 0, 20, seed=0)[0].shape == (0, 20, 20, 3)


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_every_shape_is_drawn_where_it_is_asked(shape):
    mask = shapes.shape_mask(shape, 32, centre=(16, 16), radius=12, angle=0.0)
    assert mask.shape == (32, 32) and 0 <= mask.min() and mask.max() <= 1
    assert mask[:3].max() == 0 and mask[:, :3].max() == 0  # nothing far from the centre
    assert 0.1 < mask.mean() < 0.6


def test_shapes_with_holes_leave_them_empty():
    for shape in ("ring", "crescent"):
        assert shapes.shape_mask(shape, 32, (16, 16), 12, 0.0)[16, 16] == 0
    assert shapes.shape_mask("circle", 32, (16, 16), 12, 0.0)[16, 16] == 1


def test_textures_have_their_orientation():
    rng = np.random.default_rng(0)
    assert not shapes.texture("solid", 32, rng).any()
    horizontal, vertical = shapes.texture("hstripes", 32, rng), shapes.texture("vstripes", 32, rng)
    # Along the stripes the pattern barely changes; across them it does.
    assert np.abs(np.diff(horizontal, axis=1)).mean() < np.abs(np.diff(horizontal, axis=0)).mean()
    assert np.abs(np.diff(vertical, axis=0)).mean() < np.abs(np.diff(vertical, axis=1)).mean()
    for name in ("diagonal", "checks", "dots"):
        pattern = shapes.texture(name, 32, rng)
        assert 0.1 < pattern.mean() < 0.9


def test_colour_is_no_clue_to_the_class():
    images, labels = shapes.make_images(shapes.TARGET_CLASSES, 150, 16, seed=0)
    means = np.array([images[labels == k].reshape(-1, 3).mean(0) for k in range(len(shapes.TARGET_CLASSES))])
    assert np.ptp(means, axis=0).max() < 20  # per-class mean colours differ by sampling noise only


def test_unknown_shape_or_texture_is_an_error():
    with pytest.raises(ValueError, match="unknown shape"):
        shapes.shape_mask("blob", 16, (8, 8), 4, 0.0)
    with pytest.raises(ValueError, match="unknown texture"):
        shapes.texture("plaid", 16, np.random.default_rng(0))
