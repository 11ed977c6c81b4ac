"""Strategy selection and the roles of the workers of a multi-worker run.

`auto`: MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of more than one
task, otherwise MirroredStrategy over the local GPUs (or the logical CPU devices of
`--cpu-replicas`), otherwise the default one-device strategy.
"""

import json
import os
import tempfile

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")


def configure_cpu_replicas(count):
    """Splits the CPU into `count` logical devices so that MirroredStrategy has
    `count` replicas without GPUs. Must run before anything initialises TensorFlow's
    devices (listing them, creating a tensor), hence its place at train.py's start."""
    if count is None or count <= 1:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:
        raise RuntimeError(
            f"--cpu-replicas {count}: TensorFlow's devices were initialised before the CPU "
            f"could be split ({e})") from e


def cluster_spec():
    """The `cluster` of TF_CONFIG ({} when unset)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return {}
    try:
        return json.loads(text).get("cluster", {}) or {}
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e


def is_multi_worker_cluster():
    return sum(len(tasks) for tasks in cluster_spec().values()) > 1


def select_strategy(name="auto"):
    """Returns a `tf.distribute.Strategy` for `name` (one of STRATEGIES)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        if is_multi_worker_cluster():
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1 or len(
                tf.config.list_logical_devices("CPU")) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "multi_worker":
        # RING collectives work on CPUs and GPUs alike; NCCL is picked per device
        # by AUTO, which is what multi-GPU workers want.
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.AUTO))
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        # Cross-device ops: NCCL on GPUs (MirroredStrategy's default); on logical
        # CPU devices NCCL does not exist, so reduce on the host.
        cross_device_ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy):
    """True for the task that writes checkpoints, summaries and logs.

    In a multi-worker run this is the `chief` task, or worker 0 when the cluster
    has no chief (the convention of tf.distribute's own Keras callbacks)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or task_type is None or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())


def task_name(strategy):
    """"worker 1" in a multi-worker run, "" otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return ""
    return f"{resolver.task_type} {resolver.task_id}"


def worker_model_dir(model_dir, strategy):
    """Where this task writes: `model_dir` on the chief, a private temporary directory on
    the other workers. Every worker must still save (saving may run collectives), but
    only the chief's files are kept."""
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"stmn_{resolver.task_type}_{resolver.task_id}_")
