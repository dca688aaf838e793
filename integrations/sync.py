"""The one sync mechanism: every stream reads page by page from its cursor, and each page is
committed together with its advanced cursor, so a crash resumes where it stopped.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from csm.tenancy import tenant
from integrations import credentials
from integrations.http import BudgetExhausted, ProviderClient, ProviderError, RateLimited, RequestBudget
from integrations.models import Connection, ConnectionStatus, SyncRun, SyncStatus

log = logging.getLogger(__name__)


@dataclass
class Page:
    records: list[dict]
    cursor: Any  # stored after this page's records are saved
    done: bool = False


@dataclass
class Applied:
    created: int = 0
    updated: int = 0
    unmatched: int = 0


class Stream:
    name: ClassVar[str]

    def read(self, client: ProviderClient, cursor: Any) -> Iterator[Page]:
        raise NotImplementedError

    def apply(self, *, org, connection: Connection, records: list[dict]) -> Applied:
        raise NotImplementedError


@dataclass
class ConnectorField:
    name: str
    label: str
    secret: bool = True
    help: str = ""
    required: bool = True


class Connector:
    """A provider: the fields an admin fills in, how to build its client, and its streams in order."""

    provider: ClassVar[str]
    credential_fields: ClassVar[list[ConnectorField]] = []
    setting_fields: ClassVar[list[ConnectorField]] = []
    syncs: ClassVar[bool] = True  # False for push-only sources (usage intake)
    purpose: ClassVar[str] = ""  # what the source brings, shown on its card before anything is connected
    # After an admin maps a record that matched nothing, read everything again from the start so what
    # the source sent before lands on the account. False where the connector catches up on its own.
    reread_after_mapping: ClassVar[bool] = True
    # The Integrations page reads `card.connector.syncs` from the class: without this, the template engine
    # calls the class (it is callable), fails, and hides "Sync now" and the progress area on every card.
    do_not_call_in_templates: ClassVar[bool] = True

    def __init__(self, connection: Connection, secrets: dict):
        self.connection = connection
        self.secrets = secrets

    def client(self, budget: RequestBudget) -> ProviderClient:
        raise NotImplementedError

    def streams(self) -> list[Stream]:
        raise NotImplementedError

    @classmethod
    def can_sync(cls, secrets: dict) -> bool:
        """Whether these saved secrets are enough to start a sync (Salesforce first needs its sign-in)."""
        return True

    def test(self, client: ProviderClient) -> str:
        """A cheap authenticated call; returns a sentence saying what it found."""
        raise NotImplementedError


CONNECTORS: dict[str, type[Connector]] = {}


def register(cls: type[Connector]) -> type[Connector]:
    CONNECTORS[cls.provider] = cls
    return cls


def connectors() -> dict[str, type[Connector]]:
    """Every provider's connector, by provider."""
    from integrations import providers  # noqa: F401  (registers the connectors)

    return CONNECTORS


def connector_for(connection: Connection) -> Connector:
    secrets = credentials.decrypt(org_id=connection.org_id, provider=connection.provider, blob=connection.credentials)
    return connectors()[connection.provider](connection, secrets)


@dataclass
class _Progress:
    pages: int = 0
    requests: int = 0
    counts: Applied = field(default_factory=Applied)


def connection_sync(*, org, connection: Connection, trigger: str = "nightly") -> SyncRun:
    """Sync one connection now; returns its finished SyncRun (failed runs keep earlier pages)."""
    with tenant(org):
        run = SyncRun.objects.create(org=org, connection=connection, trigger=trigger, started_at=timezone.now())
    budget = RequestBudget(limit=settings.VIGIL_SYNC_REQUEST_BUDGET)
    error = ""
    status = SyncStatus.SUCCEEDED
    client = None
    try:
        connector = connector_for(connection)
        client = connector.client(budget)
        for stream in connector.streams():
            _sync_stream(org=org, connection=connection, run=run, stream=stream, client=client, budget=budget)
    except (RateLimited, BudgetExhausted) as stop:
        # Not a failure of the data: what was read is saved and the cursor says where to resume.
        error, status = str(stop), SyncStatus.PARTIAL
    except ProviderError as failure:
        error, status = str(failure), SyncStatus.FAILED
    except credentials.CredentialError as failure:
        error = f"The saved credentials cannot be read ({failure}); reconnect this integration."
        status = SyncStatus.FAILED
    except Exception:
        log.exception("sync of connection %s failed", connection.pk)
        error = "The sync stopped on an internal error; it was recorded and the next run retries."
        status = SyncStatus.FAILED
    finally:
        if client is not None:
            client.close()
    failed = status == SyncStatus.FAILED
    now = timezone.now()
    with tenant(org):
        SyncRun.objects.filter(pk=run.pk).update(
            status=status,
            finished_at=now,
            requests=budget.used,
            error=error,
        )
        fields = {"last_error": error, "status": ConnectionStatus.FAILING if failed else ConnectionStatus.CONNECTED}
        if not failed:
            fields["last_success_at"] = now
        Connection.objects.filter(pk=connection.pk).update(**fields)
        run.refresh_from_db()
    return run


def _sync_stream(*, org, connection, run, stream: Stream, client, budget) -> None:
    cursor = connection.cursors.get(stream.name)
    for page in stream.read(client, cursor):
        with tenant(org):
            applied = stream.apply(org=org, connection=connection, records=page.records)
            connection.cursors[stream.name] = page.cursor
            Connection.objects.filter(pk=connection.pk).update(cursors=connection.cursors)
            SyncRun.objects.filter(pk=run.pk).update(
                pages=F("pages") + 1,
                requests=budget.used,
                created=F("created") + applied.created,
                updated=F("updated") + applied.updated,
                unmatched=F("unmatched") + applied.unmatched,
                progress={"stream": stream.name, "records": len(page.records)},
            )
        if page.done:
            break


def sync_all(*, org, day=None) -> dict:
    """The nightly pipeline's sync stage: every connected, pull-based connection of the organization."""
    with tenant(org):
        connections = list(Connection.objects.filter(org=org).exclude(status=ConnectionStatus.DISCONNECTED))
    summary = {}
    for connection in connections:
        if not connectors().get(connection.provider, Connector).syncs:
            continue
        run = connection_sync(org=org, connection=connection, trigger="nightly")
        summary[connection.provider] = {
            "status": run.status,
            "created": run.created,
            "updated": run.updated,
            "error": run.error,
        }
    return summary
