"""The one family of exceptions for everything a user can get wrong."""

from __future__ import annotations


class RoadmapError(Exception):
    """A user error: bad task file, batch file, setting or tracker.

    The message is one line that names the file or setting and says what is allowed;
    the pytest layer turns it into a usage or collection error, never a traceback.
    """


class TaskFileError(RoadmapError):
    """A task file that cannot be read or does not follow the format."""


class SettingError(RoadmapError):
    """A setting with a value that is not allowed."""


class TrackerError(RoadmapError):
    """A progress tracker file that cannot be read or written."""


class ReportError(RoadmapError):
    """A report folder or file that cannot be created or written."""


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, for error lines: a hostile file's value
    (a megabyte key, a list nested 400 deep) stays one short line."""
    try:
        text = repr(value)
    except RecursionError:  # nested deeper than repr goes
        text = f"<{type(value).__name__} nested too deeply>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
