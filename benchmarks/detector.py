"""Forward time of the static R-FCN vs STMN on the same backbone and input, in one run.

For a clip of 11 frames (the paper's test window): ResNet-50 at 337x600 (the paper's
Sec. 4.4 setting, with ResNet-50 instead of 101 to fit a CPU run) and the tiny model.
The main figures give both detectors the same 300 external proposals per frame (the
paper timed its detector with precomputed proposals); the times with their RPN (the
same in both) with --with-rpn. The detectors differ only in the 3x3 1024->1024 conv
vs the bidirectional memory.

The FLOP ratio is counted from the layers' shapes: every convolution (2 * output
positions * kh * kw * C_in * C_out per frame, backbone included) plus MatchTrans (the
window dot products, norms and weighted sums); NMS, PS-RoI pooling and elementwise
ops are left out (they are the same in both, or small). The STMN's extra time is
broken down into MatchTrans, the W/W_z/W_r input convolutions (one batched conv for
all frames and both directions), and the rest of the recurrence (U convolutions,
BN*/gates).

    python benchmarks/detector.py [--repeats 2] [--quick] [--with-rpn]

Prints a table, then one JSON line. Timing is noisy on shared machines: the two
detectors run in turns and the ratios are taken side by side in one run; the
breakdown's parts are timed separately, so compare them with each other (e.g. the
memory against the 3x3 conv it replaces), not with the detectors' totals.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stmn_tf import ops  # noqa: E402
from stmn_tf.layers._gated_conv import project_inputs  # noqa: E402
from stmn_tf.models import ModelConfig  # noqa: E402
from stmn_tf.models.builders import build_rfcn  # noqa: E402
from stmn_tf.models.builders import build_stmn  # noqa: E402

FRAMES = 11
# Overrides of the paper's ModelConfig (30 classes, proposal budgets and decoding kept).
TINY = {
    "backbone": {"tiny": True, "frozen_stages": 0}, "features": {"reduce_channels": 32, "channels": 64},
    "head": {"rfcn_channels": 32}, "rpn": {"channels": 32}, "anchors": {"scales": [16.0, 32.0, 64.0]},
}
SETTINGS = {
    "resnet50_337x600": dict(size=(337, 600), overrides={"backbone": {"depth": 50}}, filters=512),
    "tiny_337x600": dict(size=(337, 600), overrides=TINY, filters=32),
}


def model_config(setting, model_type):
    config = ModelConfig(type=model_type, num_classes=30)
    config.override(setting["overrides"])
    config.override({"head": {"channels": 2 * setting["filters"]},
                     "memory": {"filters": setting["filters"]}})
    return config


def median_seconds(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved_median_seconds(fns, repeats, warmup=1):
    """Median time of each function, run in turns so that load changes hit all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def conv_flops(layer, out_h, out_w):
    kh, kw, cin, cout = layer.kernel.shape
    return 2.0 * out_h * out_w * kh * kw * cin * cout


def backbone_flops(backbone, image):
    convs = [l for l in backbone.layers if isinstance(l, keras.layers.Conv2D)]
    probe = keras.Model(backbone.input, [l.output for l in convs])
    outputs = probe(image)
    return sum(conv_flops(l, o.shape[1], o.shape[2]) for l, o in zip(convs, outputs))


def head_flops(model, h, w):
    """Convs after the backbone shared by both models (features, RPN, R-FCN head)."""
    layers = [
        model.features.reduce_conv, model.features.expand_conv, model.rpn_head.conv,
        model.rpn_head.objectness, model.rpn_head.box_deltas, model.rfcn_head.reduce_conv,
        model.rfcn_head.class_conv, model.rfcn_head.box_conv,
    ]
    return sum(conv_flops(l, h, w) for l in layers)


def match_trans_flops(h, w, channels, depth, k=2):
    window = (2 * k + 1) ** 2
    return h * w * (2 * channels * (window + 2) + 2 * depth * window)


def memory_flops(stmn, h, w):
    total = 0.0
    for cell in stmn.memory_cells():
        for name in ("conv_w", "conv_z_w", "conv_r_w", "conv_u", "conv_z_u", "conv_r_u"):
            total += conv_flops(getattr(cell, name), h, w)
        if cell.align:
            total += match_trans_flops(h, w, stmn.feature_channels, cell.filters, cell.k)
    return total


