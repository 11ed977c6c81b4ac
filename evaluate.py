"""Evaluates STMN (and the static R-FCN it came from) with the VID protocol.

    python evaluate.py --config configs/synthetic_tiny_stmn.yaml --checkpoint runs/stmn \
        --static-checkpoint runs/rfcn [--data 'PATTERN'] [--output results.json] \
        [--window 11] [--stride 2] [--linking seq_nms|viterbi|none] [--online] \
        [--max-videos N] [--params-override a.b=1,...] \
        [--write-detections FILE [--image-set LIST]]

Prints a table of per-class AP and mAP (overall, slow / medium / fast motion, COCO AP)
for: static R-FCN, STMN, STMN + linking, ensemble + linking (the R-FCN columns need
--static-checkpoint). The logic is stmn_tf/evaluation/run.py. --write-detections writes
the detections as an ImageNet VID devkit / FGFA detection file that
`python -m stmn_tf.evaluation.score_vid` (or FGFA's evaluation) scores; see
stmn_tf/evaluation/detection_files.py for FILE with `{method}` and for the image set.
"""

import argparse
import json
import os
import sys

from stmn_tf import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_checkpoint_arguments(parser, "the STMN (or R-FCN) model directory or checkpoint prefix")
    parser.add_argument("--static-checkpoint", default=None,
                        help="the static R-FCN's model directory or checkpoint prefix")
    parser.add_argument("--data", default=None, help="eval records (default: eval_data.input_path)")
    parser.add_argument("--output", default=None, help="write the metrics as JSON here")
    cli.add_video_arguments(parser)
    parser.add_argument("--step", type=int, default=None, help="window step (eval.window_step)")
    parser.add_argument("--max-videos", type=int, default=None, help="first N videos only")
    cli.add_run_arguments(parser)
    parser.add_argument("--write-detections", default=None,
                        help="write the last method's detections (each method's with {method} "
                             "in FILE) as a devkit detection file")
    parser.add_argument("--image-set", default=None,
                        help="with --write-detections: frame indices from this image-set file "
                             "(default: number the frames and write FILE's _image_set.txt)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config = cli.load_config("evaluate.py", args.config, args.params_override)
    from stmn_tf.data import synthetic
    from stmn_tf.evaluation import run

    if not args.data:
        config = synthetic.resolve_synthetic_data(config)
    try:
        results = run.evaluate_checkpoints(
            config, args.checkpoint, args.static_checkpoint, data=args.data, window=args.window,
            stride=args.stride, step=args.step, linking=args.linking,
            batch_windows=args.batch_windows, online=args.online, max_videos=args.max_videos,
            progress=not args.no_progress, keep_frames=bool(args.write_detections))
        if args.write_detections:
            from stmn_tf.evaluation import detection_files

            groundtruths, detections = results.pop("groundtruths"), results.pop("detections")
            written, image_set = detection_files.write_evaluation_detections(
                args.write_detections, groundtruths, detections, args.image_set)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"evaluate.py: {e}")
    settings = results["settings"]
    print(f"{results['num_videos']} videos, {results['num_frames']} frames; window "
          f"{settings['window']}, stride {settings['stride']}, linking {settings['linking']}"
          f"{', online' if settings['online'] else ''}")
    print(run.format_table(results))
    if args.write_detections:
        print(f"wrote {', '.join(written)} (frames: {image_set})")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        # Written whole or not at all: a cut file would read as a finished evaluation.
        temporary = args.output + ".tmp"
        with open(temporary, "w") as f:
            json.dump(run.to_json(results), f, indent=1)
        os.replace(temporary, args.output)
        print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
