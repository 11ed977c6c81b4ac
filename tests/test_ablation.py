"""The ablation's table, verdict, plan of runs and report (no training)."""

import json
import math
import os
import subprocess
import sys

import pytest

from stmn_tf import ablation

SEEDS = (0, 1)


def metrics(m, slow=None, medium=None, fast=None):
    return {"mAP": m, "mAP_slow": slow, "mAP_medium": medium, "mAP_fast": fast, "AP": {}}


def fake_evals(means, offset=0.02):
    """Seed 0 at mean - offset, seed 1 at mean + offset, for each variant."""
    evals = {("rfcn", None): metrics(0.30, 0.4, 0.3, 0.2)}
    for variant, mean in means.items():
        evals[(variant, 0)] = metrics(mean - offset, 0.5, float("nan"), None)
        evals[(variant, 1)] = metrics(mean + offset, 0.7, float("nan"), None)
    return evals


PAPER_ORDER = {"stmn": 0.60, "stmn_no_matchtrans": 0.50, "convgru_pretrain": 0.40,
               "convgru_freshfc": 0.30}


def test_summarize_rows_means_and_spreads():
    rows = ablation.summarize(fake_evals(PAPER_ORDER))
    assert [r["method"] for r in rows] == ["rfcn", *ablation.VARIANTS]
    static, stmn = rows[0], rows[1]
    assert static["n"] == 1 and static["mean"] == pytest.approx(0.30)
    assert static["spread"] is None and static["std"] is None and static["seeds"] == {}
    assert static["paper"] is None
    assert stmn["seeds"] == {"0": pytest.approx(0.58), "1": pytest.approx(0.62)}
    assert stmn["mean"] == pytest.approx(0.60)
    assert stmn["spread"] == pytest.approx(0.04)
    assert stmn["std"] == pytest.approx(0.04 / math.sqrt(2))  # sample std of two values
    assert stmn["mAP_slow"] == pytest.approx(0.6)
    assert stmn["mAP_medium"] is None and stmn["mAP_fast"] is None  # NaN / None only
    assert stmn["paper"] == pytest.approx(0.507)
    assert [r["paper"] for r in rows[1:]] == [0.507, 0.490, 0.480, 0.448]


def test_summarize_ignores_nan_and_missing_runs():
    evals = fake_evals(PAPER_ORDER)
    evals[("stmn", 1)] = metrics(float("nan"))
    del evals[("convgru_freshfc", 0)]
    rows = {r["method"]: r for r in ablation.summarize(evals)}
    assert rows["stmn"]["n"] == 1 and rows["stmn"]["mean"] == pytest.approx(0.58)
    assert rows["stmn"]["seeds"]["1"] is None and rows["stmn"]["spread"] is None
    assert rows["convgru_freshfc"]["seeds"] == {"0": None, "1": pytest.approx(0.32)}
    assert rows["convgru_freshfc"]["n"] == 1


def test_summarize_three_seeds_std():
    evals = {("stmn", s): metrics(v) for s, v in zip((0, 1, 2), (0.1, 0.2, 0.6))}
    row = ablation.summarize(evals, variants=("stmn",), seeds=(0, 1, 2))[1]
    assert row["mean"] == pytest.approx(0.3)
    assert row["spread"] == pytest.approx(0.5)
    assert row["std"] == pytest.approx(math.sqrt((0.04 + 0.01 + 0.09) / 2))


def test_order_holds():
    verdict = ablation.order_verdict(ablation.summarize(fake_evals(PAPER_ORDER)))
    assert verdict["holds"] is True
    assert verdict["observed"] == list(ablation.VARIANTS)
    assert [p["gap"] for p in verdict["pairs"]] == pytest.approx([0.1, 0.1, 0.1])
    assert not any(p["within_seed_spread"] for p in verdict["pairs"])
    assert "holds" in verdict["text"] and "does not" not in verdict["text"]


def test_order_reversed_and_within_spread():
    means = {**PAPER_ORDER, "stmn_no_matchtrans": 0.61}  # above STMN by 0.01
    verdict = ablation.order_verdict(ablation.summarize(fake_evals(means, offset=0.05)))
    assert verdict["holds"] is False
    assert verdict["observed"][:2] == ["stmn_no_matchtrans", "stmn"]
    first = verdict["pairs"][0]
    assert first["holds"] is False and first["gap"] == pytest.approx(-0.01)
    assert first["within_seed_spread"] is True  # |gap| 0.01 < spread 0.10
    assert "does not hold" in verdict["text"]
    assert "STMN-No-MatchTrans >= STMN" in verdict["text"]


