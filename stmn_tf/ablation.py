"""The paper's Table 2 in miniature on the embedded synthetic data (`make ablation`).

    python -m stmn_tf.ablation [--preset default|motion] [--output DIR] [--rfcn-dir DIR]
        [--rfcn-steps N] [--stmn-steps N] [--seeds 0 1] [--max-videos N]
        [--variants stmn ...] [--params-override a.b=1,...] [--report-only]

Presets (the data the runs train and test on):
    default  make demo's synthetic videos; objects move at most half a feature cell
             between sampled frames, so that alignment has little to do.
    motion   the same design with objects 2 to 4 times faster (8 to 16 px a frame, one
             to two cells of the 8x8 map between frames sampled 1 in 2), the regime where
             MatchTrans should matter; its own data directory and its own R-FCN.

Runs, each through the project's own command-line tools (as `make demo` does):

 1. the static R-FCN: `--rfcn-dir`, else the one an earlier run of the ablation trained
    in `<output>/rfcn`, else `make demo`'s (`reports/demo/rfcn`) when it has reached
    `--rfcn-steps`, else trained here into `<output>/rfcn`; evaluated once;
 2. for each seed and each variant of Table 2 (STMN, STMN-No-MatchTrans,
    ConvGRU-Pretrain, ConvGRU-FreshFC): `train.py --init-from` that same R-FCN with the
    same step budget and `train.seed = train_data.seed = S`, into
    `<output>/<variant>_seed<S>`, then `evaluate.py --window 11 --linking none`
    (`--params-override` adds overrides to these runs only, e.g.
    `model.memory.affinity_power=1.0` for the authors' MatchTrans affinity);
 3. `<output>/README.md`, `results.json` and `ablation.png`, rewritten after every run.

A run whose `eval.json` exists is skipped, so an interrupted ablation resumes where it
stopped (train.py itself resumes from its latest checkpoint).
"""

import argparse
import dataclasses
import json
import math
import os
import re
import time
from typing import Optional

import numpy as np

from stmn_tf.demo import REPO
from stmn_tf.demo import RFCN_CONFIG
from stmn_tf.demo import RFCN_STEPS
from stmn_tf.demo import Demo
from stmn_tf.demo import shown_command
from stmn_tf.figures import save_png
from stmn_tf.variants import VARIANTS as TABLE2

# Table 2's columns, in the paper's order (best first), from the one table of them.
VARIANTS = tuple(TABLE2)
LABELS = {"rfcn": "static R-FCN", **{name: v.label for name, v in TABLE2.items()}}
# Table 2: test mAP on ImageNet VID, Fast R-CNN on VGG-16 (as fractions, like
# evaluate.py's JSON). The paper gives no static detector in this table.
PAPER_TABLE2 = {name: v.paper_map for name, v in TABLE2.items()}
SEEDS = (0, 1)
# Every variant's budget: a quarter of make demo's STMN stage, so that the 8 runs
# (4 variants x 2 seeds) and their evaluations take about 30 minutes on 2 cores.
VARIANT_STEPS = 500
WINDOW = 11
METRICS = ("mAP", "mAP_slow", "mAP_medium", "mAP_fast")
DEMO_RFCN_DIR = os.path.join(REPO, "reports", "demo", "rfcn")
# Config overrides of each preset, applied to every run (the R-FCN's too).
PRESETS = {
    "default": (),
    "motion": ("synthetic_data_dir=data/synthetic_motion",
               "train_data.synthetic.min_speed=8.0", "train_data.synthetic.max_speed=16.0"),
}
DEFAULT_OUTPUTS = {"default": os.path.join(REPO, "reports", "ablation"),
                   "motion": os.path.join(REPO, "reports", "ablation_motion")}


def variant_config(variant):
    return os.path.join(REPO, "configs", f"synthetic_tiny_{variant}.yaml")


