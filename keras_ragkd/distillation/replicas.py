"""Cross-replica sums, so losses average over the global batch under `tf.distribute`."""

import tensorflow as tf


def num_replicas():
    """Number of replicas in sync of the current strategy (1 without one).

    Example:

    >>> num_replicas()
    1
    """
    return tf.distribute.get_strategy().num_replicas_in_sync


def sum_over_replicas(value):
    """Sums a per-replica value over all replicas in sync (identity for 1).

    Args:
        value: a tensor computed in a replica context.

    Returns:
        The sum over replicas, the same on every replica.

    Example:

    >>> float(sum_over_replicas(tf.constant(2.0)))
    2.0
    """
    if num_replicas() == 1:
        return value
    context = tf.distribute.get_replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
