"""Importing this package registers every connector (one module per provider)."""

from integrations.providers import (
    hubspot,  # noqa: F401
    intercom,  # noqa: F401
    salesforce,  # noqa: F401
    segment,  # noqa: F401
    stripe,  # noqa: F401
    zendesk,  # noqa: F401
)
