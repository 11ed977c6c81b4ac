"""The paper's Table 2, once: each memory variant's cell, alignment and what the
stage-2 weight transfer copies, read by `models.builders`, `models.detector_transfer` and the
ablation (`stmn_tf.ablation`).

The ConvGRU baselines (Ballas et al.) have no MatchTrans; the two differ only in what
the transfer copies: ConvGRU-FreshFC leaves the memory's W convolutions and the layers
after it (the R-FCN head) freshly initialised.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of Table 2.

    Attributes:
        name: str, the config's `memory.variant`.
        label: str, the paper's name.
        cell: str, `"stmm"` or `"convgru"`.
        align: bool, MatchTrans on.
        transfer_memory: bool, copy the R-FCN's 3x3 conv into the memory's W convs.
        transfer_head: bool, copy the R-FCN head.
        paper_map: float, Table 2's mAP on ImageNet VID (the paper's Fast R-CNN on
            VGG-16), as a fraction.
    """

    name: str
    label: str
    cell: str
    align: bool
    transfer_memory: bool
    transfer_head: bool
    paper_map: float


# In the paper's order, best first (the order the ablation checks).
VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("stmn", "STMN", "stmm", True, True, True, 0.507),
        Variant("stmn_no_matchtrans", "STMN-No-MatchTrans", "stmm", False, True, True, 0.490),
        Variant("convgru_pretrain", "ConvGRU-Pretrain", "convgru", False, True, True, 0.480),
        Variant("convgru_freshfc", "ConvGRU-FreshFC", "convgru", False, False, False, 0.448),
    )
}


def get_variant(name):
    """The `Variant` called `name`; a ValueError names the known ones otherwise."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown memory variant {name!r}; one of {sorted(VARIANTS)}")
    return VARIANTS[name]
