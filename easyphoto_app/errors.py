"""Typed refusals. Each carries one human sentence; the CLI maps them to exit 2."""


class UserError(Exception):
    """Bad input or a state the user can fix (message is shown as is)."""


class BusyError(UserError):
    """Another GPU job is already running."""


class OutOfMemoryError(UserError):
    """The device ran out of memory; the message names what to lower."""


def oom_message(what_to_lower: str) -> str:
    return f"Out of memory. Lower {what_to_lower}, or close other programs using the GPU, then try again."
