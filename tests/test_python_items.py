"""featpipe.python_items: items Python makes, as a tf.data dataset without a generator op."""

import numpy as np
import pytest
import tensorflow as tf

from dataset_graph import dataset_ops
from featpipe.python_items import PassSource, python_items

SPEC = (tf.TensorSpec((None,), tf.int64), tf.TensorSpec((), tf.string))


class Passes:
    """make_pass for tests: item k is (k, k+1, ... k+k) and its name; records each pass's start and end."""

    def __init__(self, count):
        self.count, self.started, self.closed = count, [], 0

    def __call__(self, start):
        self.started.append(start)
        try:
            for k in range(start, self.count):
                yield np.arange(k, 2 * k + 1), np.array(f"item {k}".encode(), dtype=object)
        finally:
            self.closed += 1


def passes(make, count, spec=SPEC):
    return python_items(PassSource(make, count), tf.data.Dataset.range(count), spec)


def items(dataset):
    return [(a.tolist(), name.decode()) for a, name in dataset.as_numpy_iterator()]


def test_every_pass_is_a_new_pass_of_the_items_in_order_closed_at_its_last_item():
    make = Passes(5)
    dataset = passes(make, 5)
    expected = [(list(range(k, 2 * k + 1)), f"item {k}") for k in range(5)]
    assert items(dataset) == expected
    assert make.started == [0] and make.closed == 1  # closed at the last item, the dataset still alive
    assert items(dataset) == expected and make.started == [0, 0] and make.closed == 2


def test_an_abandoned_pass_taken_up_again_goes_on_where_it_stopped():
    make = Passes(6)
    dataset = passes(make, 6)
    abandoned = iter(dataset)
    assert [int(next(abandoned)[0][0]) for _ in range(2)] == [0, 1]
    assert [k for k, _ in items(dataset)] == [list(range(k, 2 * k + 1)) for k in range(6)]  # a whole new pass
    rest = [int(a[0]) for a, _ in abandoned]
    # Its next item is started from, not the first (tf.data may have taken an item or two ahead before).
    assert rest == [2, 3, 4, 5] and make.started[:2] == [0, 0] and 2 <= make.started[2] <= 4


def test_items_in_any_order_one_spec_gives_tensors_and_a_wrong_shape_is_an_error():
    single = python_items(lambda k: np.full(2, k, np.float32), tf.data.Dataset.range(3).shuffle(3, seed=1),
                          tf.TensorSpec((None,), tf.float32))
    assert sorted(x.tolist() for x in single.as_numpy_iterator()) == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
    wrong = python_items(lambda k: np.zeros((2, 2), np.float32), tf.data.Dataset.range(3),
                         tf.TensorSpec((None,), tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(wrong)


def test_its_graph_holds_a_py_function_and_no_generator_dataset():
    """TensorFlow answers the first GeneratorDataset of a process with mallopt(M_MMAP_THRESHOLD, 128 KB) for the
    whole process: every large allocation would then come from freshly mapped, zeroed pages."""
    found = dataset_ops(passes(Passes(2), 2))
    assert "EagerPyFunc" in found and not any("Generator" in op for op in found)
    generator = tf.data.Dataset.from_generator(lambda: iter([1]), output_signature=tf.TensorSpec((), tf.int32))
    assert any("Generator" in op for op in dataset_ops(generator))  # what it looks for
