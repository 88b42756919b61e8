"""Writing output files atomically: figures, screenshots and exports use the one helper of the project
(:mod:`app.atomic`): a temporary file beside the target, then renamed, so a failure never leaves a half-written
file; the result gets the permissions a plain open() would give."""

from app.atomic import atomic_output

__all__ = ["atomic_output"]
