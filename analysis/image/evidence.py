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

Memory: ``max(lags)`` differential images per scale; every frame costs the same. The per-pixel
work (clipping, the window sums, the signed maximum over lags) runs in two compiled passes
per scale (numba, cached on disk), the spreads in between on a 1-in-16 subsample.
"""
from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage as ndi

from insitu.analysis.image._pairwise import ROW_BLOCKS

__all__ = ["EvidenceAccumulator", "robust_sigma", "gaussian_smooth"]


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


@numba.njit(cache=True, nogil=True)
def _select(buf, n, k):
    """Reorder buf[:n] in place so that buf[k] is its k-th smallest, none before it larger and none
    after it smaller (quickselect, Hoare partition about a median of three)."""
    lo, hi = 0, n - 1
    while hi > lo:
        a, b, c = buf[lo], buf[(lo + hi) >> 1], buf[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                t = buf[i]
                buf[i] = buf[j]
                buf[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


@numba.njit(cache=True, nogil=True)
def _abs_median(a, mask, has_mask, buf):
    """Over a[::4, ::4] where ``mask`` (if ``has_mask``): the number of pixels, and the median of
    |v| over those that are not 0, as ``np.median(np.abs(v))`` computes it (float32: the middle
    value, or the float32 mean of the two middle ones); −1 if there are none. ``buf``: scratch
    (float32, at least the size of the subsample)."""
    ny, nx = a.shape
    n_in = 0
    n = 0
    for yy in range((ny + 3) // 4):
        for xx in range((nx + 3) // 4):
            if has_mask and not mask[yy, xx]:
                continue
            n_in += 1
            v = a[4 * yy, 4 * xx]
            if v != 0:
                buf[n] = abs(v)
                n += 1
    if n == 0:
        return n_in, np.float32(-1.0)
    k = n // 2
    _select(buf, n, k)
    hi = buf[k]
    if n % 2 == 1:
        return n_in, hi
    lo = buf[0]
    for t in range(1, k):
        if buf[t] > lo:
            lo = buf[t]
    return n_in, np.float32(np.float32(lo + hi) / np.float32(2.0))


@numba.njit(cache=True, nogil=True)
def _accumulate_rows(zs, prev, clipv, sums, ring, count, lags, y0, y1):
    """One frame into the window sums, in place (float32, the operations of numpy's clip and +=).

    Per pixel: zc = clip(zs, ±max(|prev|, clipv)); prev ← zs; sums[j] += zc − ring[count − lags[j]]
    (once ``count`` ≥ lags[j]); ring[count] ← zc (slots modulo the ring depth).
    """
    depth = ring.shape[0]
    slot = count % depth
    ny, nx = zs.shape
    zc = np.empty(nx, np.float32)
    for y in range(y0, y1):
        for x in range(nx):
            v = zs[y, x]
            lim = abs(prev[y, x])
            if lim < clipv:
                lim = clipv
            prev[y, x] = v
            zc[x] = min(max(v, -lim), lim)
        for j in range(lags.shape[0]):
            row = sums[j, y]
            if count >= lags[j]:
                old = ring[(count - lags[j]) % depth, y]
                for x in range(nx):
                    row[x] = (row[x] + zc[x]) - old[x]
            else:
                for x in range(nx):
                    row[x] = row[x] + zc[x]
        dst = ring[slot, y]
        for x in range(nx):
            dst[x] = zc[x]


@numba.njit(cache=True, nogil=True)
def _signed_max_rows(sums, inv_edge, inv_rest, edges, ref_var, frame_sd, lags, out, y0, y1):
    """out = the statistic sums[j]·inv[j] of largest magnitude over j (the positive one on a tie);
    inv is ``inv_edge[j]`` where ``edges`` is True, else ``inv_rest[j]``, and where ``ref_var`` > 0
    at most 1 / (frame_sd·√(L + L²·ref_var)) (L = lags[j]): the spread of a window sum of L frames
    against a reference that no longer follows them and whose own noise has variance ref_var."""
    ny, nx = out.shape
    pos = np.empty(nx, np.float32)
    neg = np.empty(nx, np.float32)
    for y in range(y0, y1):
        e = edges[y]
        rv = ref_var[y]
        for x in range(nx):
            pos[x] = -np.inf
            neg[x] = np.inf
        frozen = False
        for x in range(nx):
            if rv[x] > 0:
                frozen = True
                break
        for j in range(sums.shape[0]):
            row = sums[j, y]
            a = inv_edge[j]
            b = inv_rest[j]
            for x in range(nx):         # a loop the compiler vectorises
                t = row[x] * (a if e[x] else b)
                pos[x] = max(pos[x], t)
                neg[x] = min(neg[x], t)
        if frozen:
            # the (few) pixels where the reference has stopped following, again with that limit
            for x in range(nx):
                if rv[x] > 0:
                    p = np.float32(-np.inf)
                    q = np.float32(np.inf)
                    for j in range(sums.shape[0]):
                        L = np.float32(lags[j])
                        f = inv_edge[j] if e[x] else inv_rest[j]
                        g = np.float32(1.0) / (frame_sd * np.sqrt(L + L * L * rv[x]))
                        if g < f:
                            f = g
                        t = sums[j, y, x] * f
                        p = max(p, t)
                        q = min(q, t)
                    pos[x] = p
                    neg[x] = q
        o = out[y]
        for x in range(nx):
            o[x] = pos[x] if pos[x] >= -neg[x] else neg[x]


@numba.njit(cache=True, nogil=True)
def _largest_rows(per_scale, out, y0, y1):
    """out = per_scale[i] of largest magnitude over i (the first on a tie)."""
    for y in range(y0, y1):
        for x in range(out.shape[1]):
            best = per_scale[0, y, x]
            for i in range(1, per_scale.shape[0]):
                v = per_scale[i, y, x]
                if abs(v) > abs(best):
                    best = v
            out[y, x] = best


@numba.njit(cache=True, nogil=True)
def _gauss_axis0_rows(a, w, out, y0, y1):
    """out[y] = w_0 a[y] + Σ_j w_j (a[y−j] + a[y+j]) along axis 0 (zeros outside; sums in double,
    the farthest pair first, as ``scipy.ndimage.correlate1d`` does for a symmetric kernel)."""
    ny, nx = a.shape
    r = w.shape[0] - 1
    acc = np.empty(nx)
    for y in range(y0, y1):
        for x in range(nx):
            acc[x] = np.float64(a[y, x]) * w[0]
        for j in range(r, 0, -1):
            lo, hi = y - j, y + j
            if lo >= 0 and hi < ny:
                for x in range(nx):
                    acc[x] += (np.float64(a[lo, x]) + np.float64(a[hi, x])) * w[j]
            elif lo >= 0:
                for x in range(nx):
                    acc[x] += (np.float64(a[lo, x]) + 0.0) * w[j]
            elif hi < ny:
                for x in range(nx):
                    acc[x] += (0.0 + np.float64(a[hi, x])) * w[j]
            else:
                for x in range(nx):
                    acc[x] += 0.0 * w[j]
        for x in range(nx):
            out[y, x] = acc[x]


@numba.njit(cache=True, nogil=True)
def _gauss_axis1_rows(a, w, out, y0, y1):
    """The same along the rows (axis 1)."""
    ny, nx = a.shape
    r = w.shape[0] - 1
    line = np.zeros(nx + 2 * r)
    acc = np.empty(nx)
    for y in range(y0, y1):
        for x in range(nx):
            line[r + x] = a[y, x]
        for x in range(nx):
            acc[x] = line[r + x] * w[0]
        for j in range(r, 0, -1):
            wj = w[j]
            left = line[r - j:r - j + nx]
            right = line[r + j:r + j + nx]
            for x in range(nx):
                acc[x] += (left[x] + right[x]) * wj
        for x in range(nx):
            out[y, x] = acc[x]


@numba.njit(cache=True, nogil=True, parallel=True)
def _accumulate(zs, prev, clipv, sums, ring, count, lags):
    """:func:`_accumulate_rows` over all rows, blocks of rows in parallel."""
    ny = zs.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _accumulate_rows(zs, prev, clipv, sums, ring, count, lags, blk * ny // nb, (blk + 1) * ny // nb)


@numba.njit(cache=True, nogil=True, parallel=True)
def _signed_max(sums, inv_edge, inv_rest, edges, ref_var, frame_sd, lags, out):
    """:func:`_signed_max_rows` over all rows, blocks of rows in parallel."""
    ny = out.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _signed_max_rows(sums, inv_edge, inv_rest, edges, ref_var, frame_sd, lags, out,
                         blk * ny // nb, (blk + 1) * ny // nb)


@numba.njit(cache=True, nogil=True, parallel=True)
def _largest(per_scale, out):
    """:func:`_largest_rows` over all rows, blocks of rows in parallel."""
    ny = out.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _largest_rows(per_scale, out, blk * ny // nb, (blk + 1) * ny // nb)


@numba.njit(cache=True, nogil=True, parallel=True)
def _gauss_axis0(a, w, out):
    """:func:`_gauss_axis0_rows` over all rows, blocks of rows in parallel."""
    ny = out.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _gauss_axis0_rows(a, w, out, blk * ny // nb, (blk + 1) * ny // nb)


@numba.njit(cache=True, nogil=True, parallel=True)
def _gauss_axis1(a, w, out):
    """:func:`_gauss_axis1_rows` over all rows, blocks of rows in parallel."""
    ny = out.shape[0]
    nb = min(ROW_BLOCKS, ny)
    for blk in numba.prange(nb):
        _gauss_axis1_rows(a, w, out, blk * ny // nb, (blk + 1) * ny // nb)


def gaussian_smooth(a: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """Gaussian filter of a float32 image with zeros outside it (float32).

    The result of ``scipy.ndimage.gaussian_filter(a, sigma, mode="constant", truncate=truncate)``,
    bit for bit (the same weights, sums in double in the same order, axis 0 then axis 1), in
    about 40 % of its time.

    Example
    -------
    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> a = np.random.default_rng(0).normal(size=(32, 40)).astype(np.float32)
    >>> bool(np.array_equal(gaussian_smooth(a, 1.5), ndi.gaussian_filter(a, 1.5, mode="constant", truncate=3.0)))
    True
    """
    a = np.ascontiguousarray(a, np.float32)
    r = int(truncate * float(sigma) + 0.5)
    x = np.arange(-r, r + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    w = (phi / phi.sum())[r:].copy()
    tmp = np.empty(a.shape, np.float32)
    out = np.empty(a.shape, np.float32)
    _gauss_axis0(a, w, tmp)
    _gauss_axis1(tmp, w, out)
    return out


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
            yield gaussian_smooth(z, s) if s > 0 else z

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
            self.inv[(i, j)] = self._inv_pair(i, j, self.edge_spread[i, j])

    def _inv_pair(self, i: int, j: int, sde: float) -> tuple:
        """1/spread of statistic (i, j) near edges (the edge's own spread where it is larger) and elsewhere."""
        return np.float32(1.0 / max(sde, self.spread[i, j])), np.float32(1.0 / self.spread[i, j])

    def push(self, z: np.ndarray, exclude: np.ndarray | None = None,
             ref_var: np.ndarray | None = None) -> np.ndarray:
        """Add one differential image; return the evidence image (signed, σ).

        The evidence of each scale alone (signed, largest over the lags) is kept in
        :attr:`per_scale`. ``exclude`` (bool): pixels left out of the calibration (known changes,
        invalid border). ``ref_var`` (float, > 0 where the reference has stopped following: see
        :meth:`DifferentialImager.reference_variance`): there a window sum of L frames shares the
        reference's error, so its spread is at least frame spread · √(L + L²·ref_var), whatever
        the spread measured over the image (where the reference keeps following and its error
        shrinks); without this a young reference's error, once frozen, would pass for a change.
        """
        z = np.asarray(z, np.float32)
        sub = (slice(None, None, 4), slice(None, None, 4))
        keep = None if exclude is None else ~exclude[sub]
        if self.per_scale is None:
            self.per_scale = np.zeros((len(self.scales),) + self.shape, np.float32)
            self.prev = np.zeros((len(self.scales),) + self.shape, np.float32)
        lags = np.array(self.lags, np.int64)
        nl = len(self.lags)
        no_edges = np.zeros(self.shape, bool) if self.edges is None else None
        rv = np.zeros(self.shape, np.float32) if ref_var is None else np.asarray(ref_var, np.float32)
        # robust σ (1.4826 · median |v| of the non-zero values, see robust_sigma) on the 1-in-16
        # subsample, in one compiled pass each
        buf = np.empty(-(-self.shape[0] // 4) * -(-self.shape[1] // 4), np.float32)
        no_mask = np.zeros((1, 1), np.bool_)
        kp = no_mask if keep is None else np.ascontiguousarray(keep)

        def spread_of(a, mask, has_mask):
            n_in, med = _abs_median(a, mask, has_mask, buf)
            return n_in, (1.4826 * float(med) if med > 0 else 0.0)

        for i, zs in enumerate(self._filtered(z)):
            zs = np.ascontiguousarray(zs, np.float32)
            sd = spread_of(zs, kp, keep is not None)[1]
            if sd > 0:
                self.frame_spread[i] = sd
            # a one-frame artefact (a speck, a streak) must not stay in the sums for max(lags)
            # frames: a frame adds at most ± clip σ (of this scale) more than the previous frame
            # showed at that pixel, so only a change seen in two frames running adds in full
            _accumulate(zs, self.prev[i], np.float32(self.clip * self.frame_spread[i]), self.sums[i],
                        self.ring[i], self.count, lags)
            # the spreads change slowly: measured every frame at first, then every 4th
            measure = self.count < 16 or self.count % 4 == i % 4
            inv_edge = np.empty(nl, np.float32)
            inv_rest = np.empty(nl, np.float32)
            if measure and self.edges is not None:
                e = self.edges[i]
                em = np.ascontiguousarray(e[sub] if keep is None else (e[sub] & keep))
            for j in range(nl):
                if measure:
                    sd = spread_of(self.sums[i, j], kp, keep is not None)[1]
                    if sd > 0:
                        self.spread[i, j] = sd
                if measure and self.edges is not None:
                    n_e, sde = spread_of(self.sums[i, j], em, True)
                    sde = sde if n_e >= 50 else 0.0
                    self.edge_spread[i, j] = sde
                    self.inv[(i, j)] = self._inv_pair(i, j, sde)
                if self.edges is not None and (i, j) in self.inv:
                    inv_edge[j], inv_rest[j] = self.inv[(i, j)]
                else:
                    inv_edge[j] = inv_rest[j] = np.float32(1.0 / self.spread[i, j])
            _signed_max(self.sums[i], inv_edge, inv_rest, no_edges if self.edges is None else self.edges[i],
                        rv, np.float32(self.frame_spread[i]), lags, self.per_scale[i])
        self.count += 1
        best = np.empty(self.shape, np.float32)
        _largest(self.per_scale, best)
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
