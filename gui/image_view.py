"""The live image: raw / differential / registered, contrast, scale bar, overlays.

Display cost is what matters here: a 1024² frame arrives up to 10 times a
second, so levels are computed on a strided subsample (or fixed by the
operator) and passed to ``ImageItem.setImage(autoLevels=False)``, and only
the newest frame is ever drawn (the caller drops stale ones).
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from pyqtgraph.graphicsItems.GraphicsWidgetAnchor import GraphicsWidgetAnchor
from PyQt5 import QtCore, QtGui, QtWidgets

from insitu.core.records import FrameRecord

from insitu.core.units import format_current, format_length, nice_length

pg.setConfigOptions(imageAxisOrder="row-major")

MODES = ("Raw", "Differential", "Registered")
#: half-range of the differential view (σ): the same ±8 σ as the report's differential image,
#: so noise (|z| ~ 1) stays dim and a change beyond the detection threshold stands out
DIFF_SIGMA = 8.0

def auto_levels(img: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5, max_samples: int = 16384):
    """Contrast limits from percentiles of a strided subsample (fast on 1024² frames).

    Examples
    --------
    >>> a = np.arange(10000.0).reshape(100, 100)
    >>> lo, hi = auto_levels(a, 0, 100)
    >>> (lo, hi) == (0.0, 9999.0)
    True
    """
    a = np.asarray(img)
    step = max(1, int(math.sqrt(a.size / max_samples)))
    sub = a[::step, ::step]
    sub = sub[np.isfinite(sub)] if sub.dtype.kind == "f" else sub.ravel()
    if sub.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sub, (lo_pct, hi_pct))
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def to_display_uint8(img: np.ndarray, levels) -> np.ndarray:
    """Map ``img`` onto 0–255 between ``levels`` (lo, hi), clipped (float32 arithmetic:
    as fast as a per-value lookup table for uint16 frames, and it works for float images too).

    Examples
    --------
    >>> to_display_uint8(np.array([[0, 50, 100, 200]], np.uint16), (50, 150)).tolist()
    [[0, 0, 127, 255]]
    """
    lo, hi = float(levels[0]), float(levels[1])
    scale = np.float32(255.0 / (hi - lo) if hi > lo else 1.0)
    out = np.subtract(img, np.float32(lo), dtype=np.float32)
    out *= scale
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def bin2(a: np.ndarray) -> np.ndarray:
    """2×2 mean (odd edges dropped), keeping integer images integer.

    Examples
    --------
    >>> bin2(np.array([[1, 3], [5, 7]], np.uint16)).tolist()
    [[4]]
    """
    ny, nx = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    a = a[:ny, :nx]
    if a.dtype.kind in "ui":
        acc = a[0::2, 0::2].astype(np.uint32)
        acc += a[1::2, 0::2]
        acc += a[0::2, 1::2]
        acc += a[1::2, 1::2]
        acc >>= 2
        return acc.astype(a.dtype)
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) * np.float32(0.25)


def settle_levels(old, new, tolerance: float = 0.03):
    """Keep ``old`` contrast limits unless ``new`` differ by more than ``tolerance`` of the range
    (steady contrast, no flicker, and the display lookup table is not rebuilt every frame).

    Examples
    --------
    >>> settle_levels((100, 200), (101, 199))
    (100, 200)
    >>> settle_levels((100, 200), (130, 200))
    (130, 200)
    """
    if old is None:
        return new
    span = max(old[1] - old[0], 1e-12)
    if abs(new[0] - old[0]) > tolerance * span or abs(new[1] - old[1]) > tolerance * span:
        return new
    return old


def boundary_rgba(shape, y, x, values=None, cmap: str = "inferno", alpha: int = 230) -> np.ndarray:
    """RGBA image (uint8) with the boundary pixels ``(y, x)`` coloured by ``values``.

    ``values`` (e.g. the GB current jump per pixel) are mapped from their 2nd
    to 98th percentile onto ``cmap``; without values the boundaries are cyan.
    """
    out = np.zeros(tuple(shape) + (4,), np.uint8)
    y = np.asarray(y, int)
    x = np.asarray(x, int)
    if y.size == 0:
        return out
    if values is None:
        out[y, x] = (0, 230, 255, alpha)
        return out
    v = np.asarray(values, float)
    ok = np.isfinite(v)
    lo, hi = (np.percentile(np.abs(v[ok]), (2, 98)) if ok.any() else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    u = np.clip((np.abs(np.where(ok, v, lo)) - lo) / (hi - lo), 0, 1)
    lut = pg.colormap.get(cmap).getLookupTable(0.35, 1.0, 256, alpha=False)
    rgb = lut[(u * 255).astype(int)]
    out[y, x, :3] = rgb
    out[y, x, 3] = alpha
    return out


ELECTRODE_COLOURS = [(255, 200, 40), (80, 220, 120), (240, 90, 200), (90, 160, 255)]


def electrodes_rgba(masks: dict, alpha: int = 110) -> np.ndarray | None:
    """RGBA image (uint8) with each electrode mask filled in its own colour (None if no masks)."""
    masks = {k: np.asarray(m, bool) for k, m in (masks or {}).items()}
    if not masks:
        return None
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape + (4,), np.uint8)
    for i, m in enumerate(masks.values()):
        out[m, :3] = ELECTRODE_COLOURS[i % len(ELECTRODE_COLOURS)]
        out[m, 3] = alpha
    return out


def seed_positions(seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x_px, y_px, sign)`` from the live analysis' seeds, whatever container holds them.

    Accepts a dict of arrays (the seeds.csv columns), a numpy structured
    array, or a sequence of objects/dicts with ``x_px``, ``y_px`` (``sign``
    optional).
    """
    empty = (np.zeros(0), np.zeros(0), np.zeros(0))
    if seeds is None:
        return empty
    if isinstance(seeds, dict):
        if "x_px" not in seeds:
            return empty
        x = np.asarray(seeds["x_px"], float)
        y = np.asarray(seeds["y_px"], float)
        s = np.asarray(seeds.get("sign", np.ones_like(x)), float)
        return x, y, s
    if isinstance(seeds, np.ndarray) and seeds.dtype.names:
        s = seeds["sign"] if "sign" in seeds.dtype.names else np.ones(len(seeds))
        return np.asarray(seeds["x_px"], float), np.asarray(seeds["y_px"], float), np.asarray(s, float)
    xs, ys, ss = [], [], []
    for item in seeds:
        get = item.get if isinstance(item, dict) else (lambda k, d=None, _i=item: getattr(_i, k, d))
        xs.append(float(get("x_px")))
        ys.append(float(get("y_px")))
        ss.append(float(get("sign", 1) or 1))
    if not xs:
        return empty
    return np.array(xs), np.array(ys), np.array(ss)


