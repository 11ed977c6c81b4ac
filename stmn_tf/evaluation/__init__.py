"""ImageNet VID devkit mAP, the FGFA motion breakdown and COCO AP."""
