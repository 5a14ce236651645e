"""The column names every source is renamed to, and the roles a split plays in a run.

A *role* is what a split is used for in a run (``train``, ``validation``, ``test``); a *split name* is what the
dataset calls it (``train.clean.100``, ``dev``, ``test[:10%]``). ``data.<role>_split`` maps one to the other.
"""

AUDIO, TEXT, DURATION = "audio", "text", "duration"
ROLES = ("train", "validation", "test")
