"""The training input of every replica, as iterators that a checkpoint can hold.

`strategy.distribute_datasets_from_function` returns a `DistributedIterator` that a
`tf.train.Checkpoint` cannot track, so the input position would be lost at a resume.
Here each local replica reads its own `tf.data` pipeline (an `InputContext` with one
input pipeline per replica over the whole run: the files, or with fewer files than
replicas the records, are sharded by replica) through a plain iterator, and each step
hands the replicas their next batch with `experimental_distribute_values_from_function`.
Plain iterators are checkpointable: their state (the readers' offsets, the shuffle
buffer, the elements buffered by the parallel maps and the prefetch) is saved with the
model, so that a resumed run reads exactly the batches that the interrupted one would
have read next.
"""

import tensorflow as tf

from stmn_tf.data import pipeline


def _local_replica_ids(strategy):
    """The global replica ids (`replica_id_in_sync_group`) of this task's replicas."""
    ids = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(context.replica_id_in_sync_group, tf.int32))
    return [int(value) for value in strategy.experimental_local_results(ids)]


class ReplicaInputs:
    """One checkpointable iterator per local replica and the distributed batch of a step.

    Args:
        strategy: tf.distribute.Strategy of the run.
        data_config: DataConfig of the training data (`is_training` True).

    Attributes:
        iterators: dict, global replica id -> `tf.data` iterator of that replica's
            per-replica batches (the `stmn_tf.data.pipeline` training elements, batch
            size global_batch_size / replicas).
        trackable: a `tf.train.Checkpoint` holding the iterators (`replica_<id>`), to
            attach to the training checkpoint.

    Example:
        inputs = ReplicaInputs(strategy, config.train_data)
        batch = inputs.next()   # per-replica values, for strategy.run
    """

    def __init__(self, strategy, data_config):
        self.strategy = strategy
        self.data_config = data_config
        replicas = strategy.num_replicas_in_sync
        self.iterators = {}
        for replica in _local_replica_ids(strategy):
            context = tf.distribute.InputContext(
                num_input_pipelines=replicas, input_pipeline_id=replica,
                num_replicas_in_sync=replicas)
            self.iterators[replica] = iter(pipeline.build_dataset(data_config, context))
        self.trackable = tf.train.Checkpoint(
            **{f"replica_{replica}": iterator for replica, iterator in self.iterators.items()})

    def _next_of(self, replica):
        iterator = self.iterators[replica]
        try:
            return next(iterator)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            # The native reader's errors do not name the file: find it.
            raise pipeline.explain_read_error(self.data_config, e) from e

    def next(self):
        """The next batch of every replica, as per-replica values."""
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: self._next_of(context.replica_id_in_sync_group))
