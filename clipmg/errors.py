"""Errors a user can act on. The CLI prints their message (no traceback) and exits with 2."""


class ClipmgError(Exception):
    """Base class: the message alone must tell the user what is wrong and where."""


class DataError(ClipmgError):
    """Bad metadata, labels or splits. The message names the file, and the row and column."""


class ImageError(DataError):
    """An image that cannot be read or decoded. The message names the file."""


class ModelError(ClipmgError):
    """Unknown backend or model name, missing weights, tokenizer/model mismatch."""


class CheckpointError(ClipmgError):
    """A checkpoint folder that is missing, incomplete or from another backend."""


class TrainingError(ClipmgError):
    """Training cannot go on (NaN loss, bad config); the last good checkpoint is kept."""


class OutputError(ClipmgError):
    """A place the results cannot be written to (a folder where a file is wanted, a parent that is
    a file, no permission, a full disk). The message names the path and says what was kept."""


class Preempted(ClipmgError):
    """Training stopped on a preemption signal after saving `last/` with its exact-resume state.

    The CLI exits with `exit_status`, 75 (EX_TEMPFAIL in sysexits.h: a temporary failure, try
    again), not 143 (128 + SIGTERM): a shell reports 143 for a process the signal killed
    outright, and a requeue script must tell a run that saved (resume it) from one that did not."""

    exit_status = 75