class ScaleBar(GraphicsWidgetAnchor, pg.GraphicsObject):
    """A scale bar in physical units that re-picks a round length as the view zooms.

    The view is in pixels; ``pixel_size_m`` converts. The bar is about a
    fifth of the visible width.
    """

    def __init__(self, pixel_size_m: float = float("nan"), height_px: int = 6):
        pg.GraphicsObject.__init__(self)
        GraphicsWidgetAnchor.__init__(self)
        self.setFlag(self.GraphicsItemFlag.ItemHasNoContents)
        self.pixel_size_m = pixel_size_m
        self._h = height_px
        self.bar = QtWidgets.QGraphicsRectItem(self)
        self.bar.setPen(pg.mkPen(None))
        self.bar.setBrush(pg.mkBrush(255, 255, 255, 230))
        self.text = pg.TextItem("", anchor=(0.5, 1), color=(255, 255, 255))
        f = QtGui.QFont()
        f.setPointSize(12)
        f.setBold(True)
        self.text.setFont(f)
        self.text.setParentItem(self)

    def boundingRect(self):
        return QtCore.QRectF()

    def set_pixel_size(self, pixel_size_m: float) -> None:
        if pixel_size_m != self.pixel_size_m:
            self.pixel_size_m = pixel_size_m
            self.update_bar()

    def changeParent(self):
        view = self.parentItem()
        if view is not None:
            view.sigRangeChanged.connect(self.update_bar)
            self.update_bar()

    def setParentItem(self, p):
        ret = pg.GraphicsObject.setParentItem(self, p)
        self.anchor(itemPos=(1, 1), parentPos=(1, 1), offset=(-30, -24))
        return ret

    def update_bar(self, *args):
        view = self.parentItem()
        px = self.pixel_size_m
        if view is None or not (px and px > 0 and math.isfinite(px)):
            self.setVisible(False)
            return
        (x0, x1), _ = view.viewRange()
        length_m = nice_length(0.2 * (x1 - x0) * px)
        if not math.isfinite(length_m):
            self.setVisible(False)
            return
        self.setVisible(True)
        p1 = view.mapFromViewToItem(self, QtCore.QPointF(0, 0))
        p2 = view.mapFromViewToItem(self, QtCore.QPointF(length_m / px, 0))
        w = abs((p2 - p1).x())
        self.bar.setRect(QtCore.QRectF(-w, 0, w, self._h))
        self.text.setText(format_length(length_m))
        self.text.setPos(-w / 2.0, -2)


