"""The one exception type for user mistakes.

Library code raises `UserError` with a single line that names the file or option at fault and the
fix; the CLI turns it into `Error: <message>` and exit code 2, never a traceback. Anything else that
escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad path, bad option, mismatched artifacts."""

    exit_code = 2


class InterruptedRun(UserError):
    """A long job was interrupted after saving what it had; re-run with --resume."""

    exit_code = 130


class DivergedRun(UserError):
    """Training produced a non-finite loss; nothing after the last checkpoint was saved."""

    exit_code = 3
