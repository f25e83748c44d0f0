"""``make bench``: run every benchmark module in bench/ (name starting with ``bench_``).

Each module has ``main() -> dict`` and prints its own ratios against a baseline
run in the same process. ``python -m bench NAME`` runs one.
"""
import importlib
import pkgutil
import sys
from pathlib import Path

here = Path(__file__).parent
names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
for name in names:
    mod = importlib.import_module(f"bench.{name.removeprefix('bench.')}")
    print(f"== {name} ==", flush=True)
    mod.main()
