"""Background threads that must not compete with the control loop.

The engine's sample ticks run on the calling thread; frame reading, frame
rendering and the session writer run in background threads of the same
process. On a busy machine those threads compete with the control thread for
the CPU: :func:`lower_priority` gives the calling thread a higher nice value
(Linux: per thread), so the control thread is scheduled first whenever it
wakes for a tick. Elsewhere it does nothing.
"""
from __future__ import annotations

import os
import threading

#: nice value added to background threads (reading, rendering, writing)
BACKGROUND_NICENESS = 10


def lower_priority(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Raise the calling thread's nice value by ``niceness``; True when that was possible.

    Example
    -------
    >>> import threading
    >>> t = threading.Thread(target=lower_priority); t.start(); t.join()
    """
    if os.environ.get("INSITU_BACKGROUND_NICE", "1") == "0":
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + int(niceness))
    except (AttributeError, OSError):  # no per-thread priorities here (not Linux): nothing to do
        return False
    return True
