"""Errors Loom raises: one class per kind of failure, each carrying the engine's message.

The engine's status codes map onto these classes in one table (python/src/errors.cc); each also
derives from the built-in exception a Python user would reach for, so ``except ValueError`` and
``except TimeoutError`` keep working.
"""


class Error(Exception):
    """Base of every error Loom raises; ``str(e)`` is the engine's message (it names the culprit)."""


class InvalidArgument(Error, ValueError):
    """A bad request or configuration: wrong input name, dtype or shape, a size over a limit."""


class NotFound(Error, LookupError):
    """No such model (or file)."""


class AlreadyExists(Error):
    """A model of that name is already loaded."""


class ResourceExhausted(Error):
    """The model's queue is full (submit with ``block=True`` to wait for room instead)."""


class DeadlineExceeded(Error, TimeoutError):
    """The request's deadline passed before it ran."""


class Unavailable(Error):
    """The engine is shut down, or the model is being unloaded."""


class Cancelled(Error):
    """The request was withdrawn before it ran."""


class FailedPrecondition(Error):
    """The engine cannot do that in its current state (e.g. not enough cores for a plan)."""


class Unimplemented(Error, NotImplementedError):
    """The backend does not support the model (e.g. an operator OpenCV DNN lacks)."""


class PermissionDenied(Error, PermissionError):
    """A file could not be read."""


class Internal(Error):
    """The backend failed running the model, or a bug in Loom."""


__all__ = ["Error", "InvalidArgument", "NotFound", "AlreadyExists", "ResourceExhausted", "DeadlineExceeded",
           "Unavailable", "Cancelled", "FailedPrecondition", "Unimplemented", "PermissionDenied", "Internal"]
