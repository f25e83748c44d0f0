"""The transport simulator: microstructures and lamellae, orientation maps, the resistor
network on the thin-film conductivity tensor, its multigrid solver and the GB quantities.
Imports nothing from the image analysis."""
