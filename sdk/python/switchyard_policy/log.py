"""Log lines from a policy, written to the router's log under the policy's name.

In Wasm they go through the host's bounded `log` import (512 bytes a line, 32 lines a
call); `print` lands in the same log, as `stdout:` lines. In native tests they are kept
by `switchyard_policy.testing` so a test can assert on them (`take_logs`)."""

from __future__ import annotations

import sys

_RECORDED: list = []

if sys.platform == "wasi":  # inside the component

    def _emit(level: str, message: str) -> None:
        from wit_world.imports import host

        host.log(getattr(host.Level, level.upper()), message)

else:

    def _emit(level: str, message: str) -> None:
        _RECORDED.append(f"{level}: {message}")


def debug(message: str) -> None:
    """Logs at debug level."""
    _emit("Debug", message)


def info(message: str) -> None:
    """Logs at info level."""
    _emit("Info", message)


def warn(message: str) -> None:
    """Logs at warn level."""
    _emit("Warn", message)


def error(message: str) -> None:
    """Logs at error level."""
    _emit("Error", message)