@dataclasses.dataclass(frozen=True)
class Run:
    """One row entry of the table: a model (trained here or not) and its evaluation.

    `method` is "rfcn" (the static R-FCN, `seed` None) or a variant of `VARIANTS`;
    `train` says whether train.py runs into `model_dir` before the evaluation;
    `overrides` are config overrides ("key=value") of both.
    """

    method: str
    seed: Optional[int]
    config: str
    model_dir: str
    eval_path: str
    train: bool
    init_from: Optional[str] = None
    overrides: tuple = ()

    @property
    def name(self):
        return self.method if self.seed is None else f"{self.method}_seed{self.seed}"

    @property
    def done(self):
        return os.path.exists(self.eval_path)

    def commands(self, steps, max_videos=None):
        """The (script, arguments) pairs this run executes, training first."""
        commands = []
        if self.train:
            args = ["--config", self.config, "--model-dir", self.model_dir, "--steps", steps]
            if self.init_from:
                args += ["--init-from", self.init_from]
            overrides = list(self.overrides)
            if self.seed is not None:
                overrides += [f"train.seed={self.seed}", f"train_data.seed={self.seed}"]
            if overrides:
                args += ["--params-override", ",".join(overrides)]
            commands.append(("train.py", args))
        limit = ["--max-videos", max_videos] if max_videos else []
        evaluate_overrides = ["--params-override", ",".join(self.overrides)] if self.overrides else []
        commands.append(("evaluate.py", ["--config", self.config, "--checkpoint", self.model_dir,
                                         "--window", WINDOW, "--linking", "none",
                                         "--output", self.eval_path, *limit,
                                         *evaluate_overrides]))
        return commands


def checkpoint_step(directory):
    """The training step of the latest checkpoint in a train.py model directory.

    Reads the CheckpointManager's state file (`checkpoint`, whose prefixes are
    `ckpt-<step>`) without TensorFlow. Returns None when there is no checkpoint, 0 when
    the prefix carries no step.
    """
    try:
        with open(os.path.join(directory, "checkpoint")) as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        return None
    prefix = match.group(1)
    if not os.path.isabs(prefix):
        prefix = os.path.join(directory, prefix)
    if not os.path.exists(prefix + ".index"):
        return None
    step = re.search(r"-(\d+)$", prefix)
    return int(step.group(1)) if step else 0


def choose_rfcn(output, rfcn_dir=None, rfcn_steps=RFCN_STEPS, demo_dir=DEMO_RFCN_DIR):
    """Which static R-FCN all variants start from (`demo_dir` None: never make demo's).

    Returns:
        (directory, train, reason): `train` when train.py must (continue to) train it.

    Raises:
        SystemExit: `rfcn_dir` holds no checkpoint.
    """
    if rfcn_dir:
        step = checkpoint_step(rfcn_dir)
        if step is None:
            raise SystemExit(f"ablation: no checkpoint in --rfcn-dir {rfcn_dir}")
        return os.path.abspath(rfcn_dir), False, f"given with --rfcn-dir, step {step}"
    own = os.path.join(os.path.abspath(output), "rfcn")
    step = checkpoint_step(own)
    if step is not None:
        # An earlier, possibly interrupted, run of the ablation: keep the variants'
        # common starting point (train.py continues it up to `rfcn_steps`).
        return own, True, f"trained here, step {step} of {rfcn_steps}"
    step = None if demo_dir is None else checkpoint_step(demo_dir)
    if step is not None and step >= rfcn_steps:
        return os.path.abspath(demo_dir), False, f"make demo's, step {step}"
    why = "" if step is None else f"; {demo_dir} is at step {step} < {rfcn_steps}"
    return own, True, f"trained here to {rfcn_steps} steps{why}"


def plan_runs(output, rfcn_dir, train_rfcn=False, variants=VARIANTS, seeds=SEEDS,
              preset=(), overrides=()):
    """The static R-FCN's run, then every variant for each seed (seed by seed, so that
    an interrupted ablation has whole rows of one seed first). `preset` overrides go
    into every run, `overrides` into the variants' only."""
    output = os.path.abspath(output)
    preset, overrides = tuple(preset), tuple(overrides)
    runs = [Run("rfcn", None, RFCN_CONFIG, rfcn_dir, os.path.join(output, "rfcn", "eval.json"),
                train_rfcn, overrides=preset)]
    for seed in seeds:
        for variant in VARIANTS:
            if variant in variants:
                model_dir = os.path.join(output, f"{variant}_seed{seed}")
                runs.append(Run(variant, int(seed), variant_config(variant), model_dir,
                                os.path.join(model_dir, "eval.json"), True, rfcn_dir,
                                overrides=preset + overrides))
    return runs


