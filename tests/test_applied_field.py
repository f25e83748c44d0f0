"""The applied field solved on a coarser grid (analysis/transport/coarse.py) against the fine solve."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from insitu.analysis.transport import simulator
from insitu.analysis.transport.coarse import applied_factor, coarse_uniform, upsample_field
from insitu.analysis.transport.lamella import voronoi_lamella
from insitu.analysis.transport.microstructure import VACUUM

POTS = {"top": 0.0, "right": 1.0}


def test_factor_keeps_the_minimum_side():
    for shape in ((100, 3000), (512, 512), (1023, 4000), (1024, 1024), (2048, 1024), (2048, 2048), (9000, 9000)):
        f = applied_factor(shape)
        assert f in (1, 2, 4, 8)
        assert f == 1 or min(shape) // f >= 512
        assert f == 8 or min(shape) // (2 * f) < 512      # the largest such factor


def test_coarse_lamella_keeps_electrodes_and_solid():
    m = voronoi_lamella((96, 80), n_grains=6, seed=3)
    c = coarse_uniform(m, 4)
    assert c.shape == (24, 20) and c.voxel_size_m == 4 * m.voxel_size_m
    c.validate("coarse")                                 # electrodes non-empty, disjoint, touching the lamella
    solid = (m.grains != VACUUM).reshape(24, 4, 20, 4).any(axis=(1, 3))
    el = sum(e.astype(int) for e in c.electrodes.values())
    assert el.max() == 1
    np.testing.assert_array_equal((c.grains == 1) | (el == 1), solid | (el == 1))
    for k, e in m.electrodes.items():               # every fine electrode voxel's block is an electrode
        assert (el.astype(bool)[np.nonzero(e)[0] // 4, np.nonzero(e)[1] // 4]).all()
    # the identity coarsening is the uniform lamella itself
    one = coarse_uniform(m, 1)
    np.testing.assert_array_equal(one.grains, (m.grains != VACUUM).astype(np.int32))
    for k in m.electrodes:
        np.testing.assert_array_equal(one.electrodes[k], m.electrodes[k])


def test_upsampled_field_conventions():
    m = voronoi_lamella((64, 64), n_grains=5, seed=1)
    Ec = np.arange(1, 16 * 16 * 2 + 1, dtype=float).reshape(16, 16, 2)
    Ec[0, :] = 0.0                      # an electrode row: its fine voxels take row 1's field
    Ec[5, 7] = np.nan                   # vacuum: the nearest coarse voxel's field
    E = upsample_field(Ec, m, 4)
    el = np.any([e for e in m.electrodes.values()], axis=0)
    assert (E[el] == 0).all()
    assert np.isnan(E[(m.grains == VACUUM) & ~el]).all()
    inside = (m.grains != VACUUM) & ~el
    iy, ix = np.nonzero(inside)
    expect = Ec[np.maximum(iy // 4, 1), ix // 4]
    hole = (iy // 4 == 5) & (ix // 4 == 7)
    assert np.isin(E[iy[hole], ix[hole], 0], [Ec[4, 7, 0], Ec[6, 7, 0], Ec[5, 6, 0], Ec[5, 8, 0]]).all()
    np.testing.assert_array_equal(E[iy[~hole], ix[~hole]], expect[~hole])


@pytest.mark.parametrize("factor", [2, 4])
def test_coarse_applied_field_gives_the_same_gb_classification(monkeypatch, factor):
    m = voronoi_lamella((256, 256), n_grains=20, seed=0)
    fine = simulator.simulate(m, POTS, model="paper")
    monkeypatch.setattr(simulator, "applied_field", functools.partial(simulator.applied_field, factor=factor))
    coarse = simulator.simulate(m, POTS, model="paper")
    a, b = fine.gb_table, coarse.gb_table
    d = np.abs((a["applied_field_deg"] - b["applied_field_deg"] + 180.0) % 360.0 - 180.0)
    assert np.median(d) < 0.5 and d.max() < 3.0, (np.median(d), d.max())
    print(f"factor {factor}: applied-field direction at the GBs, median {np.median(d):.3f}, max {d.max():.3f} deg")
    np.testing.assert_array_equal(a["gb_type"], b["gb_type"])
    np.testing.assert_array_equal(a["blocking"], b["blocking"])
    # the potential, currents and the rest of the table do not depend on the applied field
    np.testing.assert_array_equal(fine.potential, coarse.potential)
    np.testing.assert_array_equal(a["jump"], b["jump"])


def test_coarse_applied_field_falls_back_to_the_fine_grid_when_an_electrode_vanishes():
    m = voronoi_lamella((64, 64), n_grains=5, seed=1)
    # a one-voxel electrode in a block owned by a larger one: gone on the coarse grid
    e = np.zeros(m.shape, bool)
    e[0, 1] = True
    m.electrodes["top"][0, 1] = False
    m.electrodes["tip"] = e
    m.grains[1, 1] = max(int(m.grains[1, 1]), 1) if m.grains[1, 1] != VACUUM else m.grain_ids[0]
    pots = dict(POTS, tip=0.5)
    np.testing.assert_array_equal(simulator.applied_field(m, pots, factor=4), simulator.applied_field(m, pots, factor=1))
