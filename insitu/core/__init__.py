"""The bottom layer: errors, the clock, typed records, units and the session file.

Everything else in insitu may import these modules; they import nothing above
them (an import-linter contract checked by ``make test`` enforces it). Drivers
sit directly above this layer.
"""
