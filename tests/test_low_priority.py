"""featpipe.low_priority: the pipeline's threads run below the caller's priority; elements, order and errors as
plain iteration gives them."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from featpipe import low_priority
from featpipe.low_priority import MAX_NICE, NICE_STEPS, iterate_below


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _recording_dataset(seen: list) -> tf.data.Dataset:
    """Six elements whose generator notes its own thread's priority, and that of a thread it starts (as the
    pipeline's reading threads are), then a parallel map that notes the priority of tf.data's threads."""
    def generate():
        with ThreadPoolExecutor(2) as pool:
            for i in range(6):
                seen.append(("generator", _nice()))
                seen.append(("reader", pool.submit(_nice).result()))
                yield i

    def note(x):
        seen.append(("map", _nice()))
        return x

    dataset = tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec((), tf.int64))
    dataset = dataset.map(lambda x: tf.py_function(note, [x], tf.int64), num_parallel_calls=2, deterministic=True)
    return dataset.batch(2).prefetch(1)


@pytest.mark.skipif(not low_priority.lowers_priority(), reason="threads have their own priority on Linux only")
def test_every_thread_the_pipeline_starts_runs_lower_and_the_caller_keeps_its_priority():
    caller, seen = _nice(), []
    batches = [b.numpy().tolist() for b in iterate_below(_recording_dataset(seen))]
    assert batches == [[0, 1], [2, 3], [4, 5]]
    assert {kind for kind, _ in seen} == {"generator", "reader", "map"}
    assert {nice for _, nice in seen} == {min(MAX_NICE, caller + NICE_STEPS)}
    assert _nice() == caller


def test_where_threads_share_the_process_priority_the_pipeline_keeps_it(monkeypatch):
    monkeypatch.setattr(low_priority, "lowers_priority", lambda: False)
    caller, seen = _nice(), []
    assert [b.numpy().tolist() for b in iterate_below(_recording_dataset(seen))] == [[0, 1], [2, 3], [4, 5]]
    assert {nice for _, nice in seen} == {caller}


def test_a_sandbox_that_forbids_lowering_leaves_the_pipeline_at_the_callers_priority(monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(low_priority, "lowers_priority", lambda: True)
    monkeypatch.setattr(os, "setpriority", refuse)
    caller, seen = _nice(), []
    assert [b.numpy().tolist() for b in iterate_below(_recording_dataset(seen))] == [[0, 1], [2, 3], [4, 5]]
    assert {nice for _, nice in seen} == {caller}


def test_elements_come_in_order_and_an_empty_dataset_gives_none():
    images = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    got = list(iterate_below(tf.data.Dataset.from_tensor_slices(images).batch(4)))
    assert [g.shape for g in got] == [(4, 2, 2), (2, 2, 2)]
    np.testing.assert_array_equal(np.concatenate(got), images)
    assert list(iterate_below(tf.data.Dataset.range(0))) == []
    assert list(iterate_below([None, 1])) == [None, 1]  # a first element that is None is an element


def test_an_error_taking_the_first_element_is_raised_in_the_caller():
    def broken():
        raise OSError("disk gone")
        yield  # a generator

    with pytest.raises(OSError, match="disk gone"):
        iterate_below(broken())
    dataset = tf.data.Dataset.from_tensor_slices(["not a number"]).map(lambda s: tf.strings.to_number(s))
    with pytest.raises(tf.errors.InvalidArgumentError):
        iterate_below(dataset)
