"""The one exception a user can cause; the CLI prints its message on one line and exits non-zero."""


class HashingError(Exception):
    """A problem with the user's input (a path, a file, an option), with what to do about it."""


class TooLarge(HashingError):
    """An input over a size limit (an image's pixels, a request's body): the service answers 413."""
