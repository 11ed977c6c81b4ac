"""The demo report's tables (stmn_tf/demo.py)."""

import json

from stmn_tf import configs
from stmn_tf import demo


def test_window_sweep_table_has_one_row_per_merge_in_percent():
    sweep = {"all": {3: 0.245, 7: 0.287, 11: 0.281, 15: 0.267},
             "center": {3: 0.2, 7: 0.25, 11: 0.27}}
    lines = demo.window_sweep_table(sweep)
    assert lines[0] == "| a frame's detections from | T=3 | T=7 | T=11 | T=15 |"
    assert lines[2] == f"| {demo.MERGE_LABELS['all']} | 24.5 | 28.7 | 28.1 | 26.7 |"
    assert lines[3] == f"| {demo.MERGE_LABELS['center']} | 20.0 | 25.0 | 27.0 | - |"


def test_saliency_table_states_the_ratio():
    ratios = {"stmn": {"inside_mean": 2.0, "outside_mean": 1.6, "ratio": 1.25},
              "stmn_align_off": {"inside_mean": 1.0, "outside_mean": 1.0, "ratio": None}}
    lines = demo.saliency_table(ratios)
    assert lines[-2] == "| STMN (MatchTrans) | 2.000 | 1.600 | 1.250 |"
    assert lines[-1] == "| same weights, MatchTrans off | 1.000 | 1.000 | - |"


def test_memory_transport_table_reads_the_benchmark_json(tmp_path, monkeypatch):
    assert "has not been run" in demo.memory_transport_table(None)[0]
    payload = {"speeds": [0, 1.5], "seeds": 3,
               "accuracy": {"stmn": [0.9, 0.8], "stmn_no_matchtrans": [0.91, 0.5]}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload))
    monkeypatch.setattr(demo, "MEMORY_TRANSPORT_JSON", str(path))
    results = demo.memory_transport_results()
    lines = demo.memory_transport_table(results)
    assert "mean of 3 seeds" in lines[0]
    assert lines[2] == "| memory | v=0 | v=1.5 |"
    assert lines[4:] == ["| stmn | 90.0 | 80.0 |", "| stmn_no_matchtrans | 91.0 | 50.0 |"]


def test_alignment_table_shows_each_set_of_cells():
    cells = {"cells": 10, "largest": 0.3, "entropy": 2.0, "zero_offset": 0.25}
    coefficients = {"object": cells, "background": {**cells, "cells": 90},
                    "track": {**cells, "cells": 4, "true_offset": 0.2, "argmax_on_true": 0.5},
                    "uniform_largest": 0.04, "uniform_entropy": 3.2189}
    lines = demo.alignment_table(coefficients)
    assert "| STMN | object (10) | 0.300 | 2.00 | 0.250 |  |  |" in lines
    assert "| STMN | track (4) | 0.300 | 2.00 | 0.250 | 0.200 | 50% |" in lines
    assert lines[-1].endswith("largest 0.040, entropy 3.22 nats.")
    prior = [0.0] * 25
    prior[12] = 1.0
    lines = demo.alignment_table({**coefficients, "offset_prior": {"forward": prior}})
    assert "    0.000 0.000 1.000 0.000 0.000" in lines
    assert lines[-1] == "![the learned offset prior](offset_prior.png)"


def test_default_budgets_are_the_tiny_configs_steps():
    # make demo and make ablation train the budgets the configs were tuned for.
    assert demo.RFCN_STEPS == configs.synthetic_tiny_rfcn().train.steps
    assert demo.STMN_STEPS == configs.synthetic_tiny_stmn().train.steps
    schedule = configs.synthetic_tiny_rfcn().train.optimizer
    assert max(schedule.decay_steps) < demo.RFCN_STEPS
