"""Say so before numba compiles: the first transport command would otherwise sit silent for ~20 s.

The simulator's kernels are compiled with ``numba.njit(cache=True)`` on first
use and cached on disk (beside the module in ``__pycache__``, or under
``NUMBA_CACHE_DIR``). :func:`compile_notice` tells whether that cache is cold.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: (top-level package, file inside it) of the kernels the transport commands compile: orix's
#: orientation conversions (``insitu microstructure``, reading a map) and the simulator's network
#: (``insitu simulate``; the multigrid solver compiles too, but only large grids use it). simulate
#: reads no orientation map, so orix's cache is not its business: with it in the list, simulate
#: announced a compile on every run on a machine that had never read a map.
ORIX_KERNELS = (("orix", "quaternion/_conversions.py"),)
TRANSPORT_KERNELS = (("insitu", "analysis/transport/network.py"),)


def _module_file(package: str, relative: str) -> Path | None:
    """The file without importing anything (a top-level find_spec runs no package code)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    if package == "insitu" and relative.startswith("analysis/"):
        # insitu.analysis is the top-level analysis/ folder (see pyproject's package-dir)
        sub = importlib.util.find_spec("insitu.analysis")
        locations = list(sub.submodule_search_locations) if sub is not None else []
        relative = relative.split("/", 1)[1]
    else:
        locations = list(spec.submodule_search_locations)
    for loc in locations:
        f = Path(loc) / relative
        if f.is_file():
            return f
    return None


def cache_is_warm(module_file: Path, cache_dir: str | None = None) -> bool:
    """Whether numba's on-disk cache holds any index (``.nbi``) for ``module_file``.

    Parameters
    ----------
    module_file : Path
        The ``.py`` file whose ``cache=True`` functions are asked about.
    cache_dir : str, optional
        ``NUMBA_CACHE_DIR`` (default: the environment's); else ``__pycache__`` beside the module.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "m.py").write_text("")
    0
    >>> cache_is_warm(d / "m.py", cache_dir="")
    False
    >>> (d / "__pycache__").mkdir(); (d / "__pycache__" / "m.f-3.py311.nbi").write_bytes(b"")
    0
    >>> cache_is_warm(d / "m.py", cache_dir="")
    True
    """
    cache_dir = os.environ.get("NUMBA_CACHE_DIR", "") if cache_dir is None else cache_dir
    pattern = f"{module_file.stem}.*.nbi"
    if cache_dir:
        return any(Path(cache_dir).rglob(pattern))
    return any((module_file.parent / "__pycache__").glob(pattern))


def compile_notice(program: str, kernels=TRANSPORT_KERNELS, stream=None) -> bool:
    """Print one line when any of ``kernels`` will be compiled now; return whether it did."""
    cold = [k for k in kernels if (f := _module_file(*k)) is not None and not cache_is_warm(f)]
    if not cold:
        return False
    print(f"{program}: compiling numerical kernels on first use (about 20 s; cached for later runs)",
          file=stream or sys.stderr, flush=True)
    return True