def test_order_tie_does_not_hold():
    means = {**PAPER_ORDER, "convgru_freshfc": PAPER_ORDER["convgru_pretrain"]}
    assert ablation.order_verdict(ablation.summarize(fake_evals(means)))["holds"] is False


def test_order_undetermined_when_a_variant_has_no_mean():
    evals = fake_evals(PAPER_ORDER)
    evals[("convgru_pretrain", 0)] = metrics(None)
    evals[("convgru_pretrain", 1)] = metrics(float("nan"))
    verdict = ablation.order_verdict(ablation.summarize(evals))
    assert verdict["holds"] is None and "ConvGRU-Pretrain" in verdict["text"]
    subset = ablation.summarize(fake_evals({"stmn": 0.5}), variants=("stmn",))
    assert ablation.order_verdict(subset)["holds"] is None


def test_plan_runs_and_skipping(tmp_path):
    rfcn = str(tmp_path / "rfcn_model")
    runs = ablation.plan_runs(tmp_path, rfcn, train_rfcn=False,
                              variants=("convgru_freshfc", "stmn"), seeds=(3, 4))
    assert [r.name for r in runs] == ["rfcn", "stmn_seed3", "convgru_freshfc_seed3",
                                      "stmn_seed4", "convgru_freshfc_seed4"]
    assert runs[0].eval_path == str(tmp_path / "rfcn" / "eval.json")
    assert runs[1].model_dir == str(tmp_path / "stmn_seed3")
    assert runs[1].eval_path == str(tmp_path / "stmn_seed3" / "eval.json")
    assert all(r.init_from == rfcn and r.train for r in runs[1:])
    assert runs[2].config.endswith(os.path.join("configs", "synthetic_tiny_convgru_freshfc.yaml"))
    assert not any(r.done for r in runs)
    os.makedirs(tmp_path / "stmn_seed4")
    (tmp_path / "stmn_seed4" / "eval.json").write_text("{}")
    assert [r.name for r in runs if r.done] == ["stmn_seed4"]


def test_run_commands():
    runs = ablation.plan_runs("/out", "/r", train_rfcn=False, variants=("stmn",), seeds=(1,))
    (only_eval,) = runs[0].commands(3000)
    assert only_eval[0] == "evaluate.py" and "--max-videos" not in only_eval[1]
    assert only_eval[1][only_eval[1].index("--checkpoint") + 1] == "/r"
    train, evaluate = runs[1].commands(1000, max_videos=2)
    script, args = train
    assert script == "train.py"
    assert args[args.index("--steps") + 1] == 1000
    assert args[args.index("--init-from") + 1] == "/r"
    assert args[args.index("--params-override") + 1] == "train.seed=1,train_data.seed=1"
    assert args[args.index("--model-dir") + 1] == "/out/stmn_seed1"
    script, args = evaluate
    assert args[args.index("--window") + 1] == 11 and args[args.index("--linking") + 1] == "none"
    assert args[args.index("--max-videos") + 1] == 2
    assert args[args.index("--output") + 1] == "/out/stmn_seed1/eval.json"


def fake_checkpoint(directory, step):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "ckpt-{step}"\n'
                f'all_model_checkpoint_paths: "ckpt-{step}"\n')
    open(os.path.join(directory, f"ckpt-{step}.index"), "w").close()


def test_checkpoint_step(tmp_path):
    assert ablation.checkpoint_step(tmp_path / "missing") is None
    fake_checkpoint(tmp_path, 2800)
    assert ablation.checkpoint_step(tmp_path) == 2800
    os.remove(tmp_path / "ckpt-2800.index")  # the state file names a deleted checkpoint
    assert ablation.checkpoint_step(tmp_path) is None


