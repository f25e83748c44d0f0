"""Bounded-size history of a time series for live plots.

An hour of 10 Hz samples must draw as fast as the first minute, so a live
trace never holds more than a fixed number of points: samples go into
buckets, and when the buckets are full, neighbouring buckets merge (each
keeps its minimum and maximum, so spikes such as a current jump stay
visible). The drawn curve is the min/max envelope of the buckets.
"""
from __future__ import annotations

import numpy as np


class DecimatedTrace:
    """Min/max-bucketed history of ``y(t)`` with at most ``2 * capacity`` drawn points.

    Each bucket covers ``stride`` consecutive samples and stores the time of
    its first sample, its minimum and its maximum. When ``capacity`` buckets
    are filled, neighbouring pairs merge and ``stride`` doubles, so memory and
    drawing cost stay bounded however long the run lasts. Appending is O(1)
    amortised per sample.

    Parameters
    ----------
    capacity : int
        Maximum number of buckets (even, ≥ 4).

    Examples
    --------
    >>> tr = DecimatedTrace(capacity=4)
    >>> tr.extend([0, 1, 2, 3, 4, 5], [0, 5, 1, 1, 2, 9])
    >>> tr.stride
    2
    >>> tr.curve()[1].tolist()   # min, max of each bucket of 2 samples
    [0.0, 5.0, 1.0, 1.0, 2.0, 9.0]
    """

    def __init__(self, capacity: int = 2048):
        if capacity < 4 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 4, got {capacity!r}")
        self.capacity = int(capacity)
        self.stride = 1
        self._t = np.empty(capacity)
        self._lo = np.empty(capacity)
        self._hi = np.empty(capacity)
        self._n = 0          # buckets in use (the last one may be open)
        self._fill = 0       # samples in the open (last) bucket; 0 = no open bucket
        self.n_samples = 0

    def __len__(self) -> int:
        return self._n

    def clear(self) -> None:
        """Forget everything (stride back to 1)."""
        self.stride = 1
        self._n = 0
        self._fill = 0
        self.n_samples = 0

    def _merge(self) -> None:
        """Merge neighbouring buckets pairwise; the stride doubles."""
        n = self._n
        closed = n if self._fill == 0 else n - 1
        pairs = closed // 2
        t, lo, hi = self._t, self._lo, self._hi
        t[:pairs] = t[0:2 * pairs:2]
        lo[:pairs] = np.minimum(lo[0:2 * pairs:2], lo[1:2 * pairs:2])
        hi[:pairs] = np.maximum(hi[0:2 * pairs:2], hi[1:2 * pairs:2])
        m = pairs
        # an unpaired closed bucket and an open bucket become one open bucket
        rest = range(2 * pairs, n)
        if len(rest):
            i0 = rest[0]
            t[m] = t[i0]
            lo[m] = lo[i0:n].min()
            hi[m] = hi[i0:n].max()
            self._fill = (self._fill or self.stride) + (len(rest) - 1) * self.stride
            m += 1
        self._n = m
        self.stride *= 2
        if self._fill >= self.stride:
            self._fill = 0

    def append(self, t: float, y: float) -> None:
        """Add one sample (NaN values are skipped)."""
        self.extend((t,), (y,))

    def extend(self, t, y) -> None:
        """Add samples in time order (NaN values are skipped)."""
        t = np.asarray(t, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        ok = np.isfinite(y) & np.isfinite(t)
        if not ok.all():
            t, y = t[ok], y[ok]
        i = 0
        n_in = t.size
        while i < n_in:
            if self._fill:  # top up the open bucket
                k = min(self.stride - self._fill, n_in - i)
                j = self._n - 1
                self._lo[j] = min(self._lo[j], y[i:i + k].min())
                self._hi[j] = max(self._hi[j], y[i:i + k].max())
                self._fill += k
                if self._fill >= self.stride:
                    self._fill = 0
                i += k
                continue
            if self._n >= self.capacity:
                self._merge()
                continue
            # whole buckets of `stride` samples, vectorised, as many as fit
            room = self.capacity - self._n
            nb = min(room, (n_in - i) // self.stride)
            if nb:
                seg = y[i:i + nb * self.stride].reshape(nb, self.stride)
                sl = slice(self._n, self._n + nb)
                self._t[sl] = t[i:i + nb * self.stride:self.stride]
                self._lo[sl] = seg.min(axis=1)
                self._hi[sl] = seg.max(axis=1)
                self._n += nb
                i += nb * self.stride
                continue
            # fewer than `stride` samples left: open a new bucket
            k = n_in - i
            j = self._n
            self._t[j] = t[i]
            self._lo[j] = y[i:].min()
            self._hi[j] = y[i:].max()
            self._n += 1
            self._fill = k if k < self.stride else 0
            i = n_in
        self.n_samples += n_in

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Points to draw: ``(t, y)``; with stride 1 the samples themselves,
        otherwise each bucket's minimum then maximum at its start time."""
        n = self._n
        if self.stride == 1:
            return self._t[:n].copy(), self._lo[:n].copy()
        t = np.repeat(self._t[:n], 2)
        y = np.empty(2 * n)
        y[0::2] = self._lo[:n]
        y[1::2] = self._hi[:n]
        return t, y

    @property
    def last_time(self) -> float:
        """Start time of the newest bucket (NaN when empty)."""
        return float(self._t[self._n - 1]) if self._n else float("nan")
