"""``insitu microstructure``: build a microstructure file from an orientation map (.ang/.ctf) or label image."""
from __future__ import annotations

import sys

from insitu.core.errors import UserError

HELP = "Build a microstructure file from an orientation map (.ang/.ctf) or label image"
DESCRIPTION = """Build the simulator's microstructure HDF5 file.

From an orientation map (.ang TSL/ASTAR, .ctf Oxford; read with orix): points are grouped into
grains by misorientation (-3m symmetry, the phase is treated as Na-beta''-alumina), each grain gets
its mean orientation and c-axis. The grid is inferred from the x, y columns.
From a label image (PNG/TIFF, 0 = vacuum, >0 = grain id) with --orientations CSV
(grain_id + c_x, c_y, c_z or phi1, Phi, phi2 in radians).

Each --electrode NAME=SIDE adds a one-voxel electrode strip just outside that side of the map.

examples:
  insitu microstructure ACOM.ang --out micro.h5 --electrode top=top --electrode right=right
  insitu microstructure grains.png --orientations grains.csv --voxel-size-m 2e-8 --out micro.h5 \\
      --electrode top=top --electrode right=right
"""

SIDES = ("top", "bottom", "left", "right")


def add_arguments(parser):
    parser.add_argument("map", help="orientation map (.ang/.ctf) or label image (.png/.tif)")
    parser.add_argument("--out", required=True, help="microstructure HDF5 file to write")
    parser.add_argument("--electrode", action="append", default=[], metavar="NAME=SIDE",
                        help="electrode strip along a side: top, bottom, left or right (repeat)")
    parser.add_argument("--orientations", metavar="CSV", help="orientation table for a label image")
    parser.add_argument("--threshold-deg", type=float, default=5.0,
                        help="misorientation threshold for grain segmentation (default 5)")
    parser.add_argument("--min-grain-px", type=int, default=1,
                        help="merge grains smaller than this into their main neighbour (default 1: keep all)")
    parser.add_argument("--voxel-size-m", type=float, help="voxel edge in m (default: the map's step)")
    parser.add_argument("--thickness-m", type=float,
                        help="lamella thickness in m (default: the map header's 'Thickness' line; one of the two "
                             "is required)")
    for name, default, text in (("sigma-ip", 1.0, "in-plane conductivity, S/m"),
                                ("anisotropy", 1000.0, "sigma_ip / sigma_op"),
                                ("gb-ratio", 20.0, "sigma_ip / sigma_GB"),
                                ("gb-thickness-m", 1e-9, "GB thickness, m"),
                                ("backbone-ratio", 250.0, "sigma_ip / sigma_backbone")):
        parser.add_argument(f"--{name}", type=float, default=default, help=f"{text} (default {default:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def parse_electrodes(items) -> dict:
    """``["top=top", "na=right"]`` -> ``{"top": "top", "na": "right"}`` (UserError on bad items)."""
    out = {}
    for item in items:
        name, sep, side = item.partition("=")
        name, side = name.strip(), side.strip().lower()
        if not sep or not name:
            raise UserError(f"--electrode expects NAME=SIDE, got '{item}'")
        if side not in SIDES:
            raise UserError(f"--electrode {name}: side '{side}' is not one of {', '.join(SIDES)}")
        if name in out:
            raise UserError(f"--electrode '{name}' given twice")
        if side in out.values():
            raise UserError(f"--electrode: two electrodes on side '{side}'")
        out[name] = side
    if not out:
        raise UserError("give at least one electrode, e.g. --electrode top=top --electrode right=right")
    return out


def add_electrodes(grains, sides: dict):
    """Pad ``grains`` with a one-voxel strip (vacuum) on each named side and mark it as that electrode.

    Strips cover only the map's own extent, so electrodes on adjacent sides never touch.
    """
    import numpy as np

    pt = int("top" in sides.values())
    pb = int("bottom" in sides.values())
    pl = int("left" in sides.values())
    pr = int("right" in sides.values())
    ny, nx = grains.shape
    g = np.zeros((ny + pt + pb, nx + pl + pr), np.int32)
    g[pt:pt + ny, pl:pl + nx] = grains
    el = {}
    for name, side in sides.items():
        m = np.zeros(g.shape, bool)
        if side == "top":
            m[0, pl:pl + nx] = True
        elif side == "bottom":
            m[-1, pl:pl + nx] = True
        elif side == "left":
            m[pt:pt + ny, 0] = True
        else:
            m[pt:pt + ny, -1] = True
        el[name] = m
    return g, el


def _no_thickness(src):
    raise UserError(f"{src.name} gives no lamella thickness: pass --thickness-m (e.g. 1.7e-7 for the paper's "
                    f"170 nm lamella); currents scale with it")


def run(args) -> int:
    from pathlib import Path

    from insitu.core.jit_notice import ORIX_KERNELS, compile_notice

    import numpy as np

    from insitu.analysis.transport.microstructure import Microstructure, c_axis_from_euler, write_microstructure

    sides = parse_electrodes(args.electrode)
    src = Path(args.map)
    out = Path(args.out)
    if out.parent != Path("") and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)  # documented: the folder of --out is created
    from insitu.core.outputs import check_target, output_file

    check_target(out, args.overwrite)
    if not src.is_file():
        raise UserError(f"input {src} not found")
    ext = src.suffix.lower()
    euler = None
    map_thickness = None
    if ext in (".ang", ".ctf"):
        from insitu.analysis.transport.orientation import (header_thickness_m, load_orientation_map,
                                                           mean_orientations, segment_grains)

        if args.thickness_m is None and header_thickness_m(src) is None:
            _no_thickness(src)             # before the compile notice: a bad input is a one-line error
        compile_notice("insitu microstructure", ORIX_KERNELS)
        om = load_orientation_map(src)
        if not om.valid.any():
            raise UserError(f"{src}: no indexed points")
        labels = segment_grains(om.euler, om.valid, args.threshold_deg, args.min_grain_px)
        ids, euler = mean_orientations(om.euler, labels)
        c = c_axis_from_euler(euler)
        step = om.step_m
        map_thickness = om.thickness_m
    elif ext in (".png", ".tif", ".tiff"):
        if not args.orientations:
            raise UserError("a label image needs --orientations CSV (grain_id + c_x, c_y, c_z or phi1, Phi, phi2)")
        if not args.voxel_size_m:
            raise UserError("a label image needs --voxel-size-m")
        from insitu.analysis.transport.orientation import read_orientation_csv

        if ext == ".png":
            from skimage.io import imread

            labels = imread(src)
        else:
            import tifffile

            labels = tifffile.imread(src)
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise UserError(f"{src}: a label image must be single-channel 2-D, got shape {labels.shape}")
        labels = labels.astype(np.int32)
        ids, c, euler = read_orientation_csv(args.orientations)
        norms = np.linalg.norm(c, axis=1, keepdims=True)
        rounded = np.abs(norms - 1.0) < 1e-3          # table rounding: renormalise; real errors are kept
        c = np.where(rounded, c / np.where(norms > 0, norms, 1.0), c)
        step = None
    else:
        raise UserError(f"{src}: unknown map type '{ext}' (.ang, .ctf, .png, .tif)")
    vs = args.voxel_size_m or step
    if args.thickness_m is not None:
        thickness, thickness_from = args.thickness_m, "--thickness-m"
    elif map_thickness is not None:
        thickness, thickness_from = map_thickness, f"the header of {src.name}"
    else:
        _no_thickness(src)
    grains, electrodes = add_electrodes(labels, sides)
    m = Microstructure(grains=grains, grain_ids=ids, c_axis=c, electrodes=electrodes, voxel_size_m=vs,
                       thickness_m=thickness, sigma_ip=args.sigma_ip, anisotropy=args.anisotropy,
                       gb_ratio=args.gb_ratio, gb_thickness_m=args.gb_thickness_m,
                       backbone_ratio=args.backbone_ratio, euler_bunge=euler)
    m.validate(str(src))
    with output_file(out, args.overwrite) as tmp:  # renamed to OUT when complete
        write_microstructure(tmp, m)
    print(f"{src.name}: {labels.shape[0]} x {labels.shape[1]} map, voxel {vs:.4g} m, thickness {thickness:.4g} m "
          f"(from {thickness_from}), "
          f"{int(np.unique(labels[labels > 0]).size)} grains, electrodes "
          f"{', '.join(f'{k} ({v})' for k, v in sides.items())}")
    print(f"wrote {out}", file=sys.stdout)
    return 0
