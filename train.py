"""Trains the static R-FCN or STMN detector (issue: training).

Not built yet: the distributed training loop lands with the training issue. This entry
point says so plainly instead of pretending to train.
"""

import sys

if __name__ == "__main__":
    sys.exit("train.py: training is not built yet (see the open training issue).")
