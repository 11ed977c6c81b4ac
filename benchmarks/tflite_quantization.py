"""mAP of the TFLite stream, float32 and quantised, on an experiment's eval split.

    python benchmarks/tflite_quantization.py MODEL_DIR [--max-videos N]

MODEL_DIR: a trained STMN's directory as train.py writes it (`config.yaml` and its
checkpoints). The stream is converted as `export.py --format tflite --quantize float16
dynamic_int8` converts it (`stmn_tf.serving.tflite_export.convert_stream`), plus a
full-integer int8 conversion (not offered by the export) calibrated on 24
representative inputs: the first 6 frames of 4 eval videos with the float32 stream's
states. Each file's `stream` runs over every eval video (state fed back, no linking)
and `stmn_tf.evaluation.vid_eval` scores the detections. Prints one line per file and a
final JSON line (mAP, file size, non-finite frames, ms per frame).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stmn_tf.configs import load_config  # noqa: E402
from stmn_tf.evaluation import vid_eval  # noqa: E402
from stmn_tf.evaluation.run import eval_frames  # noqa: E402
from stmn_tf.ops import box_ops  # noqa: E402
from stmn_tf.serving.export import restore_for_export  # noqa: E402
from stmn_tf.serving.export import saveable_root  # noqa: E402
from stmn_tf.serving.export import tracing  # noqa: E402
from stmn_tf.serving.signatures import DetectorServingModule  # noqa: E402
from stmn_tf.serving.tflite_export import QUANTIZATIONS  # noqa: E402
from stmn_tf.serving.tflite_export import convert_stream  # noqa: E402

CALIBRATION_VIDEOS, CALIBRATION_FRAMES = 4, 6


def eval_videos(config, max_videos):
    """`[[(uint8 frame [H, W, 3], (H, W), ground truth)]]` per eval video."""
    videos, current = [], None
    for video_id, frame in eval_frames(config.eval_data, max_videos):
        if video_id != current:
            videos.append([])
            current = video_id
        h, w = frame["image_size"]
        image = np.clip(np.round(np.asarray(frame["image"])[:h, :w]), 0, 255).astype(np.uint8)
        videos[-1].append((image, frame["original_size"], frame["meta"]["groundtruth"]))
    return videos


def run_stream(tflite_model, shapes, frames):
    """The TFLite `stream` over `frames`, the state fed back: a list of output dicts."""
    runner = tf.lite.Interpreter(model_content=tflite_model).get_signature_runner("stream")
    state = {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}
    answers = []
    for image, _, _ in frames:
        answer = runner(frame=image, **state)
        answers.append(answer)
        state = {key: answer[key] for key in shapes}
    return answers


def full_integer(module, representative):
    """The stream with int8 weights and activations calibrated on `representative`."""
    stream = module.stream_function().get_concrete_function()
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(saveable_root(module.model, {"stream": stream}), saved,
                            signatures={"stream": stream})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["stream"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(representative)
        return converter.convert()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a trained STMN's directory (config.yaml, checkpoints)")
    parser.add_argument("--max-videos", type=int, default=None, help="first N eval videos")
    args = parser.parse_args(argv)
    config = load_config(os.path.join(args.model_dir, "config.yaml"))
    model, _ = restore_for_export(config, args.model_dir)
    videos = eval_videos(config, args.max_videos)
    print(f"{len(videos)} videos, {sum(len(v) for v in videos)} frames", flush=True)
    with tracing(model, "tf", nms="per_class"):
        module = DetectorServingModule(model, config.eval_data.image_size)
        shapes = module.stream_state_shapes()
        files = convert_stream(module, QUANTIZATIONS)
        representative = []
        for frames in videos[:CALIBRATION_VIDEOS]:
            frames = frames[:CALIBRATION_FRAMES]
            state = {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}
            for (image, _, _), answer in zip(frames, run_stream(files["stream.tflite"], shapes,
                                                                 frames)):
                representative.append({"frame": image, **state})
                state = {key: answer[key] for key in shapes}
        files["full_integer_int8"] = full_integer(module, representative)
    results = {}
    for name, tflite_model in files.items():
        groundtruths, detections, non_finite = [], [], 0
        start = time.perf_counter()
        for frames in videos:
            for (_, (height, width), groundtruth), answer in zip(
                    frames, run_stream(tflite_model, shapes, frames)):
                n = int(answer["num_detections"])
                non_finite += int(not all(np.isfinite(v).all() for v in answer.values()))
                detections.append({
                    "boxes": box_ops.normalized_yxyx_to_pixel_xyxy(
                        answer["detection_boxes"][:n], height, width),
                    "scores": answer["detection_scores"][:n],
                    "labels": answer["detection_classes"][:n].astype(np.int64),
                })
                groundtruths.append(groundtruth)
        seconds = time.perf_counter() - start
        metrics = vid_eval.evaluate(groundtruths, detections, config.model.num_classes, coco=False)
        results[name] = {"mAP": metrics["mAP"], "bytes": len(tflite_model),
                         "non_finite_frames": non_finite,
                         "ms_per_frame": 1000 * seconds / len(groundtruths)}
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
