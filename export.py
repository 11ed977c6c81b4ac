"""Exports a trained detector: a SavedModel for TF Serving, ONNX, or TFLite.

    python export.py [--config configs/synthetic_tiny_stmn.yaml] --checkpoint MODEL_DIR \
        --output EXPORT_DIR [--format saved_model|onnx|tflite] [--version 1] \
        [--custom-op] [--quantize float16 dynamic_int8] [--max-detections N] \
        [--params-override a.b=1,...] [--overwrite]

writes EXPORT_DIR/<version>/ atomically:
  saved_model (default): the layout tensorflow_model_server watches, with the
    signatures `serving_default` (uint8 clip), `encoded_frames` (JPEG/PNG bytes) and,
    for STMN, `stream` (one frame plus the forward memory state);
  onnx: `model.onnx` (the clip) and, for STMN, `stream.onnx` (stmn_tf/serving/onnx_export.py);
  tflite: `stream.tflite`, builtin ops only, and with --quantize also
    `stream_float16.tflite`, `stream_dynamic_int8.tflite` (stmn_tf/serving/tflite_export.py);
each with assets.extra/stmn_serving.json. See the README's "Export and serving".
"""

import argparse
import os
import sys

from stmn_tf import cli

FORMATS = ("saved_model", "onnx", "tflite")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", default=None,
        help="experiment YAML (as for train.py); default: CHECKPOINT/config.yaml, the "
        "resolved config that train.py writes into the model directory",
    )
    parser.add_argument(
        "--checkpoint", required=True,
        help="a model directory (its latest checkpoint) or a checkpoint prefix",
    )
    parser.add_argument("--output", required=True, help="base directory; writes OUTPUT/<version>/")
    parser.add_argument("--version", type=int, default=1, help="version subdirectory (default 1)")
    parser.add_argument(
        "--format", default="saved_model", choices=FORMATS,
        help="saved_model (default), onnx (model.onnx, stream.onnx) or tflite (stream.tflite)",
    )
    parser.add_argument(
        "--custom-op", action="store_true",
        help="use the compiled Stmn>MatchTrans op (the server must have it built in); "
        "default: the pure-TF MatchTrans, standard ops only",
    )
    parser.add_argument(
        "--quantize", nargs="+", default=[], choices=("float16", "dynamic_int8"),
        help="tflite: also write stream_float16.tflite (float16 weights) and/or "
        "stream_dynamic_int8.tflite (int8 weights, float activations) beside stream.tflite",
    )
    parser.add_argument("--max-detections", type=int, default=None, help="N of the outputs")
    parser.add_argument("--params-override", default="", help='"a.b=1,c.d=x" config overrides')
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    args = parser.parse_args(argv)
    if args.custom_op and args.format != "saved_model":
        parser.error(f"--custom-op applies to --format saved_model, not {args.format}")
    if args.quantize and args.format != "tflite":
        parser.error(f"--quantize applies to --format tflite, not {args.format}")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from stmn_tf.ops.match_trans_op import OpLibraryError
    from stmn_tf.serving.export import ExportError
    from stmn_tf.serving.export import export_saved_model
    from stmn_tf.serving.export import restore_for_export

    config_path = args.config
    if config_path is None:
        config_path = os.path.join(args.checkpoint, "config.yaml")
        if not os.path.exists(config_path):
            sys.exit(f"export.py: no --config given and no {config_path}")
    config = cli.load_config("export.py", config_path, args.params_override)
    if os.path.exists(os.path.join(args.output, str(args.version))) and not args.overwrite:
        # Checked before building the model: the common mistake costs no time.
        sys.exit(f"export.py: {args.output}/{args.version} exists; pass --overwrite to replace it")
    try:
        model, prefix = restore_for_export(config, args.checkpoint)
        common = dict(
            version=args.version,
            max_detections=args.max_detections,
            overwrite=args.overwrite,
            checkpoint=prefix,
        )
        if args.format == "onnx":
            from stmn_tf.serving.onnx_export import export_onnx

            path = export_onnx(model, config.eval_data.image_size, args.output, **common)
        elif args.format == "tflite":
            from stmn_tf.serving.tflite_export import export_tflite

            path = export_tflite(model, config.eval_data.image_size, args.output,
                                 quantize=args.quantize, **common)
        else:
            path = export_saved_model(
                model, config.eval_data.image_size, args.output, custom_op=args.custom_op, **common
            )
    except (ExportError, FileNotFoundError, OpLibraryError) as e:
        sys.exit(f"export.py: {e}")
    except ImportError as e:  # tf2onnx / onnx missing
        sys.exit(f"export.py: --format {args.format} needs the export extra "
                 f"(pip install -e '.[export]'): {e}")
    print(f"Exported {prefix} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
