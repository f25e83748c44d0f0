"""The black outline that keeps white text legible on any image or colour map (matplotlib)."""
from __future__ import annotations

#: outline width (points) around white labels
OUTLINE_WIDTH_PT = 2.5


def black_outline(linewidth: float = OUTLINE_WIDTH_PT) -> list:
    """Path effects drawing a black stroke of ``linewidth`` points under an artist (text, lines).

    Parameters
    ----------
    linewidth : float
        Width of the stroke, points.

    Returns
    -------
    list
        ``[matplotlib.patheffects.withStroke(...)]``, for ``path_effects=`` or ``set_path_effects``.

    Example
    -------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> t = ax.text(0.5, 0.5, "7", color="white", path_effects=black_outline())
    >>> [type(e).__name__ for e in t.get_path_effects()]
    ['withStroke']
    >>> plt.close(fig)
    """
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=linewidth, foreground="black")]
