"""Errors that stlens reports to users with a clear message (the CLI prints them without a traceback)."""


class StlensError(Exception):
    """A problem with the user's input: a file, a layer, an option or the data."""
