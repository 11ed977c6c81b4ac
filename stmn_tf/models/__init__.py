"""Backbones, heads, the static R-FCN and STMN detectors, weight transfer."""
