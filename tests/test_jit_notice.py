"""The first transport command says it is compiling instead of sitting silent for ~20 s."""
from __future__ import annotations

import io

from insitu.core.jit_notice import ORIX_KERNELS, TRANSPORT_KERNELS, _module_file, cache_is_warm, compile_notice


def test_kernel_files_are_found():
    for package, relative in TRANSPORT_KERNELS + ORIX_KERNELS:
        f = _module_file(package, relative)
        assert f is not None and f.is_file() and f.name == relative.rsplit("/", 1)[-1]


def test_notice_only_when_the_cache_is_cold(tmp_path, monkeypatch):
    mod = tmp_path / "kern.py"
    mod.write_text("")
    monkeypatch.setattr("insitu.core.jit_notice._module_file", lambda package, relative: mod)
    out = io.StringIO()
    assert compile_notice("insitu simulate", stream=out) is True
    assert out.getvalue().startswith("insitu simulate: compiling") and out.getvalue().count("\n") == 1
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "kern.solve-12.py311.nbi").write_bytes(b"")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "")
    assert cache_is_warm(mod)
    out = io.StringIO()
    assert compile_notice("insitu simulate", stream=out) is False and out.getvalue() == ""


def test_numba_cache_dir_is_honoured(tmp_path, monkeypatch):
    mod = tmp_path / "src" / "kern.py"
    mod.parent.mkdir()
    mod.write_text("")
    cache = tmp_path / "cache"
    (cache / "deep" / "src").mkdir(parents=True)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    assert not cache_is_warm(mod)
    (cache / "deep" / "src" / "kern.f-1.py311.nbi").write_bytes(b"")
    assert cache_is_warm(mod)


def test_simulate_announces_only_what_it_compiles(monkeypatch):
    """After a simulation, the simulate command's notice is silent: every kernel file it watches
    has a warm cache (orix's, which simulate never uses, was in the list and kept the notice on for
    good on a machine that had not read an orientation map)."""
    from insitu.analysis.transport.lamella import voronoi_lamella
    from insitu.analysis.transport.simulator import simulate

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    simulate(voronoi_lamella((48, 48), n_grains=4), {"top": 0.0, "right": 1.0}, model="full")
    out = io.StringIO()
    assert compile_notice("insitu simulate", stream=out) is False and out.getvalue() == ""
