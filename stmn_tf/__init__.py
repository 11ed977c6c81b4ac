"""stmn-tf: Spatial-Temporal Memory Networks for video object detection (Xiao & Lee, ECCV 2018)."""

__version__ = "0.1.0"
