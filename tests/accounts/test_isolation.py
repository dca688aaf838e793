"""Row Level Security: every tenant table is isolated, and the app role cannot escape it."""

import pytest
from django.db import DatabaseError, connection, transaction

from accounts.models import Account
from csm import rls
from csm.tenancy import tenant
from tests.factories import make_account, make_org

pytestmark = pytest.mark.django_db


def test_every_tenant_model_has_an_enabled_forced_policy():
    tables = {model._meta.db_table for model in rls.tenant_models()}
    assert "accounts_account" in tables and "signals_signal" in tables
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname)
            FROM pg_class c WHERE c.relname = ANY(%s)
            """,
            [list(tables)],
        )
        rows = {name: (enabled, forced, policies) for name, enabled, forced, policies in cursor.fetchall()}
    assert set(rows) == tables
    unprotected = {name: row for name, row in rows.items() if row != (True, True, 1)}
    assert unprotected == {}


def test_app_role_is_neither_superuser_nor_bypassrls():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, session_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        current_user, session_user, is_super, bypass = cursor.fetchone()
    assert current_user == session_user
    assert (is_super, bypass) == (False, False)


def test_raw_sql_without_a_tenant_sees_no_rows_of_any_tenant_table():
    org = make_org()
    make_account(org)
    with connection.cursor() as cursor:
        for model in rls.tenant_models():
            cursor.execute(f'SELECT count(*) FROM "{model._meta.db_table}"')
            assert cursor.fetchone()[0] == 0, model._meta.db_table


def test_tenant_sees_only_its_rows_and_cannot_write_another():
    org_a, org_b = make_org(), make_org()
    make_account(org_a, name="Alpha Corp")
    b_account = make_account(org_b, name="Beta Corp")
    with tenant(org_a):
        assert list(Account.objects.values_list("name", flat=True)) == ["Alpha Corp"]
        assert not Account.objects.filter(pk=b_account.pk).exists()
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO accounts_account (org_id, external_id, name, domain, tier, arr, currency, plan,"
                    " stage, created_at, updated_at) VALUES (%s, 'X', 'Sneaky', '', '', 0, 'USD', '', 'steady',"
                    " now(), now())",
                    [org_b.pk],
                )
        updated = Account.objects.filter(pk=b_account.pk).update(name="Hijacked")
        assert updated == 0
    with tenant(org_b):
        assert Account.objects.get(pk=b_account.pk).name == "Beta Corp"


def test_leaving_a_tenant_restores_the_previous_setting():
    org_a, org_b = make_org(), make_org()
    make_account(org_a)
    make_account(org_b)
    with tenant(org_a):
        with tenant(org_b):
            assert Account.objects.get().org_id == org_b.pk
        assert Account.objects.get().org_id == org_a.pk
    assert Account.objects.count() == 0
