"""Conversations on disk: one SQLite file (store.py), what can go wrong with it in
words the user can act on (errors.py), full-text search (search.py) and the
sampling inspector's packed data (inspection.py). Callers import from here."""

from chatapp.history.store import *  # noqa: F403 - store.__all__ is the public face
from chatapp.history.store import __all__  # noqa: F401
