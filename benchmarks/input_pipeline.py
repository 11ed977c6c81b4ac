"""Input pipeline throughput at 600-pixel frames (the target: never the bottleneck).

    python benchmarks/input_pipeline.py [--videos 4] [--clips 40] [--steps 20] \
        [--reader-records 48]

Writes a few synthetic 600x800 videos to a temporary folder, then measures training
clips/s and frames/s with and without augmentation (flip); the record reader alone
(records/s, MB/s, reading and parsing the video SequenceExamples), native
TFRecordDataset against the Python `checked_reader`, reading 2 and 8 files in
parallel (one video per file, from the page cache: the readers' CPU cost); then the pipeline's share
of a training step of the tiny STMN on the embedded synthetic data (the real pipeline
against one cached batch repeated; the target is within 5%). Prints a table and a
final JSON line.
"""

import argparse
import json
import os
import tempfile
import time

import tensorflow as tf

from stmn_tf.data import config as config_lib
from stmn_tf.data import pipeline
from stmn_tf.data import schema
from stmn_tf.data import synthetic


def make_videos(directory, num_videos):
    config = config_lib.SyntheticConfig(num_train_videos=num_videos, height=600, width=800,
                                        min_frames=60, max_frames=60, min_object_size=120,
                                        max_object_size=220, max_speed=15.0, num_shards=2)
    return synthetic.write_tfrecords(os.path.join(directory, "train"), config, "train")


def data_config(directory, augment):
    return config_lib.DataConfig(
        input_path=os.path.join(directory, "train-*"), num_frames=7, frame_stride=5,
        image_size={"short_side": 600, "long_side_max": 1000, "padded_size": [608, 1024]},
        random_flip=augment, global_batch_size=1, shuffle_buffer_size=8, cycle_length=2)


def measure(config, clips, warmup=3):
    iterator = iter(pipeline.build_dataset(config))
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(clips):
        next(iterator)
    seconds = time.perf_counter() - start
    per_clip = config.num_frames * config.global_batch_size
    return {"clips_per_s": clips * config.global_batch_size / seconds,
            "frames_per_s": clips * per_clip / seconds}


def reader_throughput(directory, checked, parallel, records, warmup=4):
    """Records/s and MB/s of `pipeline.read_records` + parsing, `parallel` files at once."""
    config = config_lib.DataConfig(input_path=os.path.join(directory, "reader-*"),
                                   checked_reader=checked, cycle_length=parallel)
    dataset = pipeline.read_records(pipeline.list_files(config.input_path), config)
    dataset = dataset.map(lambda r: (tf.strings.length(r), schema.parse_video(r)["num_frames"]),
                          num_parallel_calls=parallel)
    iterator = iter(dataset.prefetch(parallel))
    for _ in range(warmup):
        next(iterator)
    size = 0
    start = time.perf_counter()
    for _ in range(records):
        size += int(next(iterator)[0])
    seconds = time.perf_counter() - start
    return {"records_per_s": records / seconds, "mb_per_s": size / seconds / 1e6}


def pipeline_share_of_step(step_fn, config, steps=20, warmup=3):
    """The input pipeline's share of a training step's time.

    Runs `step_fn(batch)` on batches from the real pipeline and on one cached batch
    repeated; returns {"step_s_real", "step_s_cached", "share"} where share =
    1 - cached / real (0 when the pipeline hides fully behind the step).
    """
    dataset = pipeline.build_dataset(config)
    cached = next(iter(dataset))

    def run(batches):
        for _ in range(warmup):
            step_fn(next(batches))
        start = time.perf_counter()
        for _ in range(steps):
            step_fn(next(batches))
        return (time.perf_counter() - start) / steps

    real = run(iter(dataset))
    cached_time = run(iter(tf.data.Dataset.from_tensors(cached).repeat()))
    return {"step_s_real": real, "step_s_cached": cached_time,
            "share": max(0.0, 1.0 - cached_time / real)}


def tiny_stmn_step_share(directory, steps):
    """The pipeline's share of a training step of the tiny STMN (synthetic_tiny_stmn)."""
    from stmn_tf import configs
    from stmn_tf.training import trainer

    config = configs.DEFAULTS["synthetic_tiny_stmn"]()
    config.synthetic_data_dir = directory
    config.train_data.synthetic.override({"num_train_videos": 24, "num_val_videos": 2,
                                          "num_test_videos": 2})
    config = synthetic.resolve_synthetic_data(config)
    strategy = tf.distribute.get_strategy()
    state = trainer.TrainingState(config, strategy)
    step = trainer.make_train_step(state, strategy,
                                   weight_decay=config.train.optimizer.weight_decay)
    return pipeline_share_of_step(step, config.train_data, steps=steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    parser.add_argument("--reader-records", type=int, default=48,
                        help="records per reader measurement (0: skip them)")
    args = parser.parse_args()
    results = {}
    readers = {}
    with tempfile.TemporaryDirectory() as directory:
        make_videos(directory, args.videos)
        for augment in (False, True):
            results["flip" if augment else "no_augmentation"] = measure(
                data_config(directory, augment), args.clips)
        if args.reader_records > 0:
            # 8 files of one video each (the 2-shard files' videos, rewritten).
            videos = [record for path in sorted(tf.io.gfile.glob(os.path.join(directory, "train-*")))
                      for record in tf.data.TFRecordDataset(path).as_numpy_iterator()]
            for index in range(8):
                with tf.io.TFRecordWriter(os.path.join(directory, f"reader-{index:02d}")) as writer:
                    writer.write(videos[index % len(videos)])
            for parallel in (2, 8):
                for checked in (False, True):
                    name = f"{'python' if checked else 'native'}_x{parallel}"
                    readers[name] = reader_throughput(directory, checked, parallel,
                                                      args.reader_records)
    with tempfile.TemporaryDirectory() as directory:
        share = tiny_stmn_step_share(directory, args.steps)
    print(f"{'setting':<18}{'clips/s':>10}{'frames/s':>10}   (T=7, 600x800 -> 600x800 in 608x1024)")
    for name, r in results.items():
        print(f"{name:<18}{r['clips_per_s']:>10.2f}{r['frames_per_s']:>10.1f}")
    for name, r in readers.items():
        print(f"reader {name:<11}{r['records_per_s']:>10.1f} records/s {r['mb_per_s']:>8.1f} MB/s")
    print(f"tiny STMN training step (4 clips x 7 frames, 128x128): "
          f"{share['step_s_real'] * 1e3:.0f} ms with the pipeline, "
          f"{share['step_s_cached'] * 1e3:.0f} ms on a cached batch: "
          f"pipeline share {100 * share['share']:.1f}%")
    print(json.dumps({"benchmark": "input_pipeline", "frame_size": [600, 800], "num_frames": 7,
                      "cores": os.cpu_count(), **results, "readers": readers,
                      "tiny_stmn_step": share}))


if __name__ == "__main__":
    main()
