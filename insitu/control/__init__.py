"""The control layer: configuration, protocols, plans, the safety envelope and the engine.

The plan (what to do: :mod:`.protocol`, :mod:`.plan`) is separate from the engine
that does it (:mod:`.engine`). This layer imports drivers and :mod:`insitu.core`,
never the analysis, the virtual specimen, the GUI or the commands.
"""
