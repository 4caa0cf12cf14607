"""Loading errors, in a module without heavy imports so the CLI can catch them cheaply."""

from __future__ import annotations


class CheckpointError(ValueError):
    """The model cannot be loaded: not found, not fetchable, or its tensors do not match the config
    (the message names the offending tensors / fields)."""


class ConfigError(CheckpointError):
    """config.json describes a model this implementation does not support (the message names what)."""
