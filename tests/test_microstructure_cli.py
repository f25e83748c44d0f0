"""``insitu microstructure`` and the orientation-map helpers (orix loading, segmentation, mean orientation)."""
from __future__ import annotations

import numpy as np
import pytest

from insitu.analysis.transport.microstructure import c_axis_from_euler, read_microstructure
from insitu.analysis.transport.orientation import (
    euler_to_matrix, grid_from_xy, matrix_to_euler, mean_orientations, misorientation_deg, segment_grains)
from insitu.cli import main


def test_grid_from_scattered_xy():
    xs, ys = np.meshgrid(np.arange(5) * 0.3, np.arange(3) * 0.3)
    perm = np.random.default_rng(0).permutation(15)
    r, c, step, shape = grid_from_xy(xs.ravel()[perm], ys.ravel()[perm])
    assert shape == (3, 5) and step == pytest.approx(0.3)
    np.testing.assert_array_equal(r, (ys.ravel()[perm] / 0.3).round())


def test_euler_matrix_round_trip():
    rng = np.random.default_rng(1)
    e = np.column_stack([rng.uniform(0, 2 * np.pi, 50), rng.uniform(0, np.pi, 50), rng.uniform(0, 2 * np.pi, 50)])
    np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(euler_to_matrix(e))), euler_to_matrix(e), atol=1e-12)


def test_segmentation_uses_crystal_symmetry_and_threshold():
    rng = np.random.default_rng(2)
    e = np.zeros((6, 8, 3))
    e[:, :4] = [0.3, 0.8, 0.1]
    e[:, 4:] = [1.5, 1.2, 0.4]
    e += rng.normal(0, np.radians(0.5), e.shape)           # orientation noise well below 5 deg
    e[2, 1, 2] += 2 * np.pi / 3                             # a 3-fold equivalent: same grain
    labels = segment_grains(e, np.ones((6, 8), bool), threshold_deg=5.0)
    assert labels.max() == 2 and np.all(labels[:, :4] == 1) and np.all(labels[:, 4:] == 2)
    ids, mean = mean_orientations(e, labels)
    assert misorientation_deg(mean[:1], [[0.3, 0.8, 0.1]])[0] < 0.5
    assert misorientation_deg(mean[1:], [[1.5, 1.2, 0.4]])[0] < 0.5
    valid = np.ones((6, 8), bool)
    valid[:, 3] = False                                    # unindexed column: vacuum, not a grain
    assert segment_grains(e, valid)[0, 3] == 0


def test_acom_ang_to_microstructure_and_simulation(real_data, tmp_path, capsys):
    out = tmp_path / "m.h5"
    args = ["microstructure", str(real_data / "ACOM.ang"), "--out", str(out), "--electrode", "top=top",
            "--electrode", "right=right"]
    rc = main(args)                                         # ACOM.ang has no thickness: no silent default
    err = capsys.readouterr().err
    assert rc == 1 and "ACOM.ang gives no lamella thickness: pass --thickness-m" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    rc = main(args + ["--thickness-m", "1.7e-7"])
    assert rc == 0
    assert "thickness 1.7e-07 m (from --thickness-m)" in capsys.readouterr().out
    m = read_microstructure(out)
    assert m.thickness_m == 1.7e-7
    assert m.grains.shape == (16, 16)                       # 15 x 15 map + electrode strips
    assert m.voxel_size_m == pytest.approx(2e-9)            # step 2.0 nm (ASTAR unit)
    assert m.electrodes["top"][0, :15].all() and m.electrodes["right"][1:, 15].all()
    assert m.grain_ids.size >= 2
    np.testing.assert_allclose(m.c_axis, c_axis_from_euler(m.euler_bunge), atol=1e-12)
    rc = main(["simulate", str(out), "--potential", "top=0", "--potential", "right=1", "--out", str(tmp_path / "s")])
    assert rc == 0


def test_label_image_with_orientation_table(tmp_path):
    from skimage.io import imsave

    lab = np.ones((10, 12), np.uint8)
    lab[:, 6:] = 2
    lab[8:, :] = 0
    imsave(tmp_path / "g.png", lab, check_contrast=False)
    (tmp_path / "o.csv").write_text("grain_id,c_x,c_y,c_z\n1,0,0,1\n2,0.577,0.577,0.577\n")
    out = tmp_path / "m.h5"
    rc = main(["microstructure", str(tmp_path / "g.png"), "--orientations", str(tmp_path / "o.csv"),
               "--voxel-size-m", "2e-8", "--thickness-m", "1e-7", "--out", str(out), "--electrode", "a=left",
               "--electrode", "b=right"])
    assert rc == 0
    m = read_microstructure(out)
    assert m.grains.shape == (10, 14) and m.voxel_size_m == 2e-8
    np.testing.assert_allclose(m.c_axis[1], np.ones(3) / np.sqrt(3))


@pytest.mark.parametrize("csv_text, extra, message", [
    ("grain_id,c_x,c_y,c_z\n1,0,0,1\n", [], "grain ids [2] in /grains have no orientation"),
    ("grain_id,c_x,c_y,c_z\n1,0,0,1\n2,1,1,0\n", [], "grain 2 is not a unit vector"),
    ("grain_id,a\n1,0\n", [], "needs columns"),
    ("grain_id,c_x,c_y,c_z\n1,0,0,1\n2,1,0,0\n", ["--electrode", "c=up"], "side 'up'"),
])
def test_bad_label_input_exit_1(tmp_path, capsys, csv_text, extra, message):
    from skimage.io import imsave

    lab = np.ones((6, 6), np.uint8)
    lab[:, 3:] = 2
    imsave(tmp_path / "g.png", lab, check_contrast=False)
    (tmp_path / "o.csv").write_text(csv_text)
    rc = main(["microstructure", str(tmp_path / "g.png"), "--orientations", str(tmp_path / "o.csv"),
               "--voxel-size-m", "1e-8", "--thickness-m", "1e-7", "--out", str(tmp_path / "m.h5"), "--electrode", "a=left",
               "--electrode", "b=right"] + extra)
    err = capsys.readouterr().err
    assert rc == 1 and message in err and len(err.strip().splitlines()) == 1


def test_thickness_from_the_map_header(real_data, tmp_path, capsys):
    text = (real_data / "ACOM.ang").read_text()
    ang = tmp_path / "t.ang"
    ang.write_text("# Thickness: 150 nm\n" + text)          # a header line the exporter may write
    out = tmp_path / "m.h5"
    rc = main(["microstructure", str(ang), "--out", str(out), "--electrode", "top=top", "--electrode", "right=right"])
    assert rc == 0
    assert "thickness 1.5e-07 m (from the header of t.ang)" in capsys.readouterr().out
    assert read_microstructure(out).thickness_m == pytest.approx(1.5e-7)
    # --thickness-m wins over the header, and says so
    rc = main(["microstructure", str(ang), "--out", str(out), "--overwrite", "--thickness-m", "2e-7",
               "--electrode", "top=top", "--electrode", "right=right"])
    assert rc == 0 and "(from --thickness-m)" in capsys.readouterr().out
    assert read_microstructure(out).thickness_m == pytest.approx(2e-7)
