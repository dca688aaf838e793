"""Test database setup: created and migrated as the owner role, used as the app role.

Tests then run exactly as the web app and workers do, with Row Level Security in force.
"""

import base64
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from psycopg import sql

from csm.db_roles import app_role_name, as_owner


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        with as_owner():
            config = setup_databases(verbosity=0, interactive=False, keepdb=False)
            if app_role_name() != settings.DATABASE_OWNER["USER"]:
                # Test-only: transactional tests reset tables with TRUNCATE between tests.
                # The app role never gets TRUNCATE outside the test database (it ignores RLS).
                with connections["default"].cursor() as cursor:
                    cursor.execute(
                        sql.SQL("GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO {}").format(
                            sql.Identifier(app_role_name())
                        )
                    )
    yield
    with django_db_blocker.unblock(), as_owner():
        teardown_databases(config, verbosity=0)


@pytest.fixture
def subprocess_env(django_db_setup):
    """Environment for a child process (worker, command) that must use this test database."""
    import os
    from urllib.parse import quote

    def url(cfg: dict) -> str:
        password = f":{quote(cfg['PASSWORD'])}" if cfg.get("PASSWORD") else ""
        host = cfg.get("HOST") or cfg.get("OPTIONS", {}).get("host") or ""  # a socket dir may sit in OPTIONS
        port = f":{cfg['PORT']}" if cfg.get("PORT") and not host.startswith("/") else ""
        name = connections["default"].settings_dict["NAME"]
        if host.startswith("/"):
            return f"postgresql://{quote(cfg['USER'])}{password}@/{name}?host={quote(host, safe='')}"
        return f"postgresql://{quote(cfg['USER'])}{password}@{host}{port}/{name}"

    env = dict(os.environ)
    env.update(
        DATABASE_URL=url(settings.DATABASE_APP),
        DATABASE_OWNER_URL=url(settings.DATABASE_OWNER),
        REDIS_URL=settings.REDIS_URL,
        VIGIL_CREDENTIAL_KEYS=settings.VIGIL_CREDENTIAL_KEYS or _dev_credential_keys(),
    )
    return env


def _dev_credential_keys() -> str:
    from integrations.credentials import _dev_key_file

    return _dev_key_file()


_TEST_CREDENTIAL_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture(autouse=True)
def empty_cache():
    """The cache is the shared Redis one: each test starts without what another left there."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def credential_keys(settings):
    """Tests run with DEBUG off, where a credential key must be configured: give them one."""
    if not settings.VIGIL_CREDENTIAL_KEYS:
        settings.VIGIL_CREDENTIAL_KEYS = _TEST_CREDENTIAL_KEY


@pytest.fixture
def celery_worker_queue(tmp_path, subprocess_env):
    """Start a real `celery worker` on the test database and a fresh queue of its own (other test runs
    sharing the same Redis never take its tasks, nor it theirs); yield the queue name; stop it and drop
    the queue. Set VIGIL_SHOW_WORKER_LOG=1 to print its log."""
    from csm.celery import app as celery_app

    queue = f"vigil-test-{uuid.uuid4().hex[:10]}"
    # Retries back off from one second here, so a retried run shows within the test.
    env = {**subprocess_env, "NIGHTLY_RETRY_BASE_SECONDS": "1"}
    log_path = tmp_path / "worker.log"
    celery = Path(sys.executable).parent / "celery"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                str(celery),
                "-A",
                "csm",
                "worker",
                "-P",
                "solo",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--loglevel",
                "INFO",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while b"ready." not in log_path.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield queue
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        with celery_app.connection_for_write() as broker:
            channel = broker.default_channel
            channel.queue_delete(queue)
        if os.environ.get("VIGIL_SHOW_WORKER_LOG"):
            print(log_path.read_text())
