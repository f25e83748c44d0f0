"""Image analysis of HAADF frame series: registration (drift), differential images,
evidence maps, seed detection and frame I/O. Imports nothing from the transport simulator."""
