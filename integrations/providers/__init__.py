"""Importing this package registers every connector (one module per provider)."""

from integrations.providers import (
    segment,  # noqa: F401
    stripe,  # noqa: F401
)
