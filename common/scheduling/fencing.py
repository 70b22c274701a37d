"""What a fenced write's refusal means to the leader that made it.

Its own module so that everything the leader runs during a term (the placement loop in
scheduler.py, the composite coordinator in composite.py) ends the term the same way, without
importing one another.
"""

from __future__ import annotations


class Deposed(Exception):
    """A fenced write was rejected as stale: a newer leader has taken over."""
