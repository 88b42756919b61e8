"""User-facing errors.

Everything a user can cause (bad file, wrong model, impossible option) raises a subclass of
:class:`MatchGenError` with a message meant to be read by that user. The CLI turns these into one
line on stderr and exit code 2; the GUI turns them into a dialog. Anything else is a bug.
"""


class MatchGenError(Exception):
    """Base class of errors caused by input, not by a bug."""


class StudyError(MatchGenError):
    """A study (image volume, DICOM series, mask) cannot be read or does not fit."""


class CheckpointError(MatchGenError):
    """A model checkpoint is missing, corrupt or belongs to another model."""


class OptionError(MatchGenError):
    """An option value is out of range or inconsistent with the others."""


class Cancelled(MatchGenError):
    """Work was cancelled by the caller (a newer GUI request, the user's cancel button)."""


class OutputError(MatchGenError):
    """An output file cannot be written (missing folder, no permission, disk full)."""


class SolverError(MatchGenError):
    """The model cannot be solved on this input: its decoder returns NaN or infinite values at z_o itself."""


class DesktopError(MatchGenError):
    """The desktop lacks something the viewer needs (a display, system libraries of Qt's platform plugin)."""
