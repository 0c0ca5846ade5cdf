"""Reading a policy's own configuration, a JSON document set in the tenant's pipeline."""

from __future__ import annotations

import json
from typing import Any


class ConfigError(Exception):
    """A policy's configuration was rejected; the message reaches the operator verbatim."""


def from_json(config: str) -> Any:
    """Parses `config` as JSON. An empty or all-whitespace config reads as `{}`, so a
    policy whose parameters all have defaults needs no config at all.

    Raises `ConfigError`, with line and column, when it is not JSON."""
    if not config.strip():
        return {}
    try:
        return json.loads(config)
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid policy config: {e}") from None
