"""Writes for connections: connect (credentials encrypted), disconnect, rotate keys, mappings."""

from django.core.exceptions import ValidationError

from integrations import credentials
from integrations.models import AccountMapping, Connection, ConnectionStatus, Provider, SourceRecord, UnmatchedRecord


def connection_save(*, org, provider: str, secrets: dict, settings: dict | None = None) -> Connection:
    """Create or update a connection. Empty secret fields keep the stored value (never shown again)."""
    if provider not in Provider.values:
        raise ValidationError(f"Unknown provider {provider!r}.")
    connection = Connection.objects.filter(org=org, provider=provider).first() or Connection(org=org, provider=provider)
    stored = credentials.decrypt(org_id=org.pk, provider=provider, blob=connection.credentials) if connection.pk else {}
    merged = {**stored, **{k: v for k, v in secrets.items() if v}}
    connection.credentials = credentials.encrypt(org_id=org.pk, provider=provider, values=merged)
    if settings is not None:
        connection.settings = {**connection.settings, **settings}
    connection.status = ConnectionStatus.CONNECTED
    connection.last_error = ""  # new credentials: what failed with the old ones says nothing any more
    connection.save()
    return connection


def connection_disconnect(*, org, connection: Connection) -> None:
    """Forget the credentials and stop syncing; synced data and history stay."""
    connection.credentials = b""
    connection.status = ConnectionStatus.DISCONNECTED
    connection.cursors = {}
    connection.save(update_fields=["credentials", "status", "cursors", "updated_at"])


def credentials_rotate(*, org) -> int:
    """Re-encrypt this organization's credentials with the newest key; returns how many changed."""
    changed = 0
    for connection in Connection.objects.filter(org=org).exclude(credentials=b""):
        if credentials.needs_rotation(connection.credentials):
            values = credentials.decrypt(org_id=org.pk, provider=connection.provider, blob=connection.credentials)
            connection.credentials = credentials.encrypt(org_id=org.pk, provider=connection.provider, values=values)
            connection.save(update_fields=["credentials"])
            changed += 1
    return changed


def mapping_save(*, org, provider: str, external_id: str, account) -> AccountMapping:
    """An admin's explicit match; the unmatched record it resolves leaves the list."""
    mapping, _ = AccountMapping.objects.update_or_create(
        org=org, provider=provider, external_id=external_id, defaults={"account": account}
    )
    UnmatchedRecord.objects.filter(org=org, connection__provider=provider, external_id=external_id).delete()
    # A record matched earlier by a guess (domain) follows the admin's choice from now on.
    SourceRecord.objects.filter(org=org, provider=provider, external_id=external_id).update(account=account)
    if provider == Provider.SEGMENT:
        from integrations.intake import parked_replay

        parked_replay(org=org, key=external_id, account_id=account.pk)
    elif mapping_rereads(provider):
        # What the source sent before matched nothing and was left out (an organization's tickets, a
        # company's deals): its next sync reads everything again from the start so they land now.
        # Records are upserted by their ids, so nothing doubles.
        Connection.objects.filter(org=org, provider=provider).update(cursors={})
    return mapping


def mapping_rereads(provider: str) -> bool:
    """Whether a new mapping makes the provider's next sync start over (pushed events cannot be re-asked)."""
    from integrations.sync import connectors

    connector = connectors().get(provider)
    return bool(connector and connector.syncs and connector.reread_after_mapping)