def test_choose_rfcn(tmp_path):
    out, demo = tmp_path / "out", tmp_path / "demo_rfcn"
    with pytest.raises(SystemExit, match="no checkpoint"):
        ablation.choose_rfcn(out, rfcn_dir=str(tmp_path / "nothing"))
    # No demo R-FCN: trained here.
    assert ablation.choose_rfcn(out, None, 3000, demo)[:2] == (str(out / "rfcn"), True)
    # The demo's R-FCN before its last step (still training?): not reused.
    fake_checkpoint(demo, 2000)
    directory, train, reason = ablation.choose_rfcn(out, None, 3000, demo)
    assert (directory, train) == (str(out / "rfcn"), True) and "2000 < 3000" in reason
    fake_checkpoint(demo, 3000)
    assert ablation.choose_rfcn(out, None, 3000, demo)[:2] == (str(demo), False)
    # An R-FCN an earlier ablation trained wins, so that the variants share it.
    fake_checkpoint(out / "rfcn", 100)
    directory, train, reason = ablation.choose_rfcn(out, None, 3000, demo)
    assert (directory, train, reason) == (str(out / "rfcn"), True, "trained here, step 100 of 3000")
    assert ablation.choose_rfcn(out, str(demo), 3000, demo)[:2] == (str(demo), False)


def write_eval(path, method, m, num_videos=2):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"methods": {method: metrics(m, 0.5, None, 0.1)}, "num_videos": num_videos,
                   "num_frames": 40, "settings": {"window": 11}}, f)


def test_load_evals(tmp_path):
    runs = ablation.plan_runs(tmp_path, "/r", variants=("stmn",), seeds=(0, 1))
    write_eval(runs[0].eval_path, "rfcn", 0.25)
    write_eval(runs[2].eval_path, "stmn", 0.5)
    evals, headers = ablation.load_evals(runs)
    assert set(evals) == {("rfcn", None), ("stmn", 1)}
    assert evals[("stmn", 1)]["mAP"] == 0.5 and headers["stmn_seed1"]["num_videos"] == 2
    write_eval(runs[1].eval_path, "rfcn", 0.5)  # an R-FCN's JSON where STMN's belongs
    with pytest.raises(SystemExit, match="no 'stmn' method"):
        ablation.load_evals(runs)
    with open(runs[1].eval_path, "w") as f:
        f.write('{"methods": {"stmn": {"mA')  # cut by an interrupted write
    with pytest.raises(SystemExit, match="not valid JSON.*delete it"):
        ablation.load_evals(runs)


def test_write_report(tmp_path):
    rows = ablation.summarize(fake_evals(PAPER_ORDER))
    verdict = ablation.order_verdict(rows)
    budget = {"stmn_steps": 1000, "seeds": [0, 1], "batch": 4, "frames": 7,
              "rfcn": {"dir": "/x/rfcn", "dir_shown": "reports/demo/rfcn", "source": "make demo's"}}
    evaluation = {"window": 11, "linking": "none", "num_videos": 6, "num_frames": 360}
    ablation.write_report(str(tmp_path), rows, verdict, budget, evaluation, ["python train.py"],
                          {"run 1/9": 12.5})
    assert sorted(os.listdir(tmp_path)) == ["README.md", "results.json"]  # no temporary left
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["order"]["holds"] is True
    assert [r["method"] for r in results["rows"]] == ["rfcn", *ablation.VARIANTS]
    assert results["rows"][1]["mAP_medium"] is None  # NaN written as null
    readme = (tmp_path / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| method | mAP seed 0 | mAP seed 1 | mean |")
    assert table[1] == "|" + " --- |" * 10
    assert table[2] == "| static R-FCN | (one model) |  | 30.0 | - | - | 40.0 | 30.0 | 20.0 | - |"
    assert table[3] == "| STMN | 58.0 | 62.0 | 60.0 | 4.0 | 2.8 | 60.0 | - | - | 50.7 |"
    assert table[6].startswith("| ConvGRU-FreshFC | 28.0 | 32.0 | 30.0 |")
    assert "1000 steps of 4 clips x 7 frames, seeds 0, 1" in readme
    assert "6 test videos (360 frames)" in readme
    assert verdict["text"] in readme and "python train.py" in readme


def test_write_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "results.json")
    ablation.write_atomic(path, "old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        ablation.write_atomic(path, "new")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_plot(tmp_path):
    evals = fake_evals(PAPER_ORDER)
    del evals[("convgru_freshfc", 0)], evals[("convgru_freshfc", 1)]
    path = tmp_path / "ablation.png"
    ablation.plot(ablation.summarize(evals), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["ablation.png"]


def test_importable_without_tensorflow():
    code = "import sys, stmn_tf.ablation; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_main_skips_evaluated_runs_and_reports(tmp_path, monkeypatch, capsys):
    rfcn = tmp_path / "rfcn_model"
    fake_checkpoint(rfcn, 3000)
    out = tmp_path / "out"
    runs = ablation.plan_runs(out, str(rfcn), seeds=(0, 1))
    for run in runs:
        method = "rfcn" if run.method == "rfcn" else "stmn"
        write_eval(run.eval_path, method, 0.3 if run.method == "rfcn" else
                   PAPER_ORDER[run.method] + 0.01 * run.seed)
    os.makedirs(out, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"timings_seconds": {"stmn_seed0": 61.0}}))

    def no_run(self, *args):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(ablation.Demo, "run", no_run)
    ablation.main(["--output", str(out), "--rfcn-dir", str(rfcn)])
    printed = capsys.readouterr().out
    assert printed.count("skipped:") == 9 and "run 9/9: ConvGRU-FreshFC, seed 1" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["order"]["holds"] is True
    assert results["rows"][1]["mean"] == pytest.approx(0.605)
    assert results["timings_seconds"] == {"stmn_seed0": 61.0}  # kept from the earlier invocation
    assert results["budget"]["rfcn"]["source"] == "given with --rfcn-dir, step 3000"
    assert results["budget"]["run_steps"]["rfcn"] == 3000
    assert (out / "ablation.png").exists()
    assert "- stmn_seed0: 61.0" in (out / "README.md").read_text()


