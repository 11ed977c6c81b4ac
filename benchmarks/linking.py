"""Benchmark of the temporal linkers on a 300-frame video with 300 boxes per frame.

Synthetic detections: moving objects, each seen by a cloud of jittered boxes per frame,
plus random false positives; either spread over 30 classes (what a VID detector
outputs) or all of one class (the worst case for the per-class loops).

    python benchmarks/linking.py [--frames 300] [--boxes 300] [--repeats 3]

Prints a table and, last, one JSON line with the timings in seconds.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stmn_tf.ops.seq_nms import seq_nms_xyxy  # noqa: E402
from stmn_tf.ops.tube_linking import viterbi_link_xyxy  # noqa: E402


def make_video(num_frames, boxes_per_frame, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    num_objects = 10
    per_object = boxes_per_frame // (2 * num_objects)  # half the boxes on objects
    start = rng.uniform(0, 1000, (num_objects, 2))
    velocity = rng.normal(0, 3, (num_objects, 2))
    size = rng.uniform(40, 200, (num_objects, 2))
    object_class = rng.integers(1, num_classes + 1, num_objects)
    frames = []
    for t in range(num_frames):
        xy = start + velocity * t
        centre = np.repeat(xy, per_object, axis=0) + rng.normal(0, 6, (num_objects * per_object, 2))
        wh = np.repeat(size, per_object, axis=0) * rng.uniform(0.85, 1.15, (num_objects * per_object, 2))
        labels = np.where(rng.uniform(size=len(centre)) < 0.8, np.repeat(object_class, per_object),
                          rng.integers(1, num_classes + 1, len(centre)))
        scores = rng.uniform(0.05, 1.0, len(centre))
        n_noise = boxes_per_frame - len(centre)
        noise_xy = rng.uniform(0, 1200, (n_noise, 2))
        noise_wh = rng.uniform(10, 150, (n_noise, 2))
        boxes = np.concatenate([np.concatenate([centre - wh / 2, centre + wh / 2], 1),
                                np.concatenate([noise_xy, noise_xy + noise_wh], 1)])
        frames.append({"boxes": boxes,
                       "scores": np.concatenate([scores, rng.uniform(0.0, 0.5, n_noise)]),
                       "labels": np.concatenate([labels, rng.integers(1, num_classes + 1, n_noise)])})
    return frames


def timed(fn, frames, repeats):
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(frames)
        best = min(best, time.perf_counter() - t)
    return best, sum(len(f["scores"]) for f in out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--boxes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    linkers = {
        "seq_nms": seq_nms_xyxy,
        "viterbi (D&T, 25/frame)": viterbi_link_xyxy,
        "viterbi (D&T, no cap)": lambda f: viterbi_link_xyxy(f, max_per_frame=None),
    }
    results = {}
    print(f"{'linker':<26} {'classes':>7} {'seconds':>9} {'ms/frame':>9} {'boxes out':>10}")
    for num_classes in (30, 1):
        frames = make_video(args.frames, args.boxes, num_classes)
        for name, fn in linkers.items():
            seconds, kept = timed(fn, frames, args.repeats)
            results[f"{name}|{num_classes}"] = round(seconds, 4)
            print(f"{name:<26} {num_classes:>7} {seconds:>9.3f} {1000 * seconds / args.frames:>9.2f} {kept:>10}")
    print(json.dumps({"benchmark": "linking", "frames": args.frames, "boxes_per_frame": args.boxes,
                      "seconds": results}))


if __name__ == "__main__":
    main()