def _number(value):
    """A metric as a float, None for a missing or NaN one."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _stats(values):
    values = [v for v in map(_number, values) if v is not None]
    if not values:
        return {"n": 0, "mean": None, "min": None, "max": None, "spread": None, "std": None}
    several = len(values) > 1
    return {"n": len(values), "mean": float(np.mean(values)), "min": min(values),
            "max": max(values), "spread": max(values) - min(values) if several else None,
            # Sample standard deviation (ddof 1): the seeds are a sample of seeds.
            "std": float(np.std(values, ddof=1)) if several else None}


def summarize(evals, variants=VARIANTS, seeds=SEEDS):
    """The table: one row per method, the static R-FCN first, then Table 2's order.

    Args:
        evals: {(method, seed): metrics} with the metrics of one evaluation (an entry
            of evaluate.py's `["methods"]`: "mAP", "mAP_slow", ...; None or NaN where
            undefined); the static R-FCN's key is ("rfcn", None). Missing runs are
            left out of the means.
        variants, seeds: the rows and seed columns.

    Returns:
        list of dicts: "method", "label", "seeds" {str(seed): mAP or None}, the mAP's
        "n", "mean", "min", "max", "spread" (max - min), "std" (None below two runs),
        the means of "mAP_slow", "mAP_medium", "mAP_fast", and "paper" (Table 2's mAP).
    """
    rows = []
    for method in ("rfcn",) + tuple(v for v in VARIANTS if v in variants):
        keys = [("rfcn", None)] if method == "rfcn" else [(method, int(s)) for s in seeds]
        runs = [evals.get(key) for key in keys]
        present = [r for r in runs if r is not None]
        row = {"method": method, "label": LABELS[method],
               "seeds": {} if method == "rfcn" else
               {str(s): _number(r.get("mAP")) if r else None for (_, s), r in zip(keys, runs)}}
        row.update(_stats([r.get("mAP") for r in present]))
        for metric in METRICS[1:]:
            row[metric] = _stats([r.get(metric) for r in present])["mean"]
        row["paper"] = PAPER_TABLE2.get(method)
        rows.append(row)
    return rows


def order_verdict(rows):
    """Whether the paper's order STMN > STMN-No-MatchTrans > ConvGRU-Pretrain >
    ConvGRU-FreshFC holds on the mean mAPs of `rows` (from `summarize`).

    Returns:
        dict: "holds" (True, False, or None when a variant has no mean), "pairs" (each
        neighbour pair of the paper's order: its gap and whether the gap is smaller
        than either method's spread over seeds), "observed" (the methods by mean
        mAP, best first), "text" (one sentence).
    """
    means = {r["method"]: r["mean"] for r in rows if r["method"] in VARIANTS}
    missing = [m for m in VARIANTS if means.get(m) is None]
    paper = " > ".join(LABELS[m] for m in VARIANTS)
    if missing:
        return {"holds": None, "pairs": [], "observed": [],
                "text": f"The paper's order {paper} is undetermined here: no mAP yet for "
                        + ", ".join(LABELS[m] for m in missing) + "."}
    spreads = {r["method"]: r["spread"] for r in rows}
    pairs = []
    for better, worse in zip(VARIANTS, VARIANTS[1:]):
        gap = means[better] - means[worse]
        spread = max((s for s in (spreads[better], spreads[worse]) if s is not None), default=None)
        pairs.append({"better": better, "worse": worse, "gap": gap, "holds": gap > 0,
                      "within_seed_spread": None if spread is None else abs(gap) < spread})
    holds = all(p["holds"] for p in pairs)
    observed = sorted(VARIANTS, key=lambda m: -means[m])
    text = (f"The paper's order {paper} {'holds' if holds else 'does not hold'} on the mean "
            f"mAP here (observed: " + " > ".join(LABELS[m] for m in observed) + ").")
    failed = [p for p in pairs if not p["holds"]]
    if failed:
        text += " Reversed: " + "; ".join(
            f"{LABELS[p['worse']]} >= {LABELS[p['better']]}" for p in failed) + "."
    close = [p for p in pairs if p["within_seed_spread"]]
    if close:
        text += " Gaps smaller than the seed spread: " + "; ".join(
            f"{LABELS[p['better']]} vs {LABELS[p['worse']]} ({100 * p['gap']:+.1f})"
            for p in close) + "."
    return {"holds": holds, "pairs": pairs, "observed": list(observed), "text": text}


def _percent(value):
    value = _number(value)
    return "-" if value is None else f"{100 * value:.1f}"


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file, so that a failure leaves the
    previous file (or none), never a half-written one."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def plot(rows, path):
    """Bar chart of the mean mAP per method, min-max error bars, each seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(rows))
    means = [100 * r["mean"] if r["mean"] is not None else 0.0 for r in rows]
    low = [100 * (r["mean"] - r["min"]) if r["mean"] is not None else 0.0 for r in rows]
    high = [100 * (r["max"] - r["mean"]) if r["mean"] is not None else 0.0 for r in rows]
    colors = ["0.6"] + [f"C{i}" for i in range(len(rows) - 1)]
    ax.bar(x, means, yerr=[low, high], capsize=6, color=colors, alpha=0.8)
    for i, r in enumerate(rows):
        seeds = [100 * v for v in r["seeds"].values() if v is not None]
        ax.plot([i] * len(seeds), seeds, "k.", markersize=6)
        if r["mean"] is None:
            ax.text(i, 0.5, "no run", ha="center", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in rows], rotation=15, fontsize=8)
    ax.set_ylabel("mAP (%) on the synthetic test videos")
    ax.set_title("Table 2 in miniature: mean over seeds, min-max bars")
    fig.tight_layout()
    save_png(fig, path, dpi=100)


