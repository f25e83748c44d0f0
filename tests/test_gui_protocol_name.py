"""The protocol name, path and error messages are shown as plain text: a crafted name cannot draw a banner (issue 18)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PyQt5 import QtCore  # noqa: E402

from insitu.gui.protocol_panel import ProtocolPanel  # noqa: E402
from insitu.control.protocol import expand, parse_protocol  # noqa: E402

FAKE = "<span style='color:#00ff00; font-size:28pt'><b>LIMITS OK</b></span>"


def _green_pixels(widget) -> int:
    """Pixels where green clearly dominates (the fake banner is pure green)."""
    img = widget.grab().toImage().convertToFormat(4)        # QImage.Format_RGB32
    ptr = img.constBits()
    ptr.setsize(img.byteCount())
    a = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width()]
    b, g, r = a[..., 0].astype(int), a[..., 1].astype(int), a[..., 2].astype(int)
    return int(np.count_nonzero((g > 150) & (g > r + 80) & (g > b + 80)))


@pytest.mark.parametrize("where", ["name", "error"])
def test_markup_in_a_protocol_name_or_error_is_shown_as_text(qtbot, where):
    panel = ProtocolPanel()
    qtbot.addWidget(panel)
    panel.resize(600, 400)
    panel.show()
    if where == "name":
        proto = parse_protocol(f'name: "{FAKE}"\n'
                               "limits: {max_voltage: 5, compliance_current: 1.0e-6, max_slew_rate: 1}\n"
                               "steps: [{ramp: {to: 1}}]\n")
        panel.set_protocol(proto, expand(proto), path="p.yaml")
    else:
        panel.set_protocol_error(f"p.yaml: steps[0]: unknown key {FAKE}")
    label = panel.name_label
    assert label.textFormat() == QtCore.Qt.PlainText
    assert FAKE in label.text()                              # the markup itself is what the user sees
    qtbot.waitExposed(panel)
    assert _green_pixels(label) == 0                         # old code: a big green "LIMITS OK"