def test_motion_preset_and_variant_overrides_reach_every_command():
    preset = ablation.PRESETS["motion"]
    runs = ablation.plan_runs("/out", "/r", train_rfcn=True, variants=("stmn",), seeds=(2,),
                              preset=preset, overrides=("model.memory.affinity_power=1.0",))
    (rfcn_train, rfcn_eval), (train, evaluate) = runs[0].commands(3000), runs[1].commands(500)
    overrides = rfcn_train[1][rfcn_train[1].index("--params-override") + 1].split(",")
    assert overrides == list(preset)  # the R-FCN gets the data, not the variant overrides
    assert rfcn_eval[1][rfcn_eval[1].index("--params-override") + 1].split(",") == list(preset)
    overrides = train[1][train[1].index("--params-override") + 1].split(",")
    assert overrides == list(preset) + ["model.memory.affinity_power=1.0", "train.seed=2",
                                        "train_data.seed=2"]
    # Evaluation reads the same data and builds the same model; the seeds do not matter there.
    assert evaluate[1][evaluate[1].index("--params-override") + 1].split(",") == \
        list(preset) + ["model.memory.affinity_power=1.0"]
    assert any(o.startswith("synthetic_data_dir=") for o in preset)


def test_motion_preset_never_takes_make_demos_rfcn(tmp_path):
    demo = tmp_path / "demo_rfcn"
    fake_checkpoint(demo, 5000)
    directory, train, _ = ablation.choose_rfcn(tmp_path / "out", None, 3000, demo_dir=None)
    assert directory == str(tmp_path / "out" / "rfcn") and train
    directory, train, _ = ablation.choose_rfcn(tmp_path / "out2", None, 3000, demo_dir=str(demo))
    assert directory == str(demo) and not train


def test_report_only_trains_nothing(tmp_path, monkeypatch, capsys):
    rfcn = tmp_path / "rfcn_model"
    fake_checkpoint(rfcn, 3000)
    out = tmp_path / "out"
    runs = ablation.plan_runs(out, str(rfcn), seeds=(0,))
    write_eval(runs[0].eval_path, "rfcn", 0.3)
    write_eval(runs[1].eval_path, "stmn", 0.5)  # STMN seed 0 only

    def no_run(self, *args):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(ablation.Demo, "run", no_run)
    ablation.main(["--output", str(out), "--rfcn-dir", str(rfcn), "--seeds", "0",
                   "--report-only", "--preset", "motion"])
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["preset"] == "motion"
    assert [r["n"] for r in results["rows"]] == [1, 1, 0, 0, 0]
    assert results["order"]["holds"] is None
