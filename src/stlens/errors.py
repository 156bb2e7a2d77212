"""Errors that stlens reports to users with a clear message (the CLI prints them without a traceback)."""


class StlensError(Exception):
    """A problem with the user's input: a file, a layer, an option or the data.

    Every verb raises it, where it can before any long work starts, with a message that names the Python argument in
    backticks; the command line prints the same message (with the option as typed) and exits with code 2. It takes
    the message, as any ``Exception``.

    Examples:
        >>> try:
        ...     stlens.load_model("stlens:c2d?classes=8&width=4", frames=0)
        ... except stlens.StlensError as error:
        ...     print("refused:", type(error).__name__)
        refused: StlensError
    """
