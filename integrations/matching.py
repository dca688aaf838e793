"""Identity resolution: which account a provider's record belongs to.

In order: the record seen before (SourceRecord), the admin's explicit mapping (an explicit choice
beats any guess), the account's external id, then the domain. Records matching nothing are
recorded as unmatched, never dropped. Each step is one query for the whole page.
"""

from dataclasses import dataclass

from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import Account
from integrations.models import AccountMapping, SourceRecord, UnmatchedRecord

# Addresses at these domains say nothing about which customer they belong to.
FREE_MAIL = {"gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com"}


def normalize_domain(value: str | None) -> str:
    """`https://www.Acme.com/about` or `jane@acme.com` → `acme.com`; free-mail domains → ''."""
    if not value:
        return ""
    text = value.strip().lower()
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.split("/", 1)[0].split(":", 1)[0].removeprefix("www.")
    return "" if text in FREE_MAIL else text


@dataclass
class Candidate:
    external_id: str
    domain: str = ""
    name: str = ""


def resolve_accounts(*, org, provider: str, object_type: str, candidates: list[Candidate]) -> dict[str, int]:
    """{external_id: account_id} for the candidates that match an account."""
    ids = [c.external_id for c in candidates]
    found: dict[str, int] = dict(
        SourceRecord.objects.filter(
            org=org, provider=provider, object_type=object_type, external_id__in=ids
        ).values_list("external_id", "account_id")
    )
    missing = [c for c in candidates if c.external_id not in found]
    if missing:
        by_external = dict(
            Account.objects.filter(org=org, external_id__in=[c.external_id for c in missing]).values_list(
                "external_id", "pk"
            )
        )
        domains = {normalize_domain(c.domain) for c in missing} - {""}
        by_domain = dict(
            Account.objects.filter(org=org)
            .annotate(domain_lower=Lower("domain"))
            .filter(domain_lower__in=domains)
            .order_by("pk")
            .values_list("domain_lower", "pk")
        )
        by_mapping = dict(
            AccountMapping.objects.filter(
                org=org, provider=provider, external_id__in=[c.external_id for c in missing]
            ).values_list("external_id", "account_id")
        )
        for candidate in missing:
            account_id = (
                by_mapping.get(candidate.external_id)
                or by_external.get(candidate.external_id)
                or by_domain.get(normalize_domain(candidate.domain))
            )
            if account_id:
                found[candidate.external_id] = account_id
        remember_sources(
            org=org,
            provider=provider,
            object_type=object_type,
            pairs={c.external_id: found[c.external_id] for c in missing if c.external_id in found},
        )
    return found


def remember_sources(*, org, provider: str, object_type: str, pairs: dict[str, int]) -> None:
    if not pairs:
        return
    SourceRecord.objects.bulk_create(
        [
            SourceRecord(org=org, provider=provider, object_type=object_type, external_id=external_id, account_id=pk)
            for external_id, pk in pairs.items()
        ],
        update_conflicts=True,
        unique_fields=["org", "provider", "object_type", "external_id"],
        update_fields=["account"],
    )


def record_unmatched(*, org, connection, stream: str, candidates: list[Candidate]) -> int:
    """List what matched no account on the connection page; returns how many."""
    if not candidates:
        return 0
    now = timezone.now()
    UnmatchedRecord.objects.bulk_create(
        [
            UnmatchedRecord(
                org=org,
                connection=connection,
                stream=stream,
                external_id=c.external_id,
                name=c.name[:200],
                domain=normalize_domain(c.domain)[:200],
                last_seen_at=now,
            )
            for c in candidates
        ],
        update_conflicts=True,
        unique_fields=["org", "connection", "stream", "external_id"],
        update_fields=["name", "domain", "last_seen_at"],
    )
    return len(candidates)


def forget_unmatched(*, org, connection, stream: str, external_ids: list[str]) -> None:
    """Records that now match leave the unmatched list."""
    if external_ids:
        UnmatchedRecord.objects.filter(
            org=org, connection=connection, stream=stream, external_id__in=external_ids
        ).delete()
