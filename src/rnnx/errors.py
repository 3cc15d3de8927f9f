"""The exceptions rnnx raises. Catch `RnnxError` to catch them all.

Every message is written for the person at the command line: which file, which
layer, what was found, and what to do about it.
"""


class RnnxError(Exception):
    """Root of every error rnnx raises on purpose (the CLI exits 2 on these)."""


class FormatError(RnnxError):
    """The file is not what its reader expects: truncated, foreign, inconsistent shapes."""


class UnsupportedError(RnnxError):
    """The source holds something the target cannot express (a feature, a layer, a format)."""


class UsageError(RnnxError):
    """The request itself is wrong: DST equals SRC, an unknown option value, a missing file."""


class VerificationError(RnnxError):
    """A converted file does not compute what its source computes (the CLI exits 1)."""


class DeadlineError(RnnxError):
    """The work ran past its deadline (--timeout, timeout=) and was stopped; no partial file is left."""
