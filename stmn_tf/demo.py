"""The main job end to end on the embedded synthetic data (`make demo`).

    python -m stmn_tf.demo [--output reports/demo] [--rfcn-steps N] [--stmn-steps N]

Stages, each run through the project's own command-line tools so that the demo shows
exactly what a user would run (the commands are printed and written to the report):

 1. the synthetic videos (train, val, test), generated on first use;
 2. stage 1: the tiny static R-FCN (`train.py --config configs/synthetic_tiny_rfcn.yaml`);
 3. stage 2: STMN initialised from it and fine-tuned (`--init-from`);
 4. evaluation on the test videos: static R-FCN, STMN, STMN + Seq-NMS, the ensemble
    + Seq-NMS (`evaluate.py`), and STMN's mAP against the test window length
    (3, 7, 11, 15 frames, the paper's Sec. 4.3), with each frame's detections from
    every window that covers it and from its most central window (`SWEEP_MERGES`);
 5. the portable SavedModel (`export.py`), loaded and run on a synthetic test video;
 6. `detect.py` on a synthetic test video (annotated MP4 and GIF, memory saliency with
    and without MatchTrans, the paper's Fig. 4) and on the real 1080p street clip;
 7. the memory saliency inside the ground-truth boxes over outside, on the test videos
    (`stmn_tf.evaluation.saliency`), with and without MatchTrans; and MatchTrans'
    coefficients at the objects, on the background and at the tracks' centres
    (`stmn_tf.evaluation.alignment`);
 8. `reports/demo/`: README.md, metrics.json and the plots, with the table of
    `benchmarks/memory_transport.py` when its results.json is there.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREET_CLIP = os.path.join(os.path.dirname(REPO), "shared", "data", "street_1080p_8frames.mp4")
RFCN_CONFIG = os.path.join(REPO, "configs", "synthetic_tiny_rfcn.yaml")
STMN_CONFIG = os.path.join(REPO, "configs", "synthetic_tiny_stmn.yaml")
WINDOWS = (3, 7, 11, 15)
# The sweep with each frame's detections from every window that covers it (the
# authors' merge) and from the one window where it is most central: with every window,
# the number of windows a frame collects changes with T and the video's length (on the
# synthetic test videos, 2.6 / 4.2 / 3.7 / 2.2 per frame for T = 3 / 7 / 11 / 15), so
# that sweep measures an ensemble's size as much as the memory's reach.
SWEEP_MERGES = ("all", "center")
MERGE_LABELS = {"all": "every covering window (the authors')",
                "center": "the window where the frame is most central"}
# `benchmarks/memory_transport.py`'s output, shown in the report when it is there.
MEMORY_TRANSPORT_JSON = os.path.join(REPO, "reports", "memory_transport", "results.json")
# The default training budgets (`make ablation` uses the same).
RFCN_STEPS = 6000  # synthetic_tiny_rfcn's train.steps (stmn_tf/configs.py)
STMN_STEPS = 2000


def shown_command(script, args):
    """The command line as a user would type it: `python`, paths inside the repository
    relative to it."""
    return "python " + " ".join(
        shlex.quote(os.path.relpath(a, REPO) if os.path.isabs(a) and a.startswith(REPO) else a)
        for a in [script, *map(str, args)])


class Demo:
    """Runs the stages in order, timing each, and collects what the report needs."""

    def __init__(self, output, rfcn_steps, stmn_steps, max_videos):
        self.output = os.path.abspath(output)
        self.rfcn_steps = rfcn_steps
        self.stmn_steps = stmn_steps
        self.max_videos = max_videos
        self.commands = []
        self.timings = {}
        self.start = time.time()

    def path(self, *parts):
        return os.path.join(self.output, *parts)

    def stage(self, name):
        print(f"\n=== [{time.time() - self.start:6.0f} s] {name}", flush=True)
        self._stage_start = time.time()
        self._stage_name = name

    def end_stage(self):
        self.timings[self._stage_name] = round(time.time() - self._stage_start, 1)

    def run(self, script, *args):
        """Runs one of the repository's scripts with this Python, output streamed."""
        command = [sys.executable, os.path.join(REPO, script), *map(str, args)]
        shown = shown_command(script, args)
        self.commands.append(shown)
        print(f"$ {shown}", flush=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        result = subprocess.run(command, cwd=REPO, env=env)
        if result.returncode != 0:
            raise SystemExit(f"demo: `{shown}` failed (exit {result.returncode})")


def _train(demo):
    demo.stage("stage 1: static R-FCN")
    demo.run("train.py", "--config", RFCN_CONFIG, "--model-dir", demo.path("rfcn"),
             "--steps", demo.rfcn_steps)
    demo.end_stage()
    demo.stage("stage 2: STMN from the R-FCN")
    demo.run("train.py", "--config", STMN_CONFIG, "--model-dir", demo.path("stmn"),
             "--steps", demo.stmn_steps, "--init-from", demo.path("rfcn"))
    demo.end_stage()


def _evaluate(demo):
    demo.stage("evaluation on the synthetic test videos")
    limit = ["--max-videos", demo.max_videos] if demo.max_videos else []
    demo.run("evaluate.py", "--config", STMN_CONFIG, "--checkpoint", demo.path("stmn"),
             "--static-checkpoint", demo.path("rfcn"), "--window", 11,
             "--output", demo.path("eval_window11.json"), *limit)
    demo.end_stage()
    demo.stage("STMN's mAP against the test window length")
    for merge in SWEEP_MERGES:
        for window in WINDOWS:
            if window == 11 and merge == "all":
                continue  # the main evaluation above
            demo.run("evaluate.py", "--config", STMN_CONFIG, "--checkpoint", demo.path("stmn"),
                     "--window", window, "--linking", "none",
                     "--params-override", f"eval.window_merge={merge}",
                     "--output", demo.path(sweep_file(window, merge)), *limit)
    demo.end_stage()


def sweep_file(window, merge):
    """The evaluation JSON of one point of the window sweep."""
    return f"eval_window{window}.json" if merge == "all" else f"eval_window{window}_{merge}.json"


def _window_sweep(demo, methods):
    """`{merge: {window: STMN mAP}}`; the window-11 all-windows point is the main run's."""
    sweep = {}
    for merge in SWEEP_MERGES:
        sweep[merge] = {}
        for window in WINDOWS:
            if window == 11 and merge == "all":
                sweep[merge][window] = methods["stmn"]["mAP"]
            else:
                sweep[merge][window] = _load_methods(demo.path(sweep_file(window, merge)))["stmn"]["mAP"]
    return sweep


def _load_methods(path):
    with open(path) as f:
        return json.load(f)["methods"]


def _export_and_serve(demo):
    demo.stage("export the portable SavedModel and run it")
    export_dir = demo.path("export")
    demo.run("export.py", "--config", STMN_CONFIG, "--checkpoint", demo.path("stmn"),
             "--output", export_dir, "--overwrite")
    # Load it the way a server would: in a fresh process, without stmn_tf.
    frames_dir = demo.path("test_video", "frames")
    code = (
        "import glob, json, sys, time, numpy as np, tensorflow as tf\n"
        f"frames = sorted(glob.glob({frames_dir!r} + '/*.png'))[:11]\n"
        "clip = np.stack([tf.io.decode_png(tf.io.read_file(f)).numpy() for f in frames])\n"
        f"model = tf.saved_model.load({os.path.join(export_dir, '1')!r})\n"
        "fn = model.signatures['serving_default']\n"
        "start = time.time(); out = fn(tf.constant(clip)); seconds = time.time() - start\n"
        "n = out['num_detections'].numpy()\n"
        "s = out['detection_scores'].numpy()\n"
        "print(json.dumps({'frames': len(frames), 'seconds': round(seconds, 2),"
        " 'detections_above_0.5': int((s > 0.5).sum()), 'num_detections': n.tolist()}))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                            cwd="/", env=env)
    if result.returncode != 0:
        raise SystemExit(f"demo: the exported SavedModel failed to run:\n{result.stderr[-3000:]}")
    served = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"SavedModel on {served['frames']} frames of a test video: {served}")
    demo.end_stage()
    return served


def _write_test_video(demo):
    """The frames of the first test video with objects in it (some are empty) as PNG
    files, since detect.py reads folders of frames."""
    from stmn_tf import configs
    from stmn_tf.data import synthetic
    from stmn_tf.evaluation import run as eval_run

    import cv2

    config = configs.load_config(STMN_CONFIG)
    synthetic.resolve_synthetic_data(config, root=REPO)
    video_id, frames, chosen = None, [], None
    for current, frame in eval_run.eval_frames(config.eval_data):
        if current != video_id:
            if any(len(f["meta"]["groundtruth"]["labels"]) for f in frames):
                chosen = (video_id, frames)
                break
            video_id, frames = current, []
        frames.append(frame)
    video_id, frames = chosen or (video_id, frames)
    folder = demo.path("test_video", "frames")
    os.makedirs(folder, exist_ok=True)
    for frame in frames:
        h, w = frame["image_size"]
        image = frame["image"][:h, :w].astype("uint8")
        cv2.imwrite(os.path.join(folder, f"{frame['frame_index']:06d}.png"),
                    cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder, video_id


def _detect(demo, frames_dir):
    demo.stage("detect.py on a synthetic test video and on a real 1080p clip")
    for name, align in (("test_video", "True"), ("test_video_no_matchtrans", "False")):
        demo.run("detect.py", "--config", STMN_CONFIG, "--checkpoint", demo.path("stmn"),
                 "--input", frames_dir, "--output-dir", demo.path(name), "--saliency",
                 "--params-override", f"model.memory.align={align}")
    if os.path.exists(STREET_CLIP):
        demo.run("detect.py", "--config", STMN_CONFIG, "--checkpoint", demo.path("stmn"),
                 "--input", STREET_CLIP, "--output-dir", demo.path("street"))
    else:
        print(f"({STREET_CLIP} not found: the real-video step is skipped)")
    demo.end_stage()


def _memory_checks(demo):
    """The memory's saliency inside ground-truth boxes over outside, on the test videos
    (`stmn_tf.evaluation.saliency`), with and without MatchTrans (the same weights);
    and the peakedness of MatchTrans' coefficients (`stmn_tf.evaluation.alignment`)."""
    from stmn_tf import configs
    from stmn_tf.data import synthetic
    from stmn_tf.evaluation import alignment
    from stmn_tf.evaluation import run as eval_run
    from stmn_tf.evaluation import saliency
    from stmn_tf.training import checkpointing

    demo.stage("memory saliency and MatchTrans' coefficients on the test videos")
    ratios, coefficients = {}, None
    for name, align in (("stmn", True), ("stmn_align_off", False)):
        config = configs.load_config(STMN_CONFIG, f"model.memory.align={align}")
        config = synthetic.resolve_synthetic_data(config, root=REPO)
        model = checkpointing.restore_model(config, demo.path("stmn"))[0]
        videos = eval_run.eval_frames(config.eval_data, demo.max_videos or None)
        ratios[name] = saliency.evaluate_saliency(model, videos, config.eval.window,
                                                  config.eval.stride, progress=True)
        print(f"{name}: saliency inside / outside the boxes {ratios[name]['ratio']:.3f}")
        if align:
            videos = eval_run.eval_frames(config.eval_data, demo.max_videos or None)
            coefficients = alignment.evaluate_alignment(model, videos, config.eval.stride,
                                                        progress=True)
            alignment.plot_offset_priors({"demo STMN": coefficients},
                                         demo.path("offset_prior.png"))
    demo.end_stage()
    return ratios, coefficients


def memory_transport_results():
    """`benchmarks/memory_transport.py`'s results, or None when it has not been run."""
    if not os.path.exists(MEMORY_TRANSPORT_JSON):
        return None
    with open(MEMORY_TRANSPORT_JSON) as f:
        return json.load(f)


def memory_transport_table(results):
    """Markdown lines for `benchmarks/memory_transport.py`'s results (None: not run)."""
    if results is None:
        return ["(`python benchmarks/memory_transport.py` has not been run: no "
                f"`{os.path.relpath(MEMORY_TRANSPORT_JSON, REPO)}`.)"]
    speeds = results["speeds"]
    lines = ["Class accuracy (%) at an object's cells in the frames where its cue is hidden, "
             f"against its speed (feature cells per frame), mean of {results['seeds']} seeds "
             "(`python benchmarks/memory_transport.py`; the layers alone, no detector):", "",
             "| memory | " + " | ".join(f"v={v:g}" for v in speeds) + " |",
             "| --- | " + " | ".join("---" for _ in speeds) + " |"]
    for variant, accuracy in results["accuracy"].items():
        lines.append(f"| {variant} | " + " | ".join(_percent(a) for a in accuracy) + " |")
    return lines


def _gif_from_mp4(mp4, gif, max_frames=40):
    import cv2
    from PIL import Image

    capture = cv2.VideoCapture(mp4)
    frames = []
    while len(frames) < max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    if frames:
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=150, loop=0)
    return bool(frames)


def _plots(demo, sweep):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stage in zip(axes, ("rfcn", "stmn")):
        log = demo.path(stage, "train_log.jsonl")
        rows = [json.loads(line) for line in open(log)] if os.path.exists(log) else []
        for key in ("total_loss", "class_loss", "box_loss", "rpn_class_loss", "rpn_box_loss"):
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
        ax.set_title({"rfcn": "stage 1: static R-FCN", "stmn": "stage 2: STMN"}[stage])
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(demo.path("training_losses.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for merge, maps in sweep.items():
        windows = sorted(maps)
        ax.plot(windows, [100 * maps[w] for w in windows], "o-", label=MERGE_LABELS[merge])
    ax.set_xlabel("test window length (frames)")
    ax.set_ylabel("STMN mAP (%)")
    ax.set_xticks(WINDOWS)
    ax.legend(fontsize=8, title="a frame's detections from", title_fontsize=8)
    ax.set_title("mAP against the test window (paper Sec. 4.3)")
    fig.tight_layout()
    fig.savefig(demo.path("map_vs_window.png"), dpi=100)
    plt.close(fig)


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}"


def window_sweep_table(sweep):
    """Markdown table lines: STMN mAP (%) per window length, one row per merge."""
    lines = ["| a frame's detections from | " + " | ".join(f"T={w}" for w in WINDOWS) + " |",
             "| --- | " + " | ".join("---" for _ in WINDOWS) + " |"]
    for merge, maps in sweep.items():
        lines.append(f"| {MERGE_LABELS[merge]} | "
                     + " | ".join(_percent(maps.get(w)) for w in WINDOWS) + " |")
    return lines


def saliency_table(ratios):
    lines = ["Mean saliency at the feature cells inside ground-truth boxes over the mean "
             "outside them, all test videos (`stmn_tf.evaluation.saliency`; 1 = the memory "
             "does not single out the objects):", "",
             "| memory | inside | outside | inside / outside |", "| --- | --- | --- | --- |"]
    labels = {"stmn": "STMN (MatchTrans)", "stmn_align_off": "same weights, MatchTrans off"}
    for name, r in ratios.items():
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(f"| {labels.get(name, name)} | {r['inside_mean']:.3f} | "
                     f"{r['outside_mean']:.3f} | {ratio} |")
    return lines


def alignment_table(coefficients):
    from stmn_tf.evaluation import alignment

    lines = ["MatchTrans' forward coefficients on the demo STMN over consecutive test frames "
             "(`python -m stmn_tf.evaluation.alignment`): their peakedness at the objects' "
             "cells, on the background, and at each track's centre, where the largest "
             "weight should sit on the track's own displacement:", ""]
    lines += alignment.format_table({"STMN": coefficients})
    if coefficients.get("offset_prior"):
        lines += ["", "![the learned offset prior](offset_prior.png)"]
    return lines


def _report(demo, methods, sweep, served, video_id, ratios, transport, coefficients=None):
    from stmn_tf import configs
    from stmn_tf.inference import postprocess

    config = configs.load_config(STMN_CONFIG)
    names = postprocess.class_names(config)
    keys = {"static": "rfcn", "stmn": "stmn", "stmn_linked": "stmn+seq_nms",
            "ensemble_linked": "ensemble+seq_nms"}
    metrics = {name: methods[key] for name, key in keys.items() if key in methods}
    metrics["window_sweep_mAP"] = {merge: {str(w): m for w, m in sorted(maps.items())}
                                   for merge, maps in sweep.items()}
    metrics["saliency_inside_over_outside"] = ratios
    if coefficients is not None:
        metrics["match_trans_coefficients"] = coefficients
    if transport is not None:
        metrics["memory_transport_accuracy"] = {"speeds": transport["speeds"],
                                                **transport["accuracy"]}
    metrics["saved_model"] = served
    metrics["timings_seconds"] = demo.timings
    with open(demo.path("metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=True)

    columns = [name for name in keys if name in metrics]
    lines = ["# stmn-tf demo report", "",
             "The tiny detector trained and evaluated on the embedded synthetic videos "
             "(`make demo`). Numbers are APs in percent on the synthetic test videos "
             "(ImageNet VID protocol, `stmn_tf/evaluation/vid_eval.py`).", "",
             "| class | " + " | ".join(columns) + " |",
             "| --- | " + " | ".join("---" for _ in columns) + " |"]
    for c, name in enumerate(names, start=1):
        aps = [metrics[m]["AP"].get(str(c)) for m in columns]
        lines.append(f"| {name} | " + " | ".join(_percent(a) for a in aps) + " |")
    for key in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast", "coco_AP", "coco_AP50"):
        lines.append(f"| **{key}** | " + " | ".join(_percent(metrics[m].get(key))
                                                  for m in columns) + " |")
    lines += ["", "- `static`: the stage-1 R-FCN, frame by frame.",
              "- `stmn`: STMN over sliding windows of 11 frames (each frame collects the "
              "detections of every window that covers it).",
              "- `stmn_linked`: the same, linked over time with Seq-NMS.",
              "- `ensemble_linked`: the union of the R-FCN's and STMN's detections per "
              "frame, then Seq-NMS (the paper's final entry).",
              "- `mAP_slow/medium/fast`: the FGFA motion split (motion IoU of the same "
              "track with itself over the frames t-10 .. t+10, t excluded, where it exists; "
              "bounds inclusive: slow [0.9, 1], medium [0.7, 0.9], fast [0, 0.7]).", "",
              "## mAP against the test window length", "",
              *window_sweep_table(sweep), "",
              "(STMN without linking. A frame's detections come from every window that "
              "covers it, merged by per-class NMS, or from the one window in which it is "
              "most central; `eval.window_merge`.)", "",
              "![losses](training_losses.png)", "", "![windows](map_vs_window.png)", "",
              "## Pictures", "",
              f"- `test_video/annotated.mp4` and `test_video/annotated.gif`: STMN on the "
              f"synthetic test video `{video_id}`.",
              "- `test_video/saliency.png` and `test_video_no_matchtrans/saliency.png`: the "
              "memory saliency (L2 norm over channels, the paper's Fig. 4) with and "
              "without MatchTrans alignment (same weights).",
              "- `street/annotated.mp4`: the real 1080p street clip (the detector knows "
              "only the synthetic classes, so this shows the video path, not accuracy).", "",
              "![saliency with MatchTrans](test_video/saliency.png)", "",
              "![saliency without MatchTrans](test_video_no_matchtrans/saliency.png)", "",
              *saliency_table(ratios), "",
              *(alignment_table(coefficients) + [""] if coefficients is not None else []),
              "## Memory transport (the layers alone)", "",
              *memory_transport_table(transport), "",
              f"SavedModel (`export/1`, standard ops only) in a fresh process on "
              f"{served['frames']} frames: {served['seconds']} s.", "",
              "## Timings (seconds)", ""]
    lines += [f"- {name}: {seconds}" for name, seconds in demo.timings.items()]
    lines += ["", "## Commands", "", "```bash"] + demo.commands + ["```", ""]
    with open(demo.path("README.md"), "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(REPO, "reports", "demo"))
    parser.add_argument("--rfcn-steps", type=int, default=RFCN_STEPS)
    parser.add_argument("--stmn-steps", type=int, default=STMN_STEPS)
    parser.add_argument("--max-videos", type=int, default=0,
                        help="evaluate on the first N test videos only (0: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    demo = Demo(args.output, args.rfcn_steps, args.stmn_steps, args.max_videos)
    os.makedirs(demo.output, exist_ok=True)

    demo.stage("synthetic data")
    frames_dir, video_id = _write_test_video(demo)
    demo.end_stage()
    _train(demo)
    _evaluate(demo)
    methods = _load_methods(demo.path("eval_window11.json"))
    sweep = _window_sweep(demo, methods)
    served = _export_and_serve(demo)
    _detect(demo, frames_dir)
    ratios, coefficients = _memory_checks(demo)
    _gif_from_mp4(demo.path("test_video", "annotated.mp4"), demo.path("test_video", "annotated.gif"))
    _plots(demo, sweep)
    _report(demo, methods, sweep, served, video_id, ratios, memory_transport_results(),
            coefficients)
    print(f"\nDone in {time.time() - demo.start:.0f} s: {demo.path('README.md')}")
    for name in ("static", "stmn", "stmn_linked", "ensemble_linked"):
        key = {"static": "rfcn", "stmn": "stmn", "stmn_linked": "stmn+seq_nms",
               "ensemble_linked": "ensemble+seq_nms"}[name]
        if key in methods:
            print(f"  {name:16s} mAP {_percent(methods[key]['mAP'])}")


if __name__ == "__main__":
    main()
