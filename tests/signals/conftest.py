"""A real Celery worker, in its own process, on the test database and the real Redis.

The worker listens on a queue of its own, so other test runs sharing the same Redis never take
its tasks, and it never takes theirs.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings
from django.db import connection

from csm.celery import app as celery_app

BASE_DIR = Path(settings.BASE_DIR)
READY_TIMEOUT = 90


def database_url(settings_dict: dict, name: str) -> str:
    """A DATABASE_URL for these connection settings, pointed at database `name`."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = user + (f":{quote(password, safe='')}" if password else "")
    host = settings_dict.get("HOST") or ""
    query = {key: value for key, value in (settings_dict.get("OPTIONS") or {}).items() if isinstance(value, str)}
    if host.startswith("/"):
        query["host"], host = host, ""
    port = settings_dict.get("PORT")
    netloc = f"{auth}@{host}" + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(name)}" + (f"?{urlencode(query)}" if query else "")


@pytest.fixture
def celery_worker_queue(tmp_path):
    """Start `celery worker` on a fresh queue; yield the queue name; stop it and drop the queue."""
    queue = f"vigil-test-{uuid.uuid4().hex[:10]}"
    test_database = connection.settings_dict["NAME"]
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict, test_database),
        "DATABASE_OWNER_URL": database_url(settings.DATABASE_OWNER, test_database),
        "REDIS_URL": settings.REDIS_URL,
        # Retries back off from one second here, so a retried run shows within the test.
        "NIGHTLY_RETRY_BASE_SECONDS": "1",
    }
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
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
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
