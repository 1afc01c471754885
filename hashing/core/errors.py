"""The one exception a user can cause (the CLI prints its message on one line and exits non-zero), and the
one warning (the CLI prints it on one line and goes on)."""


class HashingError(Exception):
    """A problem with the user's input (a path, a file, an option), with what to do about it."""


class TooLarge(HashingError):
    """An input over a size limit (an image's pixels, a request's body): the service answers 413."""


class HashingWarning(UserWarning):
    """Something the user should know, and can act on, that does not stop the work (too few images for the
    code length): `warnings.warn(text, HashingWarning)`; the CLI prints "warning: text" on stderr."""
