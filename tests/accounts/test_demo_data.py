"""demo_data: a realistic, deterministic demo organization, written into its tenant only."""

from datetime import date, timedelta

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.db.models import Count, F, Max, Min, Q, Sum

from accounts.models import Account, Activity, ArrChange, Contact, Invoice, Membership, Organization, Task, UsageDay
from csm.tenancy import tenant
from tests.factories import make_org

pytestmark = pytest.mark.django_db

TODAY = date(2026, 3, 16)


def generate(slug: str, *extra: str, accounts: int = 60, seed: int = 7) -> Organization:
    call_command(
        "demo_data", "--org", slug, "--accounts", str(accounts), "--seed", str(seed), "--today", str(TODAY), *extra
    )
    return Organization.objects.get(slug=slug)


def test_creates_the_org_with_its_team_and_every_stage_and_tier():
    org = generate("acme")
    assert (org.name, org.timezone) == ("Acme", "Europe/Paris")
    with tenant(org):
        roles = dict(Membership.objects.filter(org=org).values_list("user__email", "role"))
        accounts = Account.objects.filter(org=org)
        assert accounts.count() == 60
        assert set(accounts.values_list("stage", flat=True)) == {"onboarding", "adopting", "steady", "churned"}
        assert set(accounts.values_list("tier", flat=True)) == {"enterprise", "mid_market", "smb"}
        assert not accounts.filter(Q(csm=None) | Q(am=None)).exists()
        assert not accounts.filter(stage="churned", churned_on=None).exists()
        assert accounts.filter(stage="onboarding", go_live_date__range=(TODAY, TODAY + timedelta(days=7))).exists()
        assert accounts.filter(renewal_date__range=(TODAY, TODAY + timedelta(days=90))).exists()
    assert roles["admin@acme.demo"] == "admin" and roles["leader@acme.demo"] == "leader"
    assert {"csm1@acme.demo", "csm3@acme.demo", "am1@acme.demo", "am2@acme.demo"} <= set(roles)
    assert authenticate(username="csm2@acme.demo", password="vigil-demo") is not None


def test_usage_covers_ninety_days_ending_today_for_live_accounts_only():
    org = generate("acme")
    with tenant(org):
        span = UsageDay.objects.filter(org=org).aggregate(first=Min("date"), last=Max("date"))
        churned_with_usage = UsageDay.objects.filter(org=org, account__stage="churned").count()
        live_without_usage = Account.objects.exclude(stage="churned").filter(usage_days=None).count()
        near_limit = list(
            UsageDay.objects.filter(org=org, date=TODAY, account__seat_limit__gt=0).values_list(
                "seats_used", "account__seat_limit"
            )
        )
    assert span == {"first": TODAY - timedelta(days=89), "last": TODAY}
    assert churned_with_usage == 0 and live_without_usage == 0
    assert any(seats >= 0.8 * limit for seats, limit in near_limit)


def test_the_story_has_blocked_tasks_silent_accounts_overdue_client_tasks_and_failed_payments():
    org = generate("acme")
    with tenant(org):
        blocked = Task.objects.filter(org=org, status="blocked").count()
        overdue_client = (
            Task.objects.filter(org=org, owner_side="client", due_date__lte=TODAY - timedelta(days=2))
            .exclude(status="done")
            .count()
        )
        last_client_activity = dict(
            Account.objects.filter(org=org)
            .exclude(stage="churned")
            .annotate(last=Max("activities__occurred_at", filter=Q(activities__actor_side="client")))
            .values_list("id", "last")
        )
        failed = Invoice.objects.filter(
            org=org, status__in=["past_due", "uncollectible"], issued_at__gte=TODAY - timedelta(days=30)
        ).count()
        champions_per_account = set(
            Contact.objects.filter(org=org, is_champion=True)
            .values("account")
            .annotate(n=Count("id"))
            .values_list("account", "n")
        )
        client_actor_names = set(
            Activity.objects.filter(org=org, actor_side="client").values_list("actor_name", flat=True)
        )
        contact_names = set(Contact.objects.filter(org=org).values_list("name", flat=True))
        changes_per_account = list(ArrChange.objects.filter(org=org).values("account").annotate(n=Count("id")))
    silent = [
        account
        for account, last in last_client_activity.items()
        if last is None or last.astimezone(org.tz).date() <= TODAY - timedelta(days=10)
    ]
    assert blocked > 0 and overdue_client > 0 and failed > 0
    assert 3 <= len(silent) <= 9  # about 10% of the 57 live accounts
    assert len(champions_per_account) == 60 and {n for _, n in champions_per_account} == {1}
    assert client_actor_names <= contact_names
    assert len(changes_per_account) == 60 and max(row["n"] for row in changes_per_account) > 1


def test_histories_are_consistent_with_the_accounts_today():
    org = generate("acme")
    with tenant(org):
        accounts = {a.pk: a for a in Account.objects.filter(org=org)}
        latest_arr = {}
        for account_id, arr in (
            ArrChange.objects.filter(org=org).order_by("effective_date").values_list("account_id", "arr")
        ):
            latest_arr[account_id] = arr
        tasks_changed_before_created = Task.objects.filter(org=org, status_changed_at__lt=F("created_at")).count()
        done_without_completion = Task.objects.filter(org=org, status="done", completed_at=None).count()
    assert {pk: (0 if a.stage == "churned" else a.arr) for pk, a in accounts.items()} == latest_arr
    assert tasks_changed_before_created == 0 and done_without_completion == 0


def test_same_seed_and_day_give_the_same_data_in_another_org():
    first, second = generate("first"), generate("second")

    def fingerprint(org):
        with tenant(org):
            accounts = list(Account.objects.order_by("external_id").values_list("name", "arr"))
            usage = UsageDay.objects.aggregate(Sum("active_users"), Sum("seats_used"), Sum("events"))
            return accounts, usage, Activity.objects.count()

    assert fingerprint(first) == fingerprint(second)
    other = generate("third", seed=8)
    assert fingerprint(other)[0] != fingerprint(first)[0]


def test_existing_accounts_are_refused_unless_replace():
    org = generate("acme", accounts=20)
    with pytest.raises(CommandError, match="already has accounts"):
        generate("acme", accounts=30)
    generate("acme", "--replace", accounts=30)
    with tenant(org):
        assert Account.objects.count() == 30
        assert UsageDay.objects.values("account").distinct().count() == Account.objects.exclude(stage="churned").count()


def test_another_org_sees_none_of_it():
    bystander = make_org()
    generate("acme")
    with tenant(bystander):
        assert not Account.objects.exists()
        assert not UsageDay.objects.exists()
        assert not Activity.objects.exists()
        assert not Membership.objects.filter(user__email__endswith="@acme.demo").exists()
