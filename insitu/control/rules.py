"""Closed-loop rules: when an ``until:`` condition is met, and what a confirmed seed triggers.

Pure bookkeeping, shared by the engine (live) and by the replay of a recorded
session (:func:`insitu.seedwatch.replay_triggers`), so that both decide the
same way from the same seeds and readings:

* :class:`UntilWatch` holds one step's ``until`` conditions, armed when the
  step begins (at clock time ``t_start_s``). A seed counts for the step when the
  frame that confirmed it was taken at or after ``t_start_s``; a current
  condition is judged on every reading.
* :func:`seed_trigger` is the protocol-level ``on_seed`` rule.

Every rule that fires gives a :class:`Trigger`, whose :meth:`Trigger.message`
is the ``trigger`` event the session file records, e.g.
``until seeds 1 met by seed 3 (frame 17)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from insitu.control.protocol import Until
from insitu.core.records import SeedRecord

#: the on_seed rules that act (``none`` does nothing; ``mark`` only records the trigger)
ON_SEED_ACTIONS = ("mark", "blank", "hold", "abort")


@dataclass(frozen=True)
class Trigger:
    """A rule that fired: ``rule`` (``until seeds 1``, ``until current_above 5e-07 A``, ``on_seed blank``),
    what met it (a seed id and its confirmation frame, or a current reading in A)."""

    rule: str
    seed_id: int | None = None
    frame: int | None = None
    current_A: float | None = None

    def message(self) -> str:
        """The event text, e.g. ``until seeds 1 met by seed 3 (frame 17)``.

        Examples
        --------
        >>> Trigger("until seeds 1", seed_id=3, frame=17).message()
        'until seeds 1 met by seed 3 (frame 17)'
        >>> Trigger("until current_above 5e-07 A", current_A=5.2e-7).message()
        'until current_above 5e-07 A met by I = 5.2e-07 A'
        """
        if self.seed_id is not None:
            return f"{self.rule} met by seed {self.seed_id} (frame {self.frame})"
        return f"{self.rule} met by I = {self.current_A:.4g} A"


_TRIGGER = re.compile(r"(?P<rule>.+?) met by (?:seed (?P<seed>\d+) \(frame (?P<frame>-?\d+)\)|I = (?P<i>\S+) A)")


def parse_trigger(message: str) -> Trigger | None:
    """The :class:`Trigger` a ``trigger`` event's message names (None when it names none).

    Example
    -------
    >>> parse_trigger("on_seed blank met by seed 2 (frame 9)")
    Trigger(rule='on_seed blank', seed_id=2, frame=9, current_A=None)
    """
    m = _TRIGGER.match(message)
    if m is None:
        return None
    if m["seed"] is not None:
        return Trigger(m["rule"], seed_id=int(m["seed"]), frame=int(m["frame"]))
    return Trigger(m["rule"], current_A=float(m["i"]))


class UntilWatch:
    """The ``until`` conditions of one step, armed at clock time ``t_start_s`` (s).

    Examples
    --------
    >>> w = UntilWatch(Until(seeds=2, current_above=1e-7), t_start_s=100.0)
    >>> w.current(5e-8) is None
    True
    >>> w.seed(SeedRecord(101.0, 1, 5.0, 5.0, 3, 4, 99.0)) is None    # confirmed before the step began
    True
    >>> w.seed(SeedRecord(120.0, 2, 9.0, 9.0, 5, 6, 110.0)) is None
    True
    >>> w.seed(SeedRecord(140.0, 3, 20.0, 9.0, 6, 7, 135.0)).message()
    'until seeds 2 met by seed 3 (frame 7)'
    """

    def __init__(self, until: Until, t_start_s: float):
        self.until = until
        self.t_start_s = float(t_start_s)
        self.n_seeds = 0

    def seed(self, rec: SeedRecord) -> Trigger | None:
        """Count a confirmed seed; the trigger when it makes ``seeds: N``."""
        if self.until.seeds is None or rec.confirm_time_s < self.t_start_s:
            return None
        self.n_seeds += 1
        if self.n_seeds == self.until.seeds:
            return Trigger(f"until seeds {self.until.seeds}", seed_id=rec.seed_id, frame=rec.confirm_frame)
        return None

    def current(self, current_A: float) -> Trigger | None:
        """Judge one current reading (A); the trigger when it is above / below a threshold."""
        u = self.until
        if u.current_above is not None and current_A > u.current_above:
            return Trigger(f"until current_above {u.current_above:g} A", current_A=float(current_A))
        if u.current_below is not None and current_A < u.current_below:
            return Trigger(f"until current_below {u.current_below:g} A", current_A=float(current_A))
        return None


def seed_trigger(on_seed: str, rec: SeedRecord) -> Trigger | None:
    """The ``on_seed`` rule's trigger for a confirmed seed (None for ``none``).

    Example
    -------
    >>> seed_trigger("blank", SeedRecord(10.0, 4, 1.0, 2.0, 5, 7, 9.5)).message()
    'on_seed blank met by seed 4 (frame 7)'
    """
    if on_seed not in ON_SEED_ACTIONS:
        return None
    return Trigger(f"on_seed {on_seed}", seed_id=rec.seed_id, frame=rec.confirm_frame)
