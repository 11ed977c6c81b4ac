"""Writing the figures of the reports."""

import os


def save_png(fig, path, dpi=100):
    """Writes matplotlib figure `fig` to `path` as a PNG, whole or not at all (a
    temporary name, then a rename), and closes it."""
    import matplotlib.pyplot as plt

    temporary = f"{path}.tmp{os.getpid()}"
    try:
        fig.savefig(temporary, format="png", dpi=dpi)
        os.replace(temporary, path)
    finally:
        plt.close(fig)
        if os.path.exists(temporary):
            os.remove(temporary)
