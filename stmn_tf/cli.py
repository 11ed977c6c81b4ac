"""Command-line arguments that detect.py and evaluate.py share (argparse only, no
TensorFlow: `--help` stays instant)."""

import os
import sys


def add_checkpoint_arguments(parser, checkpoint_help):
    """--config (the experiment YAML) and --checkpoint (described by `checkpoint_help`)."""
    parser.add_argument("--config", required=True, help="experiment YAML (as for train.py)")
    parser.add_argument("--checkpoint", required=True, help=checkpoint_help)


def add_video_arguments(parser):
    """How a video is run: the window, the stride, windows per call, linking, online
    mode; each defaults to the config's `eval.*` field (None here)."""
    parser.add_argument("--window", type=int, default=None, help="window length T (eval.window)")
    parser.add_argument("--stride", type=int, default=None, help="sub-sequence stride (eval.stride)")
    parser.add_argument("--batch-windows", type=int, default=None, help="windows per model call")
    parser.add_argument("--linking", default=None, choices=("seq_nms", "viterbi", "none"),
                        help="temporal linking (eval.linking)")
    parser.add_argument("--online", action="store_true", help="forward-only online mode")


def add_run_arguments(parser):
    """--params-override (config overrides `a.b=1,c.d=x`) and --no-progress."""
    parser.add_argument("--params-override", default="", help='e.g. "eval.stride=10"')
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_config(program, path, params_override):
    """The experiment config of the YAML `path` with the `a.b=1,...` overrides; a bad file
    or key ends the program with `<program>: <message>` instead of a traceback."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Imported here: configs imports TensorFlow, which --help does not need.
    from stmn_tf import configs

    try:
        return configs.load_config(path, params_override)
    except configs.ConfigError as e:
        sys.exit(f"{program}: {e}")
