"""Exports a trained detector as a SavedModel for TF Serving (issue: export).

Not built yet: the export lands with the export issue. This entry point says so plainly.
"""

import sys

if __name__ == "__main__":
    sys.exit("export.py: export is not built yet (see the open export issue).")
