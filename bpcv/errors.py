"""The project's root exception and the rejections receivers log and count."""


class BpcvError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(BpcvError):
    """A configuration file or command-line option is wrong; the message names what."""


class Rejected(BpcvError):
    """An incoming message was refused. ``reason`` is a short stable key for counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DataError(ConfigError):
    """A device's own data does not match the task's schema; the one-line message names the file, the column
    (or value) and what was expected. Raised for bad data, never a traceback."""
