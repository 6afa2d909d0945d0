"""The project's exception types: bad input, an unusable model file, and a failed internal check."""


class CovidMTLError(ValueError):
    """Bad input or an unusable file; the message names the file and the problem."""


class ModelFileError(CovidMTLError):
    """A model (checkpoint) file that cannot be used. For the CLI that is the user's file; for a server it is the
    server's own model, which the server's status map reports as unavailable, not as the client's input."""


class InternalError(RuntimeError):
    """A check on data the program made itself failed: a bug, never the user's input."""
