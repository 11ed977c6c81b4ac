"""Runs a trained detector on a video file or a folder of frames.

    python detect.py --config configs/synthetic_tiny_stmn.yaml --checkpoint runs/stmn \
        --input clip.mp4 --output-dir out/ [--saliency] [--linking seq_nms|viterbi|none] \
        [--window 11] [--stride 10] [--online] [--draw-score 0.3] [--params-override ...]

Writes OUTPUT_DIR/detections.json (per frame: pixel boxes, class names, scores, track
ids when linked), OUTPUT_DIR/annotated.mp4 and, with --saliency (STMN),
OUTPUT_DIR/saliency.png (the memory's L2 norm, the paper's Fig. 4). Corrupt frames are
skipped and counted. The logic is stmn_tf/inference/detect_video.py.
"""

import argparse
import sys

from stmn_tf import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_checkpoint_arguments(
        parser, "a model directory (its latest checkpoint) or a checkpoint prefix")
    parser.add_argument("--input", required=True, help="a video file (mp4, avi, ...) or a folder of frames")
    parser.add_argument("--output-dir", required=True, help="where the outputs go")
    parser.add_argument("--json", default=None, help="detections JSON (default OUTPUT_DIR/detections.json)")
    parser.add_argument("--video", default=None, help="annotated mp4 (default OUTPUT_DIR/annotated.mp4)")
    parser.add_argument("--saliency", action="store_true", help="also write OUTPUT_DIR/saliency.png")
    cli.add_video_arguments(parser)
    parser.add_argument("--min-score", type=float, default=0.01, help="JSON score threshold")
    parser.add_argument("--draw-score", type=float, default=0.3, help="drawing score threshold")
    cli.add_run_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config = cli.load_config("detect.py", args.config, args.params_override)
    from stmn_tf.inference import detect_video
    from stmn_tf.inference.frames import open_frame_source
    from stmn_tf.training.checkpointing import restore_model

    try:
        open_frame_source(args.input)  # fails fast, before the model is built
        model, _ = restore_model(config, args.checkpoint)
        result = detect_video.detect_video(
            config, model, args.input, args.output_dir, json_path=args.json,
            video_path=args.video, saliency=args.saliency, window=args.window,
            stride=args.stride, linking=args.linking, online=args.online,
            batch_windows=args.batch_windows, min_score=args.min_score,
            draw_score=args.draw_score, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"detect.py: error: {e}")
    skipped = result["skipped_frames"]
    print(f"{result['num_frames']} frames, {len(skipped)} corrupt frames skipped"
          + (f" ({', '.join(map(str, skipped))})" if skipped else ""))
    for key in ("json", "video", "saliency"):
        if key in result:
            print(f"wrote {result[key]}")
    return result


if __name__ == "__main__":
    main()
