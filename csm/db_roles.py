"""The two database roles: the owner that migrates, and the app role everything else uses.

The app role is created NOSUPERUSER NOBYPASSRLS so Row Level Security always applies to it.
"""

from contextlib import contextmanager

from django.conf import settings
from django.db import connections
from psycopg import sql

_CREDENTIAL_KEYS = ("USER", "PASSWORD", "HOST", "PORT", "OPTIONS")


@contextmanager
def as_owner(alias: str = "default"):
    """Run the block connected as the owner role (migrations, test database setup)."""
    connection = connections[alias]
    current = {key: connection.settings_dict.get(key) for key in _CREDENTIAL_KEYS}
    owner = {key: settings.DATABASE_OWNER.get(key) for key in _CREDENTIAL_KEYS}
    if current == owner:
        yield
        return
    connection.close()
    connection.settings_dict.update(owner)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(current)


def app_role_name() -> str:
    return settings.DATABASE_APP["USER"]


def ensure_app_role(cursor) -> None:
    """Create the app role if missing and make sure it can never bypass RLS."""
    role = app_role_name()
    owner = settings.DATABASE_OWNER["USER"]
    if role == owner:
        # One role for both: RLS is still forced on every tenant table, but the owner could
        # switch it off. Production must give DATABASE_URL its own role.
        return
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
    password = settings.DATABASE_APP.get("PASSWORD") or None
    if cursor.fetchone() is None:
        cursor.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    else:
        cursor.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER NOBYPASSRLS").format(sql.Identifier(role)))


def grant_app_role(cursor) -> None:
    """Give the app role data access (no DDL, no TRUNCATE: TRUNCATE ignores RLS)."""
    role = sql.Identifier(app_role_name())
    if app_role_name() == settings.DATABASE_OWNER["USER"]:
        return
    cursor.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
    cursor.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(role))
    cursor.execute(sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
