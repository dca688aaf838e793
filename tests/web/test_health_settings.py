"""Health settings: admins only, a band-change preview from stored components, validated saving."""

from datetime import date

import pytest
from django.urls import reverse

from csm.tenancy import tenant
from health.models import HealthModel
from health.services import health_model_update
from signals.models import SignalThresholds
from tests.factories import make_account, make_member, make_org, make_score

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 20)
CURRENT = {
    "weight_usage": "30",
    "weight_engagement": "25",
    "weight_support": "15",
    "weight_billing": "15",
    "weight_onboarding": "15",
    "green_min": "70",
    "yellow_min": "40",
    "invoice_past_due_days": "30",
    "champion_gone": "on",
    "stale_after_days": "7",
    "silent_days": "10",
    "health_drop_points": "10",
    "go_live_days": "7",
    "follow_up_days": "2",
    "renewal_days": "90",
    "plan_limit_percent": "80",
    "payment_lookback_days": "30",
    "support_spike_min_tickets": "3",
    "support_spike_ratio": "2",
}


def url(org) -> str:
    return reverse("health-settings", args=[org.slug])


def versions(org) -> list[int]:
    with tenant(org):
        return list(HealthModel.objects.filter(org=org).order_by("version").values_list("version", flat=True))


def scored_org():
    """Five accounts scored on DAY with the default weights (usage 30, engagement 25)."""
    org = make_org()
    scores = [
        ({"usage": 80, "engagement": 60}, 70.9, ""),  # green
        ({"usage": 50}, 50, ""),  # yellow, usage only
        ({"engagement": 30}, 30, ""),  # red
        ({"engagement": 90}, 39, "invoice INV-9 is 40 days past due"),  # gated: capped in red
        ({"usage": 20, "engagement": 75}, 45, ""),  # yellow
    ]
    for components, score, gate in scores:
        make_score(org, make_account(org), day=DAY, score=score, components=components, gate=gate)
    return org


@pytest.mark.parametrize("role, status", [("admin", 200), ("leader", 403), ("csm", 403), ("am", 403)])
def test_only_admins_open_health_settings(client, role, status):
    org = make_org()
    client.force_login(make_member(org, role=role))
    assert client.get(url(org)).status_code == status
    assert client.post(url(org), {**CURRENT, "preview": "1"}).status_code == status


def test_the_page_shows_the_current_version_and_who_made_it(client):
    org = make_org()
    admin = make_member(org, role="admin", email="boss@vendor.example")
    with tenant(org):
        health_model_update(org=org, weights={"usage": 50}, user=admin)
    client.force_login(admin)
    html = client.get(url(org)).content.decode()
    assert "version 2" in html and "boss@vendor.example" in html
    assert 'name="weight_usage" value="50"' in html
    settings_page = client.get(reverse("settings", args=[org.slug])).content.decode()
    assert reverse("health-settings", args=[org.slug]) in settings_page


def test_preview_counts_the_accounts_that_would_change_band(client):
    org = scored_org()
    client.force_login(make_member(org, role="admin"))

    unchanged = client.post(url(org), {**CURRENT, "preview": "1"}, HTTP_HX_REQUEST="true")
    assert "0 of 5 accounts" in unchanged.content.decode()

    engagement_only = {**CURRENT, "weight_usage": "0", "weight_engagement": "100", "green_min": "75"}
    response = client.post(url(org), {**engagement_only, "preview": "1"}, HTTP_HX_REQUEST="true")

    preview = response.context["preview"]
    assert [(m.before, m.after, m.accounts) for m in preview.moves] == [("green", "yellow", 1), ("yellow", "green", 1)]
    assert (preview.accounts, preview.changed, preview.not_rescored) == (5, 2, 1)
    assert preview.after == {"green": 1, "yellow": 2, "red": 2}  # the gated account stays red
    html = response.content.decode()
    assert "2 of 5 accounts" in html and "<html" not in html  # a fragment for htmx to swap in
    assert versions(org) == [1]  # a preview saves nothing


def test_preview_without_htmx_renders_the_whole_page(client):
    org = scored_org()
    client.force_login(make_member(org, role="admin"))
    html = client.post(url(org), {**CURRENT, "weight_usage": "0", "preview": "1"}).content.decode()
    assert "Health model and thresholds" in html and "would change band" in html


def test_saving_makes_a_new_version_and_saves_the_thresholds(client):
    org = make_org()
    admin = make_member(org, role="admin")
    client.force_login(admin)
    changed = {**CURRENT, "weight_support": "0", "green_min": "75", "invoice_past_due_days": "", "silent_days": "14"}
    changed.pop("champion_gone")

    response = client.post(url(org), changed, follow=True)

    assert "Saved health model version 2" in response.content.decode()
    with tenant(org):
        saved = HealthModel.objects.get(org=org, version=2)
        thresholds = SignalThresholds.objects.get(org=org)
    assert saved.weights == {"usage": 30, "engagement": 25, "support": 0, "billing": 15, "onboarding": 15}
    assert saved.bands == {"green": 75, "yellow": 40}
    assert (saved.gates["invoice_past_due_days"], saved.gates["champion_gone"]) == (None, False)
    assert saved.created_by == admin
    assert thresholds.silent_days == 14


@pytest.mark.parametrize(
    "change, message",
    [
        ({name: "0" for name in CURRENT if name.startswith("weight_")}, "needs a weight above 0."),
        ({"weight_usage": "-5"}, "greater than or equal to 0"),
        ({"green_min": "40", "yellow_min": "40"}, "Green must start above yellow (40)."),
        ({"green_min": "120"}, "less than or equal to 100"),
        ({"yellow_min": "30"}, "The gate cap must lie in the red band"),  # the service's own rule
        ({"plan_limit_percent": "150"}, "Use a percentage from 1 to 100."),
    ],
)
def test_invalid_settings_are_refused_with_a_message(client, change, message):
    org = make_org()
    client.force_login(make_member(org, role="admin"))
    response = client.post(url(org), {**CURRENT, **change})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert versions(org) == [1]


def test_preview_and_save_touch_only_this_organization(client):
    org, other = scored_org(), scored_org()
    for _ in range(3):  # more accounts elsewhere that would move
        make_score(other, make_account(other), day=DAY, score=71, components={"usage": 10, "engagement": 100})
    client.force_login(make_member(org, role="admin"))
    response = client.post(url(org), {**CURRENT, "weight_usage": "0", "preview": "1"}, HTTP_HX_REQUEST="true")
    assert response.context["preview"].accounts == 5
    client.post(url(org), {**CURRENT, "silent_days": "20"})
    assert versions(other) == [1]
    with tenant(other):
        assert SignalThresholds.objects.get(org=other).silent_days == 10


def test_preview_runs_the_same_queries_for_10_or_50_accounts(client, django_assert_max_num_queries):
    org = make_org()
    client.force_login(make_member(org, role="admin"))

    def add_accounts(count: int) -> None:
        for n in range(count):
            make_score(org, make_account(org), day=DAY, score=50 + n % 40, components={"usage": 50 + n % 40})

    add_accounts(10)
    with django_assert_max_num_queries(20) as ten:
        client.post(url(org), {**CURRENT, "green_min": "60", "preview": "1"}, HTTP_HX_REQUEST="true")
    add_accounts(40)
    with django_assert_max_num_queries(20) as fifty:
        response = client.post(url(org), {**CURRENT, "green_min": "60", "preview": "1"}, HTTP_HX_REQUEST="true")
    assert response.context["preview"].accounts == 50
    assert len(fifty.captured_queries) == len(ten.captured_queries)
