"""Reads about the connected sources shown outside the Integrations page."""

from dataclasses import dataclass
from datetime import datetime

from integrations.models import Connection, ConnectionStatus


@dataclass
class SourceFreshness:
    name: str
    last_success_at: datetime | None
    failed: bool
    error: str


def source_freshness(*, org) -> list[SourceFreshness]:
    """Each connected source with the age of its data and, if its last sync failed, why."""
    connections = Connection.objects.filter(org=org).exclude(status=ConnectionStatus.DISCONNECTED)
    return [
        SourceFreshness(
            name=connection.get_provider_display(),
            last_success_at=connection.last_success_at,
            failed=connection.status == ConnectionStatus.FAILING,
            error=connection.last_error,
        )
        for connection in connections.order_by("provider")
    ]
