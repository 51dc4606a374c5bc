"""The one error type the CLI turns into a single line and a non-zero exit."""


class CoroscopeError(Exception):
    """A failure the user can act on: bad input, missing capability, a target that went away.

    The message is one line, shown as ``coroscope: error: <message>``; ``exit_code`` is the
    process exit status (2 for bad input, 1 for a check that found a problem).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class TargetGone(CoroscopeError):
    """The target process exited or disappeared while being observed."""
