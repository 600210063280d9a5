"""The one exception type the core raises for bad input: a ValueError whose message names the cause."""


class SanaError(ValueError):
    """Bad input: the message names the file or value, what was found and what was expected."""
