"""Filament-seed detection in differential images, persistence check and tracking.

A *candidate* is a connected region of a differential image (σ units) whose
peak passes ``threshold`` σ; its extent, area and centroid are taken at the
lower ``low`` σ level (hysteresis). A *track* collects the candidates of one
sign that fall within ``gate_px`` (plus the seed's radius) of it. A track becomes
a *seed* once it has been seen in ``persistence`` frames with at most
``max_gap`` missed frames between hits, so a one-frame artefact never becomes a
seed. Seeds are kept for good and keep collecting their growth.

Coordinates are those of the first frame (x = column, y = row, pixel centres at
integers); ``sign`` is +1 for brighter, −1 for darker.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import ndimage as ndi

__all__ = ["Candidate", "find_candidates", "split_blob", "Seed", "SeedTracker", "SEED_COLUMNS", "match_seeds"]

#: Binding column order of seeds.csv.
SEED_COLUMNS = ("id", "first_frame", "first_time_s", "x_px", "y_px", "sign", "area_px", "peak_snr",
                "last_frame")


@dataclass(frozen=True)
class Candidate:
    """One blob in one differential image."""

    x: float       # px, column
    y: float       # px, row
    sign: int      # +1 brighter, -1 darker
    peak: float    # |z| at the peak (σ)
    area: int      # px above the low threshold
    onset: int | None = None          # frame at which the change began (estimated), if known
    onset_time_s: float | None = None


@numba.njit(cache=True, nogil=True)
def _blob_moments(z, low, threshold, max_blobs):
    """Blobs of |z| > ``low`` (4-connected) that hold a pixel with |z| > ``threshold``, found by a
    flood fill from those pixels (only the blobs' own pixels are visited, not a labelled image).

    Per blob, in the order of the blob's first pixel in row-major order (as ``ndimage.label``
    numbers them): area, Σw, Σw·x, Σw·y, Σz, peak |z| (over |z| > threshold) and the central
    second moments Σw·dx², Σw·dy², Σw·dx·dy (w = |z| − low in the precision of ``z``; sums in
    float64 over the blob's pixels in row-major order, as ``np.bincount`` over a labelled image),
    and its bounding box ``box[b] = (row min, row max, col min, col max)`` (inclusive).
    Returns ``n`` = the number of blobs, or −1 (and nothing) if there are more than ``max_blobs``.
    """
    ny, nx = z.shape
    visited = np.zeros((ny, nx), np.bool_)
    pix = np.empty(ny * nx, np.int64)
    m = max_blobs + 1
    first = np.zeros(m, np.int64)
    area = np.zeros(m, np.int64)
    sw = np.zeros(m)
    sx = np.zeros(m)
    sy = np.zeros(m)
    ssign = np.zeros(m)
    peak = np.zeros(m)
    vxx = np.zeros(m)
    vyy = np.zeros(m)
    vxy = np.zeros(m)
    box = np.zeros((m, 4), np.int64)
    lo = low
    nb = 0
    for y0 in range(ny):
        for x0 in range(nx):
            a0 = abs(z[y0, x0])
            if not (a0 > threshold and a0 > lo) or visited[y0, x0]:
                continue
            if nb == max_blobs:
                return -1, first, area, sw, sx, sy, ssign, peak, vxx, vyy, vxy, box
            visited[y0, x0] = True
            pix[0] = y0 * nx + x0
            n = 1
            head = 0
            while head < n:
                p = pix[head]
                head += 1
                py = p // nx
                px = p - py * nx
                for q in range(4):
                    qy, qx = py, px
                    if q == 0:
                        qy = py - 1
                    elif q == 1:
                        qy = py + 1
                    elif q == 2:
                        qx = px - 1
                    else:
                        qx = px + 1
                    if qy < 0 or qy >= ny or qx < 0 or qx >= nx or visited[qy, qx]:
                        continue
                    if abs(z[qy, qx]) > lo:
                        visited[qy, qx] = True
                        pix[n] = qy * nx + qx
                        n += 1
            blob = np.sort(pix[:n])
            first[nb] = blob[0]
            box[nb, 0] = ny
            box[nb, 2] = nx
            for t in range(n):
                y = blob[t] // nx
                x = blob[t] - y * nx
                box[nb, 0] = min(box[nb, 0], y)
                box[nb, 1] = max(box[nb, 1], y)
                box[nb, 2] = min(box[nb, 2], x)
                box[nb, 3] = max(box[nb, 3], x)
                zv = z[y, x]
                a = abs(zv)
                w = np.float64(a - lo)
                area[nb] += 1
                sw[nb] += w
                sx[nb] += w * x
                sy[nb] += w * y
                ssign[nb] += np.float64(zv)
                if a > threshold and a > peak[nb]:
                    peak[nb] = a
            mx = sx[nb] / max(sw[nb], 1e-30)
            my = sy[nb] / max(sw[nb], 1e-30)
            for t in range(n):
                y = blob[t] // nx
                x = blob[t] - y * nx
                w = np.float64(abs(z[y, x]) - lo)
                dx = x - mx
                dy = y - my
                vxx[nb] += w * dx * dx
                vyy[nb] += w * dy * dy
                vxy[nb] += w * dx * dy
            nb += 1
    return nb, first, area, sw, sx, sy, ssign, peak, vxx, vyy, vxy, box


def find_candidates(z: np.ndarray, threshold: float = 4.5, low: float = 2.5,
                    region: tuple[slice, slice] | None = None, max_candidates: int = 500,
                    min_roundness: float = 0.0, split_prominence: float = 0.0,
                    split_distance: float = 4.0) -> list[Candidate]:
    """Blobs of either sign in a differential image.

    A blob is a connected region where |z| > ``low`` that contains at least one pixel with
    |z| > ``threshold`` (hysteresis); its area, centroid (weights |z| − low) and peak are measured
    on that region. A region cannot hold both signs (z must cross 0 between them).

    Parameters
    ----------
    z : differential image in σ units.
    threshold : a blob's peak must reach this |z|.
    low : the blob's extent (area, centroid) is taken at this |z|.
    region : (rows, cols) slices to search (default: whole image).
    max_candidates : keep only the strongest (protects against a frame that is all change).
    min_roundness : drop blobs whose principal second moments (weights |z| − low) have a ratio
        below this: changes along a line (an edge, an interface) rather than a seed. 0: keep all.
    split_prominence : if > 0, a blob with several peaks above ``threshold``, at least
        ``split_distance`` px apart and each standing at least this many σ above the saddle that
        joins it to a higher peak, is split (:func:`split_blob`): touching seeds, e.g. a young seed
        beside an older, grown one. 0: never split.
    split_distance : least distance (px) between the peaks of a split blob.

    Returns
    -------
    list of Candidate, strongest first.

    Example
    -------
    >>> import numpy as np
    >>> z = np.zeros((40, 40)); z[10:13, 20:23] = 6; z[30, 5] = -7
    >>> [(c.x, c.y, c.sign) for c in find_candidates(z)]
    [(5.0, 30.0, -1), (21.0, 11.0, 1)]
    """
    z = np.asarray(z)
    if region is None:
        region = (slice(0, z.shape[0]), slice(0, z.shape[1]))
    oy, ox = region[0].start or 0, region[1].start or 0
    zr = z[region]
    if not np.issubdtype(zr.dtype, np.floating):
        zr = zr.astype(np.float64)
    t = zr.dtype.type   # numpy compares and subtracts a Python float in the array's precision
    nb, first, area, sw, sx, sy, ssign, peaks, vxx, vyy, vxy, boxes = _blob_moments(zr, t(low), t(threshold),
                                                                                    20 * max_candidates)
    if nb < 0:
        return []  # the whole frame changed (beam blank, jump): nothing local to report
    if nb == 0:
        return []
    sel = np.argsort(first[:nb], kind="stable")    # in the order of ndimage.label's numbering
    peak = peaks[sel]
    parts: list[Candidate] = []
    if split_prominence > 0:
        whole = np.ones(len(sel), bool)
        r = max(1, int(split_distance // 2))
        az = np.abs(zr)
        gy, gx = _local_maxima(az, az > threshold, r)     # once for the frame (sparse: pixels > threshold)
        for q, l in enumerate(sel):
            if area[l] < 8:
                continue
            b = boxes[l]
            inside = (gy >= b[0]) & (gy <= b[1]) & (gx >= b[2]) & (gx <= b[3])
            if np.count_nonzero(inside) < 2:
                continue
            yl, xl = gy[inside], gx[inside]
            if np.hypot(yl.max() - yl.min(), xl.max() - xl.min()) < split_distance:
                continue   # one local maximum in its box, or all of them closer than split_distance
            got = _split_one(zr, boxes[l], int(first[l]), low, threshold, split_prominence, split_distance, r)
            if got:
                whole[q] = False
                parts += [Candidate(x=c.x + ox, y=c.y + oy, sign=c.sign, peak=c.peak, area=c.area)
                          for c, rnd in got if rnd >= min_roundness]
        sel, peak = sel[whole], peak[whole]
        vxx, vyy, vxy = vxx[sel], vyy[sel], vxy[sel]
        sel_moments = True
    else:
        sel_moments = False
    if min_roundness > 0:
        # a seed is round; a change along a line (an edge, an interface changing along its length)
        # is not: ratio of the principal second moments of the blob (weights |z| − low)
        if not sel_moments:
            vxx, vyy, vxy = vxx[sel], vyy[sel], vxy[sel]
        half = 0.5 * (vxx + vyy)
        disc = np.sqrt(np.maximum(0.0, half * half - (vxx * vyy - vxy * vxy)))
        round_ok = (half - disc) >= min_roundness * (half + disc)
        sel, peak = sel[round_ok], peak[round_ok]
    out = [Candidate(x=float(sx[i] / sw[i]) + ox, y=float(sy[i] / sw[i]) + oy, sign=1 if ssign[i] > 0 else -1,
                     peak=float(p), area=int(area[i])) for i, p in zip(sel, np.atleast_1d(peak))] + parts
    out.sort(key=lambda c: -c.peak)
    return out[:max_candidates]


def _split_one(z, box, first, low, threshold, prominence, distance, r) -> list:
    """:func:`split_blob` on the blob of ``z`` with bounding box ``box`` (row min, row max, col min,
    col max) and first pixel ``first`` (row-major index): labelled in its box widened by ``r`` (the
    reach of the local-maximum test, so that it compares the same pixels as on the whole image);
    only blobs with local maxima above ``threshold`` at least ``distance`` apart are tried. Parts
    in the coordinates of ``z``."""
    ny, nx = z.shape
    y0, x0 = max(0, int(box[0]) - r), max(0, int(box[2]) - r)
    y1, x1 = min(ny, int(box[1]) + r + 1), min(nx, int(box[3]) + r + 1)
    zb = z[y0:y1, x0:x1]
    az = np.abs(zb)
    lab, _ = ndi.label(az > low)
    fy, fx = divmod(first, nx)
    label = lab[fy - y0, fx - x0]
    ly, lx = _local_maxima(az, (lab == label) & (az > threshold), r)
    if len(ly) < 2 or np.hypot(ly.max() - ly.min(), lx.max() - lx.min()) < distance:
        return []
    got = split_blob(zb, lab, label, (slice(0, y1 - y0), slice(0, x1 - x0)), threshold, prominence, distance,
                     peaks=(ly, lx))
    return [(Candidate(x=c.x + x0, y=c.y + y0, sign=c.sign, peak=c.peak, area=c.area), rnd) for c, rnd in got]


def _local_maxima(a: np.ndarray, where: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels of ``where`` that are the maximum of ``a`` over the
    (2r+1)² square around them (compared at those pixels only: ``where`` is sparse; neighbours
    beyond the edge are the edge pixels), in row-major order."""
    ys, xs, n = _local_maxima_kernel(a, np.ascontiguousarray(where), int(r))
    return ys[:n], xs[:n]


@numba.njit(cache=True, nogil=True)
def _local_maxima_kernel(a, where, r):
    """The pixels of :func:`_local_maxima` (one compiled pass; it was 24 gathers over the pixels of
    ``where`` in numpy): their rows, columns and count."""
    ny, nx = a.shape
    n_where = 0
    for y in range(ny):
        for x in range(nx):
            if where[y, x]:
                n_where += 1
    ys = np.empty(n_where, np.int64)
    xs = np.empty(n_where, np.int64)
    n = 0
    for y in range(ny):
        for x in range(nx):
            if not where[y, x]:
                continue
            v = a[y, x]
            keep = True
            for dy in range(-r, r + 1):
                yy = min(max(y + dy, 0), ny - 1)
                for dx in range(-r, r + 1):
                    if dy == 0 and dx == 0:
                        continue
                    xx = min(max(x + dx, 0), nx - 1)
                    if not a[yy, xx] <= v:     # as numpy's `<=` (a NaN neighbour rejects)
                        keep = False
                        break
                if not keep:
                    break
            if keep:
                ys[n] = y
                xs[n] = x
                n += 1
    return ys, xs, n


def split_blob(z: np.ndarray, lab: np.ndarray, label: int, box: tuple[slice, slice], threshold: float,
               prominence: float, distance: float, rel_prominence: float = 0.25, peaks=None) -> list:
    """Split one blob of a differential image at its separate peaks (touching seeds).

    The peaks are the local maxima of |z| (over a disc of radius ``distance``/2) above
    ``threshold`` within the blob, strongest first. A peak is kept if it lies at least
    ``distance`` px from every kept peak and stands at least ``prominence`` σ, and
    ``rel_prominence`` of its own height, above the saddle joining it to each of them (the lowest
    |z| on the straight segment between the two; the relative part keeps the noise on the flat top
    of a strong, grown seed from splitting it). Each
    kept peak gives one part: the pixels of the blob connected to it above its highest saddle,
    measured like a blob (centroid with weights |z| − saddle, area, peak, sign).

    Parameters
    ----------
    z : differential image (σ), the array the labels were made on.
    lab : labels of the blobs (``scipy.ndimage.label``); ``label`` is the blob to split.
    box : the blob's bounding box (``scipy.ndimage.find_objects``).
    threshold : least |z| of a peak (σ).
    prominence : least height (σ) of a peak above its saddle.
    distance : least distance between peaks (px).
    rel_prominence : least height of a peak above its saddle, as a fraction of the peak's |z|.
    peaks : (rows, cols) within ``box`` of the blob's local maxima above ``threshold``, if known
        (else found here: maxima over a disc of radius ``distance``/2).

    Returns
    -------
    list of (Candidate, roundness) in the coordinates of ``z``, empty when the blob has one peak
    only; roundness is the ratio of the part's principal second moments (as in :func:`find_candidates`).

    Example
    -------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:40, 0:40]
    >>> z = 10 * np.exp(-((xx - 15) ** 2 + (yy - 20) ** 2) / 8) + 8 * np.exp(-((xx - 22) ** 2 + (yy - 20) ** 2) / 8)
    >>> lab, n = ndi.label(z > 2.5)
    >>> [(round(c.x), round(c.y)) for c, _ in split_blob(z, lab, 1, ndi.find_objects(lab)[0], 6, 3, 4)]
    [(15, 20), (22, 20)]
    """
    ys, xs = box
    zb = np.abs(z[ys, xs]).astype(np.float64)
    inb = lab[ys, xs] == label
    zb = np.where(inb, zb, 0.0)
    if peaks is None:
        r = max(1, int(distance // 2))
        dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
        foot = dy * dy + dx * dx <= r * r
        py, px = np.nonzero((zb >= ndi.maximum_filter(zb, footprint=foot, mode="constant")) & (zb > threshold))
    else:
        py, px = (np.asarray(v, int) for v in peaks)
    if len(py) < 2:
        return []
    order = np.argsort(-zb[py, px], kind="stable")
    kept: list[tuple[int, int]] = []
    saddle: list[float] = []
    for i in order:
        y, x = int(py[i]), int(px[i])
        ok, s_max = True, -np.inf
        for (ky, kx) in kept:
            if np.hypot(y - ky, x - kx) < distance:
                ok = False
                break
            m = int(np.ceil(2 * np.hypot(y - ky, x - kx)))
            t = np.linspace(0.0, 1.0, m + 1)
            s = float(zb[np.rint(y + t * (ky - y)).astype(int), np.rint(x + t * (kx - x)).astype(int)].min())
            if zb[y, x] - s < max(prominence, rel_prominence * zb[y, x]):
                ok = False
                break
            s_max = max(s_max, s)
        if ok:
            kept.append((y, x))
            saddle.append(s_max)
    if len(kept) < 2:
        return []
    # the first (highest) peak is split off at the highest saddle of the others to it
    saddle[0] = max(saddle[1:])
    # the straight segment may miss a higher pass between two peaks: a part that holds another
    # kept peak is not separate from it (the lower of the two is dropped)
    parts = []
    for (y, x), s in zip(kept, saddle):
        part, _ = ndi.label(zb > s)
        parts.append(part == part[y, x])
    ok = [True] * len(kept)
    for i, (y, x) in enumerate(kept):
        for k in range(i):
            if ok[k] and (parts[k][y, x] or parts[i][kept[k]]):
                ok[i] = False
    if sum(ok) < 2:
        return []
    out = []
    sgn = np.sign(z[ys, xs])
    for (y, x), s, part, good in zip(kept, saddle, parts, ok):
        if not good:
            continue
        w = zb[part] - s
        yy, xx = np.nonzero(part)
        sw = w.sum()
        cy, cx = float((w * yy).sum() / sw), float((w * xx).sum() / sw)
        vyy = float((w * (yy - cy) ** 2).sum() / sw)
        vxx = float((w * (xx - cx) ** 2).sum() / sw)
        vxy = float((w * (yy - cy) * (xx - cx)).sum() / sw)
        half = 0.5 * (vxx + vyy)
        disc = np.sqrt(max(0.0, half * half - (vxx * vyy - vxy * vxy)))
        c = Candidate(x=cx + (xs.start or 0), y=cy + (ys.start or 0), sign=int(sgn[y, x]) or 1,
                      peak=float(zb[y, x]), area=int(part.sum()))
        out.append((c, (half - disc) / max(half + disc, 1e-30)))
    return out


@dataclass
class Seed:
    """A track of candidates; a seed once ``confirmed``."""

    id: int
    sign: int
    first_frame: int
    first_time_s: float
    last_frame: int
    hits: list = field(default_factory=list)   # (frame, x, y, peak, area)
    confirmed_frame: int | None = None
    _sx: float = 0.0
    _sy: float = 0.0
    _sw: float = 0.0

    @property
    def x_px(self) -> float:
        return self._sx / self._sw

    @property
    def y_px(self) -> float:
        return self._sy / self._sw

    _peak: float = 0.0
    _area: int = 0
    #: hits that set the position (peak-weighted mean)
    position_hits: int = 6

    @property
    def peak_snr(self) -> float:
        return self._peak

    @property
    def area_px(self) -> int:
        return self._area

    @property
    def radius_px(self) -> float:
        return float(np.sqrt(self._area / np.pi))

    def add(self, frame: int, c: Candidate) -> None:
        self._peak = max(self._peak, c.peak)
        self._area = max(self._area, c.area)
        if not self.hits or self.hits[-1][0] != frame:
            self.hits.append((frame, c.x, c.y, c.peak, c.area))
        elif c.peak > self.hits[-1][3]:  # a second blob of the same seed in one frame: keep the stronger
            self.hits[-1] = (frame, self.hits[-1][1], self.hits[-1][2], c.peak, max(c.area, self.hits[-1][4]))
        self.last_frame = frame
        if len(self.hits) > self.position_hits:
            return   # the position is that of the first hits: later a grown seed may touch a neighbour
        w = c.peak
        self._sx += w * c.x
        self._sy += w * c.y
        self._sw += w

    def n_frames_seen(self) -> int:
        return len(self.hits)

    def row(self) -> dict:
        return dict(id=self.id, first_frame=self.first_frame, first_time_s=self.first_time_s,
                    x_px=self.x_px, y_px=self.y_px, sign=self.sign, area_px=self.area_px,
                    peak_snr=self.peak_snr, last_frame=self.last_frame)


class SeedTracker:
    """Associate candidates over frames; confirm seeds by persistence.

    Parameters
    ----------
    gate_px : a candidate joins a track within gate_px (px), a confirmed seed within gate_px + its radius.
    persistence : number of frames a track must be seen in to become a seed.
    max_gap : missed frames allowed between hits of a track that is not yet a seed.

    Example
    -------
    >>> t = SeedTracker(persistence=2)
    >>> _ = t.update(0, 0.0, [Candidate(10, 10, 1, 6.0, 9)])
    >>> t.update(1, 1.0, [Candidate(10.5, 10, 1, 7.0, 12)])[0].id
    1
    >>> t.update(2, 2.0, [Candidate(30, 30, -1, 9.0, 5)])   # a one-frame artefact
    []
    """

    def __init__(self, gate_px: float = 4.0, persistence: int = 2, max_gap: int = 1):
        self.gate_px = float(gate_px)
        self.persistence = int(persistence)
        self.max_gap = int(max_gap)
        self.tentative: list[Seed] = []
        self.seeds: list[Seed] = []
        self._next_id = 1
        self._tentative_id = -1

    def update(self, frame: int, time_s: float, candidates: list[Candidate]) -> list[Seed]:
        """Add one frame's candidates; return the seeds confirmed in this frame."""
        tracks = self.seeds + self.tentative
        best_idx = np.full(len(candidates), -1)
        if tracks and candidates:
            tx = np.array([s.x_px for s in tracks])
            ty = np.array([s.y_px for s in tracks])
            ts = np.array([s.sign for s in tracks])
            # a confirmed seed grows: its gate grows with it; a tentative track keeps the plain gate
            tg = np.array([self.gate_px + s.radius_px for s in tracks])
            cx = np.array([c.x for c in candidates])
            cy = np.array([c.y for c in candidates])
            cs = np.array([c.sign for c in candidates])
            d = np.hypot(cx[:, None] - tx[None, :], cy[:, None] - ty[None, :])
            d[(cs[:, None] != ts[None, :]) | (d > tg[None, :])] = np.inf
            j = np.argmin(d, axis=1)
            dj = d[np.arange(len(candidates)), j]
            best_idx = np.where(np.isfinite(dj), j, -1)
            # two candidates on one track (a blob split at its peaks: a young seed beside a grown
            # one): the nearest continues the track, one farther than gate_px starts its own
            for t in np.unique(best_idx[best_idx >= 0]):
                on = np.flatnonzero(best_idx == t)
                if len(on) > 1:
                    far = on[(on != on[np.argmin(dj[on])]) & (dj[on] > self.gate_px)]
                    best_idx[far] = -1
        shrinking = self._next_to_opposite_seed(candidates)
        union = self._holds_confirmed_seeds(candidates)
        for c, j, near, merged in zip(candidates, best_idx, shrinking, union):
            if j < 0 and near:
                continue  # a confirmed seed losing material (reverse bias), not a new seed
            if j < 0 and merged:
                continue  # grown seeds that have run together: their union, centred between them
            if j < 0:
                on = frame if c.onset is None else min(frame, int(c.onset))
                t_on = float(time_s) if c.onset is None or c.onset_time_s is None else float(c.onset_time_s)
                s = Seed(id=self._tentative_id, sign=c.sign, first_frame=on, first_time_s=t_on,
                         last_frame=frame)
                self._tentative_id -= 1
                s.add(frame, c)
                self.tentative.append(s)
            else:
                tracks[j].add(frame, c)
        confirmed = []
        keep = []
        for s in self.tentative:
            if s.n_frames_seen() >= self.persistence:
                s.id = self._next_id
                self._next_id += 1
                s.confirmed_frame = frame
                self.seeds.append(s)
                confirmed.append(s)
            elif frame - s.last_frame <= self.max_gap:
                keep.append(s)
        self.tentative = keep
        return confirmed

    def _next_to_opposite_seed(self, candidates: list[Candidate]) -> np.ndarray:
        """For each candidate: does it lie within ``gate_px`` of a confirmed seed of the opposite sign?

        When a seed shrinks (Na stripped under reverse bias) the differential image shows
        the opposite contrast where it was; that is the same seed changing, not a new one. Only
        near the seed's centre: a seed of the other sign may grow beside a grown one.
        """
        if not self.seeds or not candidates:
            return np.zeros(len(candidates), bool)
        d, same = self._to_confirmed(candidates)
        return ((d <= self.gate_px) & ~same).any(axis=1)

    def _to_confirmed(self, candidates: list[Candidate]) -> tuple[np.ndarray, np.ndarray]:
        """Distances (px) of the candidates (rows) to the confirmed seeds (columns), and whether
        each pair has the same sign."""
        sx, sy, ss = (np.array(v, float) for v in zip(*[(s.x_px, s.y_px, s.sign) for s in self.seeds]))
        cx, cy, cs = (np.array(v, float) for v in zip(*[(c.x, c.y, c.sign) for c in candidates]))
        return np.hypot(cx[:, None] - sx[None, :], cy[:, None] - sy[None, :]), cs[:, None] == ss[None, :]

    def _holds_confirmed_seeds(self, candidates: list[Candidate]) -> np.ndarray:
        """For each candidate: does a confirmed seed of its sign lie within the candidate's own
        radius (that of a disc of its area) from its centre?

        Seeds that grow side by side (interface seeds along an electrode) run together into one
        blob whose centroid lies between them, farther from each than its gate: that blob is
        their union, not a new seed (the virtual specimen's demo session, seed 0: one such blob
        of 2859 px over five seeds was reported as a ninth seed). A young seed beside a grown one
        still starts its own track: its own blob, split from the grown one's, is small.
        """
        if not self.seeds or not candidates:
            return np.zeros(len(candidates), bool)
        d, same = self._to_confirmed(candidates)
        cr = np.sqrt(np.array([c.area for c in candidates], float) / np.pi)
        return ((d <= cr[:, None]) & same).any(axis=1)

    def table(self) -> dict[str, np.ndarray]:
        """Confirmed seeds as columns (:data:`SEED_COLUMNS`)."""
        rows = [s.row() for s in self.seeds]
        dtypes = dict(id=int, first_frame=int, first_time_s=float, x_px=float, y_px=float, sign=int,
                      area_px=int, peak_snr=float, last_frame=int)
        return {k: np.array([r[k] for r in rows], dtype=dtypes[k]) for k in SEED_COLUMNS}


def match_seeds(found: dict, truth: dict, radius_px: float = 4.0) -> dict:
    """Score found seeds against true ones (one-to-one, minimum total distance, within ``radius_px``).

    Parameters
    ----------
    found : seeds table (``x_px, y_px, first_frame`` and optionally ``sign``).
    truth : the same columns for the true seeds.
    radius_px : largest distance of a match (px).

    Returns
    -------
    dict: ``tp, fp, fn, f1, mean_error_px, latencies`` (found first_frame − true first_frame, per match),
    ``median_latency``, ``pairs`` (found index, true index, distance) and ``sign_ok`` per pair.

    Example
    -------
    >>> t = dict(x_px=[10.0, 50.0], y_px=[10.0, 50.0], first_frame=[3, 5])
    >>> f = dict(x_px=[11.0, 90.0], y_px=[10.0, 90.0], first_frame=[4, 2])
    >>> r = match_seeds(f, t)
    >>> r["tp"], r["fp"], r["fn"], r["latencies"]
    (1, 1, 1, [1])
    """
    from scipy.optimize import linear_sum_assignment

    fx = np.asarray(found["x_px"], float)
    fy = np.asarray(found["y_px"], float)
    tx = np.asarray(truth["x_px"], float)
    ty = np.asarray(truth["y_px"], float)
    pairs = []
    if len(fx) and len(tx):
        d = np.hypot(fx[:, None] - tx[None, :], fy[:, None] - ty[None, :])
        r, c = linear_sum_assignment(np.where(d <= radius_px, d, 1e6))
        pairs = [(int(i), int(j), float(d[i, j])) for i, j in zip(r, c) if d[i, j] <= radius_px]
    tp = len(pairs)
    fp = len(fx) - tp
    fn = len(tx) - tp
    lat = [int(found["first_frame"][i]) - int(truth["first_frame"][j]) for i, j, _ in pairs]
    sign_ok = ([int(found["sign"][i]) == int(truth["sign"][j]) for i, j, _ in pairs]
               if "sign" in found and "sign" in truth else [])
    return dict(tp=tp, fp=fp, fn=fn, f1=2 * tp / max(1, 2 * tp + fp + fn),
                mean_error_px=float(np.mean([p[2] for p in pairs])) if pairs else float("nan"),
                latencies=lat, median_latency=float(np.median(lat)) if lat else float("nan"), pairs=pairs,
                sign_ok=sign_ok)
