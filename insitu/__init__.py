"""insitu: in-situ biasing experiments in the STEM.

Control (source-meter, beam blanker, frame stream) from scripted protocols,
crash-safe NeXus-shaped session files, a live operator GUI, analysis of
filament seeds and a resistor-network transport simulator.
"""
import os as _os

# The compiled simulator kernels run on all cores through OpenMP. By default its idle threads spin
# between parallel regions; when another process keeps a core busy, that made the multigrid solver
# 5-10x slower than on one core. Idle threads sleep instead, unless the user chose otherwise (the
# OpenMP runtime reads this when it loads, at the first parallel kernel).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