def run(name, setting, repeats, with_rpn=False):
    height, width = setting["size"]
    keras.utils.set_random_seed(0)
    rfcn = build_rfcn(model_config(setting, "rfcn"))
    stmn = build_stmn(model_config(setting, "stmn"))
    images = tf.random.uniform([1, FRAMES, height, width, 3], 0, 255)

    # The paper timed its detector with precomputed proposals: the main figures use
    # 300 fixed proposals per frame; the RPN's cost (same in both) is reported apart.
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 0.7, (1, FRAMES, 300, 2))
    proposals = tf.constant(np.concatenate([lo, lo + rng.uniform(0.05, 0.3, lo.shape)], -1), tf.float32)
    rfcn_forward = tf.function(lambda x, p: rfcn.detect({"images": x, "proposals": p}))
    stmn_forward = tf.function(lambda x, p: stmn.detect({"images": x, "proposals": p}))
    rfcn_rpn = tf.function(lambda x: rfcn.detect(x))
    stmn_rpn = tf.function(lambda x: stmn.detect(x))
    fns = [
        lambda: rfcn_forward(images, proposals)["num_detections"].numpy(),
        lambda: stmn_forward(images, proposals)["num_detections"].numpy(),
    ]
    if with_rpn:
        fns += [
            lambda: rfcn_rpn(images)["num_detections"].numpy(),
            lambda: stmn_rpn(images)["num_detections"].numpy(),
        ]
    times = interleaved_median_seconds(fns, repeats)
    t_rfcn, t_stmn = times[:2]

    features = tf.function(lambda x: stmn.extract_features(x))(images)  # [1, T, h, w, C]
    _, _, h, w, channels = features.shape
    rfcn_head = tf.function(lambda f: rfcn.head_features(f))
    stmn_memory = tf.function(lambda f: stmn.head_features(f))
    t_head_conv, t_memory = interleaved_median_seconds(
        [lambda: rfcn_head(features).numpy(), lambda: stmn_memory(features).numpy()], repeats
    )
    cells = stmn.memory_cells()
    convs = [c for cell in cells for c in cell.input_convs]
    inputs_fn = tf.function(lambda f: project_inputs(convs, f, cells[0].input_scale))
    t_input_convs = median_seconds(lambda: inputs_fn(features).numpy(), repeats)
    frames = features[0]  # [T, h, w, C]: both directions align T-1 pairs each
    memory = tf.random.uniform([FRAMES, h, w, setting["filters"]])
    mt = tf.function(lambda: ops.match_trans(frames[1:], frames[:-1], memory[:-1], k=cells[0].k))
    t_match_trans = len(cells) * median_seconds(lambda: mt().numpy(), repeats)

    common_flops = backbone_flops(rfcn.backbone, images[0, :1]) + head_flops(rfcn, h, w)
    rfcn_flops = FRAMES * (common_flops + conv_flops(rfcn.head_conv, h, w))
    stmn_flops = FRAMES * (common_flops + memory_flops(stmn, h, w))
    return {
        "setting": name,
        "frames": FRAMES,
        "feature_map": [int(h), int(w)],
        "rfcn_s": t_rfcn,
        "stmn_s": t_stmn,
        "time_ratio": t_stmn / t_rfcn,
        "flop_ratio": stmn_flops / rfcn_flops,
        "rfcn_gflops": rfcn_flops / 1e9,
        "stmn_gflops": stmn_flops / 1e9,
        "memory_vs_head_conv_flops": memory_flops(stmn, h, w) / conv_flops(rfcn.head_conv, h, w),
        "with_rpn": (
            {"rfcn_s": times[2], "stmn_s": times[3], "time_ratio": times[3] / times[2]}
            if with_rpn else None
        ),
        "extra_s": t_stmn - t_rfcn,
        "breakdown_s": {
            "memory_total": t_memory,
            "replaced_head_conv": t_head_conv,
            "match_trans": t_match_trans,
            "input_convs_w_wz_wr": t_input_convs,
            "recurrence_rest": t_memory - t_match_trans - t_input_convs,
        },
        "match_trans_implementation": "custom_op" if ops.custom_op_available() else "tf",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--with-rpn", action="store_true", help="also time both with their RPN")
    parser.add_argument("--quick", action="store_true", help="the tiny model only")
    args = parser.parse_args()
    names = ["tiny_337x600"] if args.quick else list(SETTINGS)
    results = [run(name, SETTINGS[name], args.repeats, args.with_rpn) for name in names]
    print(f"{'setting':<18} {'R-FCN s':>8} {'STMN s':>8} {'time x':>7} {'FLOP x':>7} "
          f"{'memory s':>9} {'3x3 s':>7} {'MatchT s':>9} {'W convs s':>9} {'rest s':>7}")
    for r in results:
        b = r["breakdown_s"]
        print(f"{r['setting']:<18} {r['rfcn_s']:8.3f} {r['stmn_s']:8.3f} {r['time_ratio']:7.3f} "
              f"{r['flop_ratio']:7.3f} {b['memory_total']:9.3f} {b['replaced_head_conv']:7.3f} "
              f"{b['match_trans']:9.3f} {b['input_convs_w_wz_wr']:9.3f} {b['recurrence_rest']:7.3f}")
    print(json.dumps({"benchmark": "detector", "results": results}))


if __name__ == "__main__":
    main()
