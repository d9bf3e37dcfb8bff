"""featpipe.depthwise_folding: a depthwise convolution's constant per-channel scale folded into its filter,
and nothing else."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from featpipe.depthwise_folding import fold_depthwise_scales, fold_forward
from featpipe.model_parts import frozen_forward

RNG = np.random.default_rng(0)
KERNEL = RNG.normal(size=(3, 3, 3, 2)).astype("float32")  # 3 channels in, multiplier 2: 6 channels out
VARIANCE = RNG.uniform(0.5, 2, 6).astype("float32")
OFFSET = RNG.normal(size=6).astype("float32")
IMAGES = RNG.uniform(0, 1, (7, 6, 6, 3)).astype("float32")


def graph_function(call):
    return tf.function(call, input_signature=[tf.TensorSpec([None, 6, 6, 3], tf.float32)], autograph=False)


def depthwise(x):
    return tf.nn.depthwise_conv2d(x, tf.constant(KERNEL), [1, 1, 1, 1], "SAME")


def batch_norm_scale():
    """A scale as Keras' batch normalisation computes it in a frozen graph: from constants, in the graph."""
    return tf.math.rsqrt(tf.constant(VARIANCE) + 1e-3) * tf.constant(1.5)


def scaled_convolutions(graph_def) -> int:
    """Mul nodes that take a depthwise convolution's output."""
    ops = {node.name: node.op for node in graph_def.node}
    return sum(node.op == "Mul" and any(ops[i.split(":")[0]] == "DepthwiseConv2dNative" for i in node.input)
               for node in graph_def.node)


def check_same_values(function, folded_count: int) -> None:
    graph_def = function.get_concrete_function().graph.as_graph_def()
    before = graph_def.SerializeToString()
    _, folded = fold_depthwise_scales(graph_def)
    assert folded == folded_count
    assert graph_def.SerializeToString() == before  # the caller's graph is not rewritten in place
    forward = fold_forward(function)
    assert (forward is function) == (folded_count == 0)
    for n in (1, 4, 7):  # a batch of any size
        np.testing.assert_allclose(forward(IMAGES[:n]).numpy(), function(IMAGES[:n]).numpy(), rtol=1e-5, atol=1e-6)


def test_a_batch_norms_scale_after_a_depthwise_convolution_goes_into_its_filter():
    function = graph_function(lambda x: tf.nn.relu6(depthwise(x) * batch_norm_scale() + OFFSET))
    folded, count = fold_depthwise_scales(function.get_concrete_function().graph.as_graph_def())
    assert count == 1 and scaled_convolutions(folded) == 0
    check_same_values(function, 1)


def test_the_scale_may_come_first_or_be_one_number():
    check_same_values(graph_function(lambda x: batch_norm_scale() * depthwise(x) + OFFSET), 1)
    check_same_values(graph_function(lambda x: depthwise(x) * tf.constant(2.0)), 1)


@pytest.mark.parametrize("call", [
    pytest.param(lambda x: depthwise(x) * tf.reduce_mean(x), id="a scale that depends on the images"),
    pytest.param(lambda x: (lambda d: d * batch_norm_scale() + tf.nn.relu(d))(depthwise(x)),
                 id="a convolution whose output goes elsewhere too"),
    pytest.param(lambda x: depthwise(x) * tf.constant(RNG.uniform(0.5, 2, (6, 1, 6)).astype("float32")),
                 id="a scale that varies along the rows"),
    pytest.param(lambda x: depthwise(x) * tf.random.stateless_uniform([6], [1, 2]),
                 id="a scale from an op that is not arithmetic on constants"),
    pytest.param(lambda x: tf.nn.relu(x) * tf.constant(2.0), id="no convolution"),
])
def test_nothing_else_is_folded(call):
    check_same_values(graph_function(call), 0)


def test_a_filter_that_another_convolution_also_uses_stays_as_it_is():
    shared = tf.constant(KERNEL)

    def call(x):
        a = tf.nn.depthwise_conv2d(x, shared, [1, 1, 1, 1], "SAME")
        b = tf.nn.depthwise_conv2d(x * 2, shared, [1, 1, 1, 1], "SAME")
        return a * batch_norm_scale() + b

    graph_def = graph_function(call).get_concrete_function().graph.as_graph_def()
    kernels = [n for n in graph_def.node if n.op == "Const" and n.attr["value"].tensor.tensor_shape.dim
               and [d.size for d in n.attr["value"].tensor.tensor_shape.dim] == [3, 3, 3, 2]]
    if len(kernels) != 1:
        pytest.skip("tracing made a constant per use: the filter is not shared in this graph")
    check_same_values(graph_function(call), 0)


def test_frozen_forward_folds_a_keras_mobilenet_block():
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False)
    norm = keras.layers.BatchNormalization()
    x = keras.layers.ReLU(6.0)(norm(conv(inputs)))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 1)(x)))
    norm.set_weights([RNG.uniform(0.5, 2, 6), RNG.normal(size=6), RNG.normal(size=6), RNG.uniform(0.5, 2, 6)])
    forward = frozen_forward(model)
    for n in (1, 7):
        np.testing.assert_allclose(forward(IMAGES[:n]).numpy(), model(IMAGES[:n], training=False).numpy(),
                                   rtol=1e-5, atol=1e-5)
    assert scaled_convolutions(forward.get_concrete_function().graph.as_graph_def()) == 0  # the rewritten graph runs