class LiveImageView(QtWidgets.QWidget):
    """The live image panel with its controls.

    Call :meth:`show_frame` with each (newest) :class:`FrameRecord` and
    :meth:`show_analysis` with each live-analysis result.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mode = "Raw"
        self._frame: FrameRecord | None = None
        self._diff: np.ndarray | None = None
        self._drift = (0.0, 0.0)
        self._levels = None
        self.n_drawn = 0
        self.analysis_available = True

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)

        # --- controls row -------------------------------------------------
        row = QtWidgets.QHBoxLayout()
        self.mode_box = QtWidgets.QComboBox()
        self.mode_box.addItems(MODES)
        self.mode_box.setToolTip("Raw frame, differential (frame − reference from before any change, in calibrated σ, ±8 σ) "
                                 "or drift-registered")
        self.mode_box.currentTextChanged.connect(self.set_mode)
        row.addWidget(QtWidgets.QLabel("View"))
        row.addWidget(self.mode_box)
        self.auto_box = QtWidgets.QCheckBox("Auto contrast")
        self.auto_box.setChecked(True)
        self.lo_spin = QtWidgets.QDoubleSpinBox()
        self.hi_spin = QtWidgets.QDoubleSpinBox()
        for sp in (self.lo_spin, self.hi_spin):
            sp.setRange(-1e9, 1e9)
            sp.setDecimals(1)
            sp.setEnabled(False)
            sp.setMinimumWidth(80)
            sp.valueChanged.connect(self._manual_levels)
        self.auto_box.toggled.connect(self._auto_toggled)
        row.addSpacing(12)
        row.addWidget(self.auto_box)
        row.addWidget(QtWidgets.QLabel("min"))
        row.addWidget(self.lo_spin)
        row.addWidget(QtWidgets.QLabel("max"))
        row.addWidget(self.hi_spin)
        row.addSpacing(12)
        self.seeds_box = QtWidgets.QCheckBox("Seeds")
        self.gb_box = QtWidgets.QCheckBox("GB network")
        self.el_box = QtWidgets.QCheckBox("Electrodes")
        self.seeds_box.setChecked(True)
        for b in (self.seeds_box, self.gb_box, self.el_box):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)

        self.info = QtWidgets.QLabel("no frame yet")
        self.info.setObjectName("imageInfo")
        lay.addWidget(self.info)

        # --- image --------------------------------------------------------
        self.glw = pg.GraphicsLayoutWidget()
        self.view = self.glw.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.view.setBackgroundColor((8, 8, 10))
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self._grey = pg.colormap.get("CET-L1").getLookupTable(nPts=256)
        # diverging map centred on black (dark-room friendly; changes of either sign glow)
        diverging = pg.ColorMap([0.0, 0.5, 1.0], [(70, 170, 255), (0, 0, 0), (255, 140, 40)])
        self._diverging = diverging.getLookupTable(nPts=256)
        # colour bar of the differential view, in calibrated σ (shown in that view only)
        self.color_bar = pg.ColorBarItem(values=(-DIFF_SIGMA, DIFF_SIGMA), colorMap=diverging,
                                         label="change (σ)", interactive=False, width=14)
        self.glw.addItem(self.color_bar, row=0, col=1)
        self.color_bar.setVisible(False)
        self.image.setLookupTable(self._grey)

        self.gb_item = pg.ImageItem(axisOrder="row-major")
        self.el_item = pg.ImageItem(axisOrder="row-major")
        for it, z in ((self.el_item, 5), (self.gb_item, 6)):
            it.setZValue(z)
            it.setVisible(False)
            self.view.addItem(it)
        self.seed_item = pg.ScatterPlotItem(size=18, pxMode=True, symbol="o", brush=None)
        self.seed_item.setZValue(10)
        self.view.addItem(self.seed_item)
        self.scale_bar = ScaleBar()
        self.scale_bar.setParentItem(self.view)
        self.scale_bar.setZValue(20)
        lay.addWidget(self.glw, 1)

        self.seeds_box.toggled.connect(self.seed_item.setVisible)
        self.gb_box.toggled.connect(self._overlay_toggled)
        self.el_box.toggled.connect(self._overlay_toggled)
        #: called when an overlay is switched on and no overlay data are loaded yet (lazy loading)
        self.overlay_requested = None
        self.overlay_note = ""
        self._shape = None

    # ------------------------------------------------------------------ controls
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown view mode {mode!r}")
        self.mode = mode
        if self.mode_box.currentText() != mode:
            self.mode_box.setCurrentText(mode)
        self.image.setLookupTable(self._diverging if mode == "Differential" else self._grey)
        self.color_bar.setVisible(mode == "Differential")
        self._levels = None
        if mode != "Registered":
            self.image.setPos(0, 0)
        self._place_seeds()
        self.redraw()

    def _auto_toggled(self, on: bool) -> None:
        self.lo_spin.setEnabled(not on)
        self.hi_spin.setEnabled(not on)
        if on:
            self._levels = None
            self.redraw()

    def _manual_levels(self, *_):
        if not self.auto_box.isChecked():
            lo, hi = self.lo_spin.value(), self.hi_spin.value()
            if hi > lo:
                self._levels = (lo, hi)
                self.redraw()

    def _overlay_toggled(self, *_):
        self.gb_item.setVisible(self.gb_box.isChecked())
        self.el_item.setVisible(self.el_box.isChecked())
        wanted = self.gb_box.isChecked() or self.el_box.isChecked()
        if wanted and self.gb_item.image is None and self.overlay_requested is not None:
            self.overlay_requested()

    # ------------------------------------------------------------------ data in
    def show_frame(self, rec: FrameRecord) -> None:
        """Display a new frame (call with the newest one only)."""
        self._frame = rec
        self.scale_bar.set_pixel_size(rec.pixel_size_m)
        if rec.drift_x == rec.drift_x and rec.drift_y == rec.drift_y:  # not NaN
            self._drift = (float(rec.drift_x), float(rec.drift_y))
        if self.mode != "Differential":
            self.redraw()
        self.info.setText(
            f"t = {rec.time_s:9.1f} s    {rec.bias_V:+7.3f} V    {format_current(rec.current_A)}    "
            f"dose {rec.dose:.3g} e/Å²    {'BLANKED' if rec.blanked else 'beam on'}    "
            f"{rec.data.shape[1]}×{rec.data.shape[0]} px @ {format_length(rec.pixel_size_m)}")

    def show_analysis(self, result) -> None:
        """Take a live-analysis result (:class:`insitu.analysis.pipeline.FrameResult`).

        Its drift ``(dx_px, dy_px)`` says where a first-frame feature is in this
        frame; the differential image and the seeds are in first-frame
        coordinates.
        """
        dx = getattr(result, "dx_px", None)
        dy = getattr(result, "dy_px", None)
        if dx is not None and dy is not None and np.isfinite(dx) and np.isfinite(dy):
            self._drift = (float(dx), float(dy))
        diff = getattr(result, "differential", None)
        if diff is not None:
            self._diff = diff
        seeds = getattr(result, "seeds", None)
        if seeds is not None:
            self.set_seeds(seeds)
        self._place_seeds()
        if self.mode != "Raw":
            self.redraw()

    def _place_seeds(self) -> None:
        # seeds and overlays live in first-frame coordinates: on the raw frame they sit at p + drift
        pos = self._drift if self.mode == "Raw" else (0.0, 0.0)
        for it in (self.seed_item, self.gb_item, self.el_item):
            it.setPos(*pos)

    def set_seeds(self, seeds) -> None:
        x, y, s = seed_positions(seeds)
        pens = [pg.mkPen((255, 80, 60) if si >= 0 else (60, 200, 255), width=2.5) for si in s]
        self.seed_item.setData(x=x, y=y, pen=pens if len(pens) else None, brush=None)

    def set_overlay(self, data) -> None:
        """Take :class:`~insitu.gui.overlays.OverlayData` (GB network coloured by jump, electrodes)."""
        self.gb_item.setImage(boundary_rgba(data.shape, data.gb_y, data.gb_x, data.gb_value), autoLevels=False)
        self._fit_overlay(self.gb_item, data.shape)
        rgba = electrodes_rgba(data.electrodes)
        if rgba is not None:
            self.el_item.setImage(rgba, autoLevels=False)
            self._fit_overlay(self.el_item, rgba.shape[:2])
        self.overlay_note = data.note
        self.gb_box.setToolTip("GB network coloured by the simulated current jump (dark → bright: low → high)"
                               + (f"\n{data.note}" if data.note else ""))
        self._place_seeds()

    def _fit_overlay(self, item, shape) -> None:
        """Stretch an overlay (grain-map grid) over the field of view of the frames."""
        ref = self._shape or tuple(shape)
        item.setRect(QtCore.QRectF(0, 0, ref[1], ref[0]))

    # ------------------------------------------------------------------ drawing
    def redraw(self) -> None:
        rec = self._frame
        if self.mode == "Differential":
            img = self._diff
            if img is None:
                return
            if self.auto_box.isChecked() or self._levels is None:
                # the image is in calibrated σ: a fixed range, so the same σ looks the same in
                # every frame and in the report
                levels = (-DIFF_SIGMA, DIFF_SIGMA)
            else:
                levels = self._levels
            self.color_bar.setLevels(values=levels)
        else:
            if rec is None:
                return
            img = rec.data
            levels = auto_levels(img) if (self.auto_box.isChecked() or self._levels is None) else self._levels
        first = self.image.image is None or self._shape != img.shape[:2]
        if self.auto_box.isChecked():
            levels = settle_levels(self._levels, levels)
        # bin to screen resolution (2×2 means while a screen pixel covers ≥ 1.5 frame pixels), map to
        # uint8 with our own lookup table; pyqtgraph then only applies the 256-colour table
        small = img
        ps = self.view.viewPixelSize() if not first else (1.0, 1.0)
        f = min(ps)
        while f >= 1.5 and min(small.shape[:2]) >= 256:
            small = bin2(small)
            f /= 2.0
        self.image.setImage(to_display_uint8(small, levels), autoLevels=False, levels=(0, 255))
        self.image.setRect(QtCore.QRectF(0, 0, img.shape[1], img.shape[0]))
        if self.mode == "Registered":
            self.image.setPos(-self._drift[0], -self._drift[1])
        if self.auto_box.isChecked():
            self._levels = levels
            for sp, v in ((self.lo_spin, levels[0]), (self.hi_spin, levels[1])):
                sp.blockSignals(True)
                sp.setValue(v)
                sp.blockSignals(False)
        if first:
            self._shape = img.shape[:2]
            self.view.autoRange(padding=0.0)
            for it in (self.gb_item, self.el_item):
                if it.image is not None:
                    self._fit_overlay(it, it.image.shape[:2])
        self.n_drawn += 1

