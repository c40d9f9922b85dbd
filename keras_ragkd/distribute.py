"""`MultiWorkerFitMixin`: `model.fit` under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3's own `fit`/`evaluate` fail under `MultiWorkerMirroredStrategy` in
multi-worker mode (keras-team/keras#20585; checked with Keras 3.15 / TF 2.21
and 2 worker processes), for two reasons in
`keras/src/backend/tensorflow/trainer.py`:

1. `TensorFlowTrainer._maybe_symbolic_build` builds the model from the first
   distributed batch, averaged with an eager `strategy.reduce("MEAN", batch,
   axis=None)`. The collective strategy cannot reduce a `PerReplica` input
   batch eagerly: "Attempt to convert a value (PerReplica...) to a Tensor".
2. `reduce_per_replica` averages each step's logs over the workers with
   `strategy.reduce("MEAN", value, axis=0)`, which fails for scalar logs
   (there is no axis 0), i.e. for every loss and metric.

The mixin fixes both, for models whose class lists it before `keras.Model`:
it builds from one local replica's batch (`experimental_local_results(v)[0]`;
building only needs shapes and dtypes), and it hands each scalar log to Keras
as a 1-vector, so that Keras' mean over axis 0 of the workers' vectors is the
mean of the scalars (what `strategy.reduce("MEAN", v, axis=None)` computes),
then gives the logs back as scalars. Nothing changes under any other strategy.
This module imports nothing else of `keras_ragkd`.
"""

import tensorflow as tf

__all__ = ["MultiWorkerFitMixin", "is_multi_worker"]


def is_multi_worker(strategy):
    """True for a `MultiWorkerMirroredStrategy` running with more than one worker."""
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.extended._in_multi_worker_mode()


def _first_local_value(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


class MultiWorkerFitMixin:
    """Makes `fit`/`evaluate` work under a multi-worker `MultiWorkerMirroredStrategy`.

    Put it before `keras.Model` in the bases of a model class (TensorFlow
    backend). Under every other strategy (none, `MirroredStrategy`,
    `TPUStrategy`, a one-worker `MultiWorkerMirroredStrategy`) it does nothing.

    Example:

    >>> import keras
    >>> class MyModel(MultiWorkerFitMixin, keras.Model):
    ...     pass
    >>> class MySequential(MultiWorkerFitMixin, keras.Sequential):
    ...     pass
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and strategy is not None and is_multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: _first_local_value(strategy, value), next(batches)
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _make_function(self, step_function):
        if not is_multi_worker(self.distribute_strategy):
            return super()._make_function(step_function)
        was_scalar = []  # One flag per flattened log, set when the step is traced.

        def step_with_vector_logs(data):
            logs = step_function(data)
            flat = tf.nest.flatten(logs)
            was_scalar[:] = [isinstance(v, tf.Tensor) and v.shape.rank == 0 for v in flat]
            vectors = [tf.reshape(v, [1]) if s else v for v, s in zip(flat, was_scalar)]
            return tf.nest.pack_sequence_as(logs, vectors)

        function = super()._make_function(step_with_vector_logs)

        def function_with_scalar_logs(iterator):
            logs = function(iterator)
            flat = tf.nest.flatten(logs)
            scalars = [tf.reshape(v, []) if s else v for v, s in zip(flat, was_scalar)]
            return tf.nest.pack_sequence_as(logs, scalars)

        return function_with_scalar_logs
