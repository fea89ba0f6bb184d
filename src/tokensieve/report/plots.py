"""The plotting toolkit every capability draws with: headless matplotlib, PNG bytes.

Figures are returned as PNG bytes, so callers decide where (and how atomically) to
write them. Knows nothing of any capability.
"""

from __future__ import annotations

import io
import warnings

import matplotlib

matplotlib.use("Agg")  # no display needed, ever
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FLOOR = 1e-4  # entropies below this are drawn in the first bin of the log axis


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed.

    Text the default font cannot draw (CJK, say) is shown as boxes; matplotlib would warn
    once per missing glyph and flood the terminal, so those warnings are dropped."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*missing from (current )?font")
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def heatmap(values: np.ndarray, title: str, xlabel: str, ylabel: str, label: str) -> bytes:
    """Rows × columns in [0, 1] as an image with a colour bar."""
    fig, ax = plt.subplots(figsize=(10, 0.12 * values.shape[0] + 1.6))
    image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                      interpolation="nearest")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=label, pad=0.01)
    return png_bytes(fig)
