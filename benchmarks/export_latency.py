"""Latency of the portable SavedModel against the export with the compiled MatchTrans op.

STMN on ResNet-50 at the paper's 337x600 frame (22x38 features), random weights: the
model is exported twice with the public export function, once portable (MatchTrans as
standard TensorFlow ops, what a stock TF Serving runs) and once with the compiled
`Stmn>MatchTrans` op (the same graph as the in-framework model with the op), both
loaded back with `tf.saved_model.load`. Times `serving_default` on an 11-frame uint8
clip and `stream` per frame (the state carried from frame to frame), the two exports
called in turn in each round.

    python benchmarks/export_latency.py [--repeats 2] [--frames 11] [--depth 50]

Prints a table, then one JSON line with the seconds per clip, the milliseconds per
streamed frame and the portable / custom-op ratios. Heavy on a small CPU: keep the
repeats small.

    python benchmarks/export_latency.py --formats [--repeats 3] [--frames 11]

instead compares the deployment formats on the tiny synthetic STMN
(configs/synthetic_tiny_stmn.yaml, random weights, 96x80 uint8 frames): the portable
SavedModel (`tf.saved_model.load`), ONNX (onnxruntime, CPU provider) and TFLite (the
TFLite interpreter, float32), milliseconds per frame of the clip model
(`serving_default` / `model.onnx`, over the whole clip) and of the stream (state fed
back frame by frame).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stmn_tf import ops  # noqa: E402
from stmn_tf.configs import load_config  # noqa: E402
from stmn_tf.data import pipeline  # noqa: E402
from stmn_tf.models.builders import build_model  # noqa: E402
from stmn_tf.serving.export import export_saved_model  # noqa: E402

HEIGHT, WIDTH = 337, 600  # the paper's test frame (Sec. 3.3)
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "stmn_resnet101_vid.yaml")


def experiment(depth):
    overrides = ",".join([
        f"model.backbone.depth={depth}",
        f"eval_data.image_size.short_side={HEIGHT}",
        f"eval_data.image_size.long_side_max={WIDTH}",
        # Padded to a multiple of 32: 22x38 features at stride 16.
        "eval_data.image_size.padded_size=[352,608]",
    ])
    return load_config(CONFIG, overrides)


def log(message):
    print(f"  {message}", file=sys.stderr, flush=True)


def timed_medians(calls, repeats):
    """`{key: median seconds}` of `calls` (`{(name, kind): fn}`), after one warm-up call
    of each (traces, allocations); each round calls every function once, in turn, so
    that load from other processes falls on all of them alike."""
    for key, fn in calls.items():
        log(f"warm-up {key[0]} {key[1]}")
        fn()
    times = {key: [] for key in calls}
    for r in range(repeats):
        log(f"round {r + 1}/{repeats}")
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: float(np.median(t)) for key, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frames", type=int, default=11)
    parser.add_argument("--depth", type=int, default=50, help="ResNet depth")
    parser.add_argument("--output", default=None,
                        help="directory for the temporary exports (default: the system's)")
    parser.add_argument("--formats", action="store_true",
                        help="compare SavedModel, ONNX and TFLite on the tiny synthetic STMN")
    args = parser.parse_args(argv)
    if args.formats:
        return format_latency(args)

    ops.load_library()  # the custom-op export needs it to load; fail loudly here
    config = experiment(args.depth)
    keras.utils.set_random_seed(0)
    log(f"building STMN on ResNet-{args.depth}")
    model = build_model(config.model)
    rng = np.random.default_rng(0)
    clip = tf.constant(rng.integers(0, 256, size=(args.frames, HEIGHT, WIDTH, 3), dtype=np.uint8))

    with tempfile.TemporaryDirectory(dir=args.output) as root:
        loaded = {}
        for name, custom_op in (("portable", False), ("custom_op", True)):
            log(f"exporting the {name} SavedModel")
            path = export_saved_model(model, config.eval_data.image_size,
                                      os.path.join(root, name), custom_op=custom_op)
            loaded[name] = tf.saved_model.load(path)
        del model

        def clip_call(module):
            signature = module.signatures["serving_default"]
            return lambda: signature(images=clip)["num_detections"].numpy()

        def stream_call(module):
            signature = module.signatures["stream"]
            specs = signature.structured_input_signature[1]
            zeros = {key: tf.zeros(specs[key].shape, specs[key].dtype)
                     for key in ("state_memory", "state_features")}

            def run():
                state = dict(zeros)
                for t in range(args.frames):
                    answer = signature(frame=clip[t], **state)
                    state = {key: answer[key] for key in state}
                answer["num_detections"].numpy()
            return run

        calls = {(name, kind): make(module) for name, module in loaded.items()
                 for kind, make in (("clip", clip_call), ("stream", stream_call))}
        seconds = timed_medians(calls, args.repeats)

    result = {"frames": args.frames, "depth": args.depth, "image": [HEIGHT, WIDTH],
              "repeats": args.repeats}
    header = f"{'export':>10} {'serving_default s/clip':>22} {'stream ms/frame':>16}"
    print(f"STMN ResNet-{args.depth}, {args.frames} frames of {HEIGHT}x{WIDTH}, "
          f"median of {args.repeats} rounds")
    print(header)
    print("-" * len(header))
    for name in loaded:
        clip_s = seconds[(name, "clip")]
        stream_ms = 1e3 * seconds[(name, "stream")] / args.frames
        result[f"{name}_clip_s"] = round(clip_s, 3)
        result[f"{name}_stream_ms_per_frame"] = round(stream_ms, 1)
        print(f"{name:>10} {clip_s:>22.2f} {stream_ms:>16.1f}")
    result["clip_portable_over_custom_op"] = round(
        seconds[("portable", "clip")] / seconds[("custom_op", "clip")], 3)
    result["stream_portable_over_custom_op"] = round(
        seconds[("portable", "stream")] / seconds[("custom_op", "stream")], 3)
    print(f"portable / custom op: clip {result['clip_portable_over_custom_op']:.3f}, "
          f"stream {result['stream_portable_over_custom_op']:.3f}")
    print(json.dumps(result))


def format_latency(args):
    """The --formats mode (see the module docstring)."""
    import onnxruntime

    from stmn_tf.serving.onnx_export import export_onnx
    from stmn_tf.serving.tflite_export import export_tflite

    config = load_config(os.path.join(os.path.dirname(CONFIG), "synthetic_tiny_stmn.yaml"))
    keras.utils.set_random_seed(0)
    model = build_model(config.model)
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(args.frames, 96, 80, 3), dtype=np.uint8)
    image_size = config.eval_data.image_size
    with tempfile.TemporaryDirectory(dir=args.output) as root:
        log("exporting SavedModel, ONNX, TFLite")
        saved = tf.saved_model.load(export_saved_model(model, image_size, os.path.join(root, "sm")))
        onnx_dir = export_onnx(model, image_size, os.path.join(root, "onnx"))
        lite32 = export_tflite(model, image_size, os.path.join(root, "lite32"))
        shapes = {key: [int(s) for s in value]
                  for key, value in model.state_shapes(*pipeline.padded_size(image_size)).items()}
        zeros = {f"state_{key}": np.zeros(shape, np.float32) for key, shape in shapes.items()}

        def saved_stream():
            state = dict(zeros)
            for frame in clip:
                answer = saved.signatures["stream"](frame=frame, **state)
                state = {key: answer[key] for key in state}

        session_clip = onnxruntime.InferenceSession(os.path.join(onnx_dir, "model.onnx"),
                                                    providers=["CPUExecutionProvider"])
        session_stream = onnxruntime.InferenceSession(os.path.join(onnx_dir, "stream.onnx"),
                                                      providers=["CPUExecutionProvider"])

        def onnx_stream():
            state = dict(zeros)
            for frame in clip:
                answer = dict(zip([o.name for o in session_stream.get_outputs()],
                                  session_stream.run(None, {"frame": frame, **state})))
                state = {key: answer[f"next_{key}"] for key in state}

        def lite_stream(path):
            runner = tf.lite.Interpreter(os.path.join(path, "stream.tflite")).get_signature_runner("stream")

            def run():
                state = dict(zeros)
                for frame in clip:
                    answer = runner(frame=frame, **state)
                    state = {key: answer[key] for key in state}
            return run

        calls = {
            ("SavedModel", "clip"): lambda: saved.signatures["serving_default"](images=clip),
            ("SavedModel", "stream"): saved_stream,
            ("ONNX", "clip"): lambda: session_clip.run(None, {"images": clip}),
            ("ONNX", "stream"): onnx_stream,
            ("TFLite", "stream"): lite_stream(lite32),
        }
        seconds = timed_medians(calls, args.repeats)
    ms = {key: 1e3 * value / args.frames for key, value in seconds.items()}
    header = f"{'format':>16} {'clip ms/frame':>14} {'stream ms/frame':>16}"
    print(f"tiny synthetic STMN, {args.frames} frames of 96x80, median of {args.repeats} rounds")
    print(header)
    print("-" * len(header))
    result = {"frames": args.frames, "repeats": args.repeats}
    for name in ("SavedModel", "ONNX", "TFLite"):
        clip_ms = ms.get((name, "clip"))
        stream_ms = ms[(name, "stream")]
        clip_text = f"{clip_ms:.1f}" if clip_ms is not None else "-"
        print(f"{name:>16} {clip_text:>14} {stream_ms:>16.1f}")
        key = name.lower().replace(" ", "_")
        result[f"{key}_stream_ms_per_frame"] = round(stream_ms, 2)
        if clip_ms is not None:
            result[f"{key}_clip_ms_per_frame"] = round(clip_ms, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
