"""Electron dose bookkeeping: dose rate from probe current and scanned field.

Microscopists quote dose in electrons per Å² (e/Å²) and dose rate in e/Å²/s;
everything else in insitu is SI.
"""
from __future__ import annotations

ELEMENTARY_CHARGE_C = 1.602176634e-19
ANGSTROM2_PER_M2 = 1e20
#: edge of the scanned field assumed when neither the protocol nor the frames say (m)
DEFAULT_FIELD_OF_VIEW_M = 1e-6


def dose_rate(probe_current_A: float, field_area_m2: float) -> float:
    """Electron dose rate on a scanned field, in e/Å²/s.

    Parameters
    ----------
    probe_current_A : float
        Beam (probe) current in A.
    field_area_m2 : float
        Scanned area in m² (the beam dose is spread over it).

    Returns
    -------
    float
        ``I / (e · area[Å²])``; 0 for a zero current.

    Examples
    --------
    >>> round(dose_rate(50e-12, (1e-6) ** 2), 3)   # 50 pA on 1 µm x 1 µm
    3.121
    """
    if field_area_m2 <= 0:
        raise ValueError(f"field area must be > 0 m², got {field_area_m2!r}")
    return probe_current_A / ELEMENTARY_CHARGE_C / (field_area_m2 * ANGSTROM2_PER_M2)
