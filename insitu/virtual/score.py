"""Score found seeds against the virtual specimen's ground truth."""
from __future__ import annotations

import numpy as np


def match_seeds(found_x, found_y, true_x, true_y, tol_px: float = 5.0) -> dict:
    """One-to-one matching of found and true seed positions (px) within ``tol_px``.

    Optimal assignment (Hungarian, minimising total distance) among pairs closer
    than ``tol_px``.

    Returns
    -------
    dict
        ``tp, fp, fn`` (int), ``precision, recall, f1`` (float; 1.0 when both sets are
        empty), ``pairs`` (list of (found index, true index)), ``distance_px`` (of the pairs).

    Example
    -------
    >>> r = match_seeds([10, 50], [10, 50], [11, 90], [10, 90])
    >>> r["tp"], r["fp"], r["fn"], round(r["f1"], 2)
    (1, 1, 1, 0.5)
    """
    from scipy.optimize import linear_sum_assignment

    fx, fy = np.asarray(found_x, float).ravel(), np.asarray(found_y, float).ravel()
    tx, ty = np.asarray(true_x, float).ravel(), np.asarray(true_y, float).ravel()
    pairs: list[tuple[int, int]] = []
    dist: list[float] = []
    if fx.size and tx.size:
        d = np.hypot(fx[:, None] - tx[None], fy[:, None] - ty[None])
        big = 1e6
        cost = np.where(d <= tol_px, d, big)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            if d[r, c] <= tol_px:
                pairs.append((int(r), int(c)))
                dist.append(float(d[r, c]))
    tp = len(pairs)
    fp = int(fx.size - tp)
    fn = int(tx.size - tp)
    precision = tp / fx.size if fx.size else (1.0 if not tx.size else 0.0)
    recall = tp / tx.size if tx.size else 1.0
    f1 = 2 * tp / (fx.size + tx.size) if (fx.size + tx.size) else 1.0
    return dict(tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1, pairs=pairs,
                distance_px=np.array(dist))
