"""One exception type for every problem a user can fix (bad input, missing files, bad params).

The CLI turns it into a one-paragraph message and exit status 2, without a traceback."""


class UserError(Exception):
    """A problem with the user's input, named precisely enough to fix."""
