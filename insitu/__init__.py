"""insitu: in-situ biasing experiments in the STEM.

Control (source-meter, beam blanker, frame stream) from scripted protocols,
crash-safe NeXus-shaped session files, a live operator GUI, analysis of
filament seeds and a resistor-network transport simulator.
"""
__version__ = "0.1.0"
