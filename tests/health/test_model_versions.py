"""The health model is versioned: a change makes a new version and past scores keep theirs."""

from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError

from csm.tenancy import tenant
from health.models import HealthModel, HealthScore
from health.services import health_model_update, health_scores_compute
from tests.factories import local_dt, make_account, make_activity, make_member, make_org, make_usage

pytestmark = pytest.mark.django_db

D = date(2026, 3, 16)


@pytest.fixture
def org():
    return make_org(timezone_name="Europe/Paris")


def test_an_update_makes_a_new_version_and_keeps_the_old_one(org):
    admin = make_member(org, role="admin")
    with tenant(org):
        new = health_model_update(org=org, weights={"usage": 50}, stale_after_days=3, user=admin)
        versions = list(HealthModel.objects.filter(org=org).order_by("version"))
    assert [m.version for m in versions] == [1, 2]
    assert versions[0].weights["usage"] == 30 and versions[0].stale_after_days == 7
    assert new.weights == {"usage": 50, "engagement": 25, "support": 15, "billing": 15, "onboarding": 15}
    assert new.stale_after_days == 3 and new.created_by == admin


@pytest.mark.parametrize(
    "change, message",
    [
        ({"weights": {"usage": -1}}, "0 or more"),
        ({"weights": {"mood": 5}}, "Unknown components"),
        ({"bands": {"green": 30, "yellow": 40}}, "yellow < green"),
        ({"gates": {"red_cap": 55}}, "red band"),
    ],
)
def test_an_update_that_makes_no_sense_is_refused(org, change, message):
    with tenant(org), pytest.raises(ValidationError, match=message):
        health_model_update(org=org, **change)
    with tenant(org):
        assert HealthModel.objects.filter(org=org).count() == 1


def test_a_score_stored_with_an_older_version_is_never_rewritten(org):
    account = make_account(org)
    for n in range(5):
        make_usage(org, account, day=D - timedelta(days=n), active_users=4)
    make_activity(org, account, occurred_at=local_dt(org, D))
    with tenant(org):
        health_scores_compute(org=org, day=D)
        first = HealthScore.objects.get(org=org, date=D)
        health_model_update(org=org, weights={"engagement": 0})

        counts = health_scores_compute(org=org, day=D)
        kept = HealthScore.objects.get(org=org, date=D)
        assert counts["scores_kept"] == 1 and counts["model_version"] == 2
        assert (kept.model_version, kept.score, kept.components) == (1, first.score, first.components)

        health_scores_compute(org=org, day=D + timedelta(days=1))
        next_day = HealthScore.objects.get(org=org, date=D + timedelta(days=1))
    assert next_day.model_version == 2 and "engagement" not in next_day.components
    assert next_day.delta == next_day.score - first.score


def test_saving_the_model_in_the_admin_creates_a_new_version(org, client):
    admin = make_member(org, role="admin")
    client.force_login(admin)
    session = client.session
    session["org_slug"] = org.slug
    session.save()
    with tenant(org):
        current = HealthModel.objects.get(org=org)

    response = client.post(
        f"/admin/health/healthmodel/{current.pk}/change/",
        {
            "weights": '{"usage": 40, "engagement": 20, "support": 15, "billing": 15, "onboarding": 10}',
            "bands": '{"green": 75, "yellow": 45}',
            "gates": '{"invoice_past_due_days": 45, "champion_gone": true, "red_cap": 39}',
            "stale_after_days": "10",
        },
    )

    assert response.status_code == 302
    with tenant(org):
        versions = list(HealthModel.objects.filter(org=org).order_by("version"))
    assert [(m.version, m.bands["green"], m.stale_after_days) for m in versions] == [(1, 70, 7), (2, 75, 10)]
    assert versions[1].created_by == admin

    refused = client.post(
        f"/admin/health/healthmodel/{versions[1].pk}/change/",
        {
            "weights": '{"usage": 40}',
            "bands": '{"green": 30, "yellow": 45}',
            "gates": '{"red_cap": 20}',
            "stale_after_days": "7",
        },
    )
    assert refused.status_code == 200, refused.status_code
    assert "yellow &lt; green" in str(refused.context["adminform"].form.errors), refused.context[
        "adminform"
    ].form.errors
