"""Evidence of a persistent local change that accumulates over frames and scales.

The differential images ``z`` (σ units, against a reference fixed before the change) are
filtered at a few spatial scales (a Gaussian matched filter for blobs of 1–6 px) and summed
over the last L frames for a few lags L (a windowed GLRT for a change that starts at an
unknown frame and then persists): for a change of constant size μ σ per frame that began
L frames ago, the window sum grows as μ·L while its noise grows as √L. Every (scale, lag)
statistic is divided by its own spread, measured over the image in every frame (robust:
median absolute value), so all are in calibrated σ whatever the spatial and temporal
correlation of the noise (smoothing, the reference's own noise). The evidence image is
the signed statistic of largest magnitude.

Memory: ``max(lags)`` differential images per scale; every frame costs the same.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["EvidenceAccumulator", "robust_sigma"]


def robust_sigma(x: np.ndarray) -> float:
    """σ of zero-mean noise from the median absolute value (outliers hardly count).

    Example
    -------
    >>> import numpy as np
    >>> round(robust_sigma(np.random.default_rng(0).normal(0, 2, 100000)), 1)
    2.0
    """
    x = np.asarray(x).ravel()
    return 1.4826 * float(np.median(np.abs(x))) if x.size else 0.0


class EvidenceAccumulator:
    """Multi-scale, multi-lag evidence of change, in calibrated σ.

    Parameters
    ----------
    shape : (ny, nx) of the differential images.
    scales : extra Gaussian smoothing (px of the images) per scale; 0 keeps the image as it is.
    lags : window lengths (frames) of the sums.
    clip : a frame adds at most ± max(clip σ, |previous frame|) per pixel to the sums, so a
        one-frame artefact cannot pass a threshold above ``clip`` σ, nor carry over.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ev = EvidenceAccumulator((64, 64))
    >>> for k in range(8):
    ...     z = rng.normal(0, 1, (64, 64)).astype(np.float32)
    ...     if k >= 4:
    ...         z[30:34, 30:34] += 1.5      # a weak change: 1.5 σ a frame
    ...     t = ev.push(z)
    >>> bool(t[31, 31] > 6) and bool(np.abs(t[:20, :20]).max() < 6)
    True
    """

    def __init__(self, shape, scales=(0.0, 1.4, 3.0), lags=(1, 2, 4, 8), clip: float = 4.0):
        self.shape = tuple(int(s) for s in shape)
        self.scales = tuple(float(s) for s in scales)
        self.lags = tuple(int(v) for v in lags)
        self.depth = max(self.lags)
        ns, nl = len(self.scales), len(self.lags)
        self.ring = np.zeros((ns, self.depth) + self.shape, np.float32)
        self.sums = np.zeros((ns, nl) + self.shape, np.float32)
        self.spread = np.ones((ns, nl))
        self.edge_spread = np.zeros((ns, nl))
        self.inv: dict = {}
        self.frame_spread = np.ones(ns)
        self.clip = float(clip)
        #: level (σ of a scale) a frame must show to count as part of a change when dating its onset
        self.onset_sigma = 2.5
        #: evidence of each scale alone (signed, σ), after :meth:`push`
        self.per_scale: np.ndarray | None = None
        #: per scale, pixels near steep edges (see :meth:`set_edges`), or None
        self.edges: list | None = None
        self.prev: np.ndarray | None = None
        self.count = 0

    def _filtered(self, z: np.ndarray):
        for s in self.scales:
            yield ndi.gaussian_filter(z, s, mode="constant", truncate=3.0) if s > 0 else z

    def set_edges(self, g2: np.ndarray, fraction: float = 0.04) -> None:
        """Mark the pixels near steep edges (``g2``: squared gradient of the reference), per scale.

        What registration leaves at an edge is the same all along it, so a filter of a larger
        scale adds it up coherently: near edges each statistic gets its own spread (measured
        there), apart from that of the rest of the image.
        """
        cut = np.percentile(g2, 100 * (1 - fraction))
        steep = g2 > cut
        self.edges = [ndi.binary_dilation(steep, iterations=max(1, int(np.ceil(2 * sc)))) if sc > 0 else steep
                      for sc in self.scales]
        for i, j in list(self.inv):
            self.inv[(i, j)] = np.where(self.edges[i], np.float32(1.0 / max(self.edge_spread[i, j], self.spread[i, j])),
                                        np.float32(1.0 / self.spread[i, j]))

    def push(self, z: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """Add one differential image; return the evidence image (signed, σ).

        The evidence of each scale alone (signed, largest over the lags) is kept in
        :attr:`per_scale`. ``exclude`` (bool): pixels left out of the calibration (known changes,
        invalid border).
        """
        z = np.asarray(z, np.float32)
        slot = self.count % self.depth
        sub = (slice(None, None, 4), slice(None, None, 4))
        keep = None if exclude is None else ~exclude[sub]
        if self.per_scale is None:
            self.per_scale = np.zeros((len(self.scales),) + self.shape, np.float32)
            self.prev = np.zeros((len(self.scales),) + self.shape, np.float32)
        for i, zs in enumerate(self._filtered(z)):
            v = zs[sub]
            v = v[keep] if keep is not None else v
            sd = robust_sigma(v[v != 0]) if v.size else 0.0
            if sd > 0:
                self.frame_spread[i] = sd
            # a one-frame artefact (a speck, a streak) must not stay in the sums for max(lags)
            # frames: a frame adds at most ± clip σ (of this scale) more than the previous frame
            # showed at that pixel, so only a change seen in two frames running adds in full
            prev = self.prev[i]
            lim = np.abs(prev)
            np.maximum(lim, np.float32(self.clip * self.frame_spread[i]), out=lim)
            prev[...] = zs
            zc = np.clip(zs, -lim, lim)
            ring = self.ring[i]
            pos = np.full(self.shape, -np.inf, np.float32)
            neg = np.full(self.shape, np.inf, np.float32)
            for j, lag in enumerate(self.lags):
                s = self.sums[i, j]
                s += zc
                if self.count >= lag:
                    s -= ring[(self.count - lag) % self.depth]
                # the spreads change slowly: measured every frame at first, then every 4th
                measure = self.count < 16 or self.count % 4 == i % 4
                v = s[sub]
                if measure:
                    vk = v[keep] if keep is not None else v
                    sd = robust_sigma(vk[vk != 0]) if vk.size else 0.0
                    if sd > 0:
                        self.spread[i, j] = sd
                if measure and self.edges is not None:
                    e = self.edges[i]
                    ve = v[e[sub] if keep is None else (e[sub] & keep)]
                    sde = robust_sigma(ve[ve != 0]) if ve.size >= 50 else 0.0
                    self.edge_spread[i, j] = sde
                    # 1/spread per pixel: the edge's own spread near edges where it is larger
                    self.inv[(i, j)] = np.where(e, np.float32(1.0 / max(sde, self.spread[i, j])),
                                                np.float32(1.0 / self.spread[i, j]))
                if self.edges is not None and (i, j) in self.inv:
                    t = s * self.inv[(i, j)]
                else:
                    t = s * np.float32(1.0 / self.spread[i, j])
                np.maximum(pos, t, out=pos)
                np.minimum(neg, t, out=neg)
            ring[slot] = zc
            np.copyto(self.per_scale[i], np.where(pos >= -neg, pos, neg))
        self.count += 1
        best = self.per_scale[0].copy()
        for ps in self.per_scale[1:]:
            np.copyto(best, ps, where=np.abs(ps) > np.abs(best))
        return best

    def onset(self, y: int, x: int, sign: int) -> int:
        """Frames back from the newest (0 = newest) at which the change at pixel (y, x) began.

        The change point that maximises the window sum / √length of the sign-corrected
        differential, taken at the scale where it is largest (within the stored ``max(lags)`` frames).
        """
        n = min(self.count, self.depth)
        if n == 0:
            return 0
        idx = [(self.count - 1 - b) % self.depth for b in range(n)]     # newest first
        best, back, scale = -np.inf, 0, 0
        for i in range(len(self.scales)):
            v = sign * self.ring[i, idx, y, x].astype(np.float64)
            stat = np.cumsum(v) / np.sqrt(np.arange(1, n + 1))
            b = int(np.argmax(stat))
            if stat[b] > best:
                best, back, scale = stat[b], b, i
        # the first frame of a change adds at most ``clip`` σ (see :meth:`push`), which can make the
        # change point one frame late: go back over frames that already show the change clearly
        v = sign * self.ring[scale, idx, y, x]
        while back + 1 < n and v[back + 1] > self.onset_sigma * self.frame_spread[scale]:
            back += 1
        return back
