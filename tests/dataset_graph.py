"""What a tf.data dataset's graph is made of, for tests that check how a pipeline is built."""

import tensorflow as tf


def dataset_ops(data: tf.data.Dataset) -> set[str]:
    """Every op of the dataset's graph, its functions' included."""
    graph = tf.compat.v1.GraphDef.FromString(
        tf.raw_ops.DatasetToGraphV2(input_dataset=data._variant_tensor, external_state_policy=1).numpy())
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