def write_report(output, rows, verdict, budget, evaluation, commands, timings=None):
    """`<output>/README.md` and `<output>/results.json` (atomically)."""
    seeds = [str(s) for s in budget["seeds"]]
    results = {"units": "mAP as fractions (evaluate.py's); std is the sample std over seeds",
               "budget": budget, "evaluation": evaluation, "rows": rows, "order": verdict,
               "commands": commands, "timings_seconds": timings or {}}
    write_atomic(os.path.join(output, "results.json"),
                 json.dumps(results, indent=1, sort_keys=True, allow_nan=False) + "\n")

    header = ["method"] + [f"mAP seed {s}" for s in seeds] + [
        "mean", "spread (max-min)", "std", "slow", "medium", "fast", "paper Table 2"]
    lines = ["# Table 2 in miniature: the STMN ablation on the synthetic videos", "",
             "`make ablation` (`python -m stmn_tf.ablation`): the four memory variants of the "
             "paper's Table 2 fine-tuned from the same static R-FCN with the same budget, each "
             "with several seeds, and evaluated on the synthetic test videos (ImageNet VID "
             "protocol, APs in percent). slow / medium / fast are the means over seeds of the "
             "FGFA motion split.", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        per_seed = (["(one model)"] + ["" for _ in seeds[1:]] if r["method"] == "rfcn"
                    else [_percent(r["seeds"].get(s)) for s in seeds])
        cells = [r["label"], *per_seed, _percent(r["mean"]), _percent(r["spread"]),
                 _percent(r["std"]), _percent(r["mAP_slow"]), _percent(r["mAP_medium"]),
                 _percent(r["mAP_fast"]), _percent(r["paper"])]
        lines.append("| " + " | ".join(cells) + " |")
    rfcn = budget["rfcn"]
    lines += ["", f"**Budget**: each variant {budget['stmn_steps']} steps of "
                  f"{budget.get('batch', '?')} clips x {budget.get('frames', '?')} frames, "
                  f"seeds {', '.join(seeds)} (`train.seed` and `train_data.seed`), all initialised "
                  f"(`--init-from`) from the same static R-FCN (`{rfcn['dir_shown']}`, "
                  f"{rfcn['source']}). Evaluation: window {evaluation['window']}, no linking, "
                  f"{evaluation.get('num_videos', '?')} test videos "
                  f"({evaluation.get('num_frames', '?')} frames).", "",
              f"**Order**: {verdict['text']}", "",
              "![mean mAP per method](ablation.png)", "",
              "- The paper's Table 2 is Fast R-CNN on VGG-16 on ImageNet VID, without data "
              "augmentation; it has no static-detector column. Only the order of the methods "
              "compares with the numbers here, not their size.",
              "- STMN-No-MatchTrans: the memory is not aligned between frames. ConvGRU-Pretrain: "
              "a ConvGRU (sigmoid and tanh) whose layers start from the R-FCN. ConvGRU-FreshFC: "
              "the same with the layers after the memory (the head) trained from scratch.",
              "- spread and std are over the seeds (std: sample std, ddof 1); `-` where "
              "undefined (one run, or no ground truth in a motion class).", ""]
    if timings:
        lines += ["## Timings (seconds per run: training and evaluation)", ""]
        lines += [f"- {name}: {seconds}" for name, seconds in timings.items()] + [""]
    lines += ["## Commands", "", "```bash"] + commands + ["```", ""]
    write_atomic(os.path.join(output, "README.md"), "\n".join(lines))


def load_evals(runs):
    """{(method, seed): metrics} of the runs with an eval.json, and their headers."""
    evals, headers = {}, {}
    for run in runs:
        if not run.done:
            continue
        try:
            with open(run.eval_path) as f:
                result = json.load(f)
        except ValueError as e:
            # evaluate.py writes its JSON in place: an interrupted write leaves it cut.
            raise SystemExit(f"ablation: {run.eval_path} is not valid JSON ({e}); delete it "
                             "to evaluate that run again")
        key = "rfcn" if run.method == "rfcn" else "stmn"
        if key not in result["methods"]:
            raise SystemExit(f"ablation: {run.eval_path} has no {key!r} method")
        evals[(run.method, run.seed)] = result["methods"][key]
        headers[run.name] = {k: result.get(k) for k in ("num_videos", "num_frames", "settings")}
    return evals, headers


def _train_shape(runs):
    """Batch (clips) and frames per clip from the first variant's resolved config."""
    import yaml

    for run in runs:
        path = os.path.join(run.model_dir, "config.yaml")
        if run.method != "rfcn" and os.path.exists(path):
            with open(path) as f:
                data = yaml.safe_load(f)["train_data"]
            return {"batch": data.get("global_batch_size"), "frames": data.get("num_frames")}
    return {}


def _evaluation(headers, max_videos):
    """The evaluation settings, with the test set's size when every run agrees on it."""
    evaluation = {"window": WINDOW, "linking": "none", "max_videos": max_videos or None}
    for key in ("num_videos", "num_frames"):
        values = {h[key] for h in headers.values()}
        if len(values) == 1:
            evaluation[key] = values.pop()
        elif values:
            evaluation[key] = "differs between runs: " + ", ".join(map(str, sorted(values)))
    return evaluation


def previous_timings(output):
    """The per-run seconds an earlier (interrupted) invocation recorded, if any."""
    try:
        with open(os.path.join(output, "results.json")) as f:
            return dict(json.load(f).get("timings_seconds", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def report(demo, runs, args, rfcn, timings):
    evals, headers = load_evals(runs)
    rows = summarize(evals, args.variants, args.seeds)
    verdict = order_verdict(rows)
    budget = {"stmn_steps": args.stmn_steps, "seeds": list(args.seeds),
              "variants": list(args.variants), "rfcn": rfcn, "preset": args.preset,
              "preset_overrides": list(PRESETS[args.preset]),
              "variant_overrides": [o.strip() for o in args.params_override.split(",")
                                    if o.strip()], **_train_shape(runs)}
    budget["run_steps"] = {r.name: checkpoint_step(r.model_dir) for r in runs}
    commands = [shown_command(script, a) for run in runs
                for script, a in run.commands(args.rfcn_steps if run.method == "rfcn"
                                              else args.stmn_steps, args.max_videos)]
    write_report(demo.output, rows, verdict, budget, _evaluation(headers, args.max_videos),
                 commands, {r.name: timings[r.name] for r in runs if r.name in timings})
    if any(r["mean"] is not None for r in rows):
        plot(rows, demo.path("ablation.png"))
    return rows, verdict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS),
                        help="the data: make demo's videos, or objects moving 1-2 feature "
                             "cells between sampled frames (see the module docstring)")
    parser.add_argument("--output", default=None,
                        help="default reports/ablation (preset default) or "
                             "reports/ablation_motion (preset motion)")
    parser.add_argument("--rfcn-dir", default=None,
                        help="the static R-FCN to start from (default: <output>/rfcn from an "
                             "earlier run, else reports/demo/rfcn when at --rfcn-steps, else "
                             "trained into <output>/rfcn)")
    parser.add_argument("--rfcn-steps", type=int, default=RFCN_STEPS,
                        help="steps of the R-FCN when trained here (make demo's default)")
    parser.add_argument("--stmn-steps", type=int, default=VARIANT_STEPS,
                        help="steps of every variant (the same budget for all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--max-videos", type=int, default=0,
                        help="evaluate on the first N test videos only (0: all)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from the runs already evaluated; train "
                             "and evaluate nothing")
    parser.add_argument("--params-override", default="",
                        help='config overrides of the variants\' runs, e.g. '
                             '"model.memory.affinity_power=1.0"')
    args = parser.parse_args(argv)
    args.output = args.output or DEFAULT_OUTPUTS[args.preset]
    overrides = [o.strip() for o in args.params_override.split(",") if o.strip()]
    args.variants = [v for v in VARIANTS if v in args.variants]
    args.seeds = list(dict.fromkeys(args.seeds))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    demo = Demo(args.output, args.rfcn_steps, args.stmn_steps, args.max_videos)
    os.makedirs(demo.output, exist_ok=True)
    # Only the default preset's data is make demo's, so only it may reuse make demo's R-FCN.
    rfcn_dir, train_rfcn, source = choose_rfcn(
        demo.output, args.rfcn_dir, args.rfcn_steps,
        DEMO_RFCN_DIR if args.preset == "default" else None)
    print(f"static R-FCN: {rfcn_dir} ({source})")
    rfcn = {"dir": rfcn_dir, "source": source,
            "dir_shown": os.path.relpath(rfcn_dir, REPO) if rfcn_dir.startswith(REPO) else rfcn_dir}
    runs = plan_runs(demo.output, rfcn_dir, train_rfcn, args.variants, args.seeds,
                     PRESETS[args.preset], overrides)
    timings = previous_timings(demo.output)
    for k, run in enumerate([] if args.report_only else runs, start=1):
        stage = f"run {k}/{len(runs)}: {LABELS[run.method]}" + (
            "" if run.seed is None else f", seed {run.seed}")
        demo.stage(stage)
        if run.done:
            print(f"skipped: {run.eval_path} exists", flush=True)
            continue
        steps = args.rfcn_steps if run.method == "rfcn" else args.stmn_steps
        for script, script_args in run.commands(steps, args.max_videos):
            demo.run(script, *script_args)
        demo.end_stage()
        timings[run.name] = demo.timings[stage]
        report(demo, runs, args, rfcn, timings)
    rows, verdict = report(demo, runs, args, rfcn, timings)
    print(f"\nDone in {time.time() - demo.start:.0f} s: {demo.path('README.md')}")
    for r in rows:
        print(f"  {r['label']:20s} mean mAP {_percent(r['mean']):>5s}  spread "
              f"{_percent(r['spread']):>5s}  ({r['n']} run(s))")
    print(verdict["text"])


if __name__ == "__main__":
    main()
