"""The one exception type the CLI turns into a single clear error line (and exit status 2)."""


class AzrError(Exception):
    """A user-facing error: the message says what went wrong and what to do."""
