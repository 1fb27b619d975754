"""Models as the user names them: what a model reference is and chatapp's own
models (registry.py), other programs' models on this machine (discovery.py),
from a name or path to a reference (resolve.py), how models are labelled and
listed (listing.py), and from a reference to a running backend (opening.py)."""
