"""Row Level Security on every tenant table: any model with an `org` foreign key.

The policy compares `org_id` with the transaction-local setting `vigil.org_id`; with no setting
the comparison is NULL, so no row is visible and no row can be written (fail closed).
"""

from django.apps import apps
from django.db import models

CURRENT_ORG = "NULLIF(current_setting('vigil.org_id', true), '')::bigint"
CURRENT_USER = "NULLIF(current_setting('vigil.user_id', true), '')::bigint"
POLICY_NAME = "tenant_isolation"

# A user lists their own memberships before any organization is chosen (the switcher);
# writes still need the organization itself.
EXTRA_VISIBILITY = {
    "accounts_membership": f"user_id = {CURRENT_USER}",
}


def tenant_models() -> list[type[models.Model]]:
    found = []
    for model in apps.get_models():
        try:
            field = model._meta.get_field("org")
        except Exception:
            continue
        if field.is_relation and not model._meta.proxy and model._meta.managed:
            found.append(model)
    return found


def policy_statements(table: str) -> list[str]:
    using = f"org_id = {CURRENT_ORG}"
    if table in EXTRA_VISIBILITY:
        using = f"({using}) OR ({EXTRA_VISIBILITY[table]})"
    return [
        f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
        f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
        f'DROP POLICY IF EXISTS {POLICY_NAME} ON "{table}"',
        f'CREATE POLICY {POLICY_NAME} ON "{table}" USING ({using}) WITH CHECK (org_id = {CURRENT_ORG})',
    ]


def apply_policies(cursor) -> list[str]:
    tables = [model._meta.db_table for model in tenant_models()]
    for table in tables:
        for statement in policy_statements(table):
            cursor.execute(statement)
    return tables
