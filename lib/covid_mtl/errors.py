"""The one exception type the project raises for bad input."""


class CovidMTLError(ValueError):
    """Bad input or an unusable file; the message names the file and the problem."""
