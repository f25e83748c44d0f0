"""The report's figures are legible: scale bars, readable seed numbers, a current axis in its own units."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from insitu.analysis.report import _mark, _scale_bar, write_report  # noqa: E402


def _texts(ax):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    return bars, [b.txt_label.get_text() for b in bars]


def test_scale_bar_is_a_1_2_5_length_about_a_fifth_of_the_frame():
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((512, 512)))
    _scale_bar(ax, 4e-9, 512)                        # 2.05 µm field: a fifth is 410 nm -> 200 nm
    bars, labels = _texts(ax)
    assert labels == ["200 nm"]
    assert bars[0].size_bar.get_children()[0].get_width() == pytest.approx(50.0)   # 200 nm / 4 nm px
    fig2, ax2 = plt.subplots()
    _scale_bar(ax2, float("nan"), 512)               # unknown pixel size: no bar, no guess
    assert _texts(ax2)[0] == []
    plt.close("all")


def test_seed_numbers_are_white_with_an_outline():
    fig, ax = plt.subplots()
    seeds = dict(id=[1, 2], x_px=[10.0, 40.0], y_px=[10.0, 40.0], sign=[1, -1], area_px=[9, 16], first_frame=[3, 5])
    _mark(ax, seeds)
    labels = [t for t in ax.texts]
    assert [t.get_text() for t in labels] == ["1", "2"]
    assert all(t.get_color() == "white" and t.get_fontsize() >= 9 and t.get_path_effects() for t in labels)
    plt.close("all")


def test_bias_current_axis_has_no_offset_and_its_own_prefix(tmp_path, monkeypatch):
    captured = {}
    import insitu.analysis.report as report


    monkeypatch.setattr(report, "_png", lambda fig: (captured.setdefault("axes", []).extend(fig.axes), "")[1])
    t = np.linspace(0, 100, 200)
    cur = 1.0e-7 + 1e-10 * np.sin(t)                 # 100 nA with sub-nA wiggles: matplotlib's offset case
    write_report(tmp_path / "r.html", title="t", source="s", n_frames=0, seeds={}, drift={},
                 bias=dict(time=t, voltage=np.full_like(t, 10.0), current=cur))
    ax2 = [a for a in captured["axes"] if "current" in a.get_ylabel()][0]
    assert ax2.get_ylabel() == "current (nA)"
    ax2.figure.canvas.draw()
    assert ax2.yaxis.get_major_formatter().get_offset() == ""        # before: a ×1e7 / +1e2 offset
    lo, hi = ax2.get_ylim()
    assert 99 < lo < 100 < hi < 101                                   # plotted in nA
