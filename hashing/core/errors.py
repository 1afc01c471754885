"""The one exception a user can cause (the CLI prints its message on one line and exits non-zero), the
one warning (the CLI prints it on one line and goes on), and the words for a full disk."""

import errno

# An OSError of a full disk, in the words every message about one uses (the CLI, the service, moves).
FULL_DISK = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}


def full_disk(e: BaseException) -> str | None:
    """'no space left' (ENOSPC) or 'disk quota exceeded' (EDQUOT) when `e` is the OSError of a full disk,
    else None."""
    return FULL_DISK.get(e.errno) if isinstance(e, OSError) else None


class HashingError(Exception):
    """A problem with the user's input (a path, a file, an option), with what to do about it.

    `settings`: the settings the message names, each written in it as its bare keyword name (the Python
    keyword of the library function: "radius", "k", "move_to"), e.g.
    `HashingError(f"radius must be from 0 to {bits}, got {radius}", settings=("radius",))`. The library
    and the service show the message as it is; the CLI writes each of those words as the flag of the
    command that was run (--radius, -k, --move-to; hashing.cli.main.flag_names)."""

    def __init__(self, message: str = "", settings: tuple[str, ...] = ()):
        super().__init__(message)
        self.settings = tuple(settings)


class TooLarge(HashingError):
    """An input over a size limit (an image's pixels, a request's body): the service answers 413."""


class HashingWarning(UserWarning):
    """Something the user should know, and can act on, that does not stop the work (too few images for the
    code length): `warnings.warn(text, HashingWarning)`, or `warnings.warn(HashingWarning(text, settings=...))`
    for a text that names settings (as HashingError's); the CLI prints "warning: text" on stderr."""

    def __init__(self, message: str = "", settings: tuple[str, ...] = ()):
        super().__init__(message)
        self.settings = tuple(settings)
