"""Start a real PostgreSQL server on 127.0.0.1 for the tests: a fresh cluster in a temp folder (trust
auth, durability off for speed), one per test session, and one fresh database per test."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .s3servers import free_port

SUPERUSER = "postgres"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH; "
    "install them (Debian: apt-get install -y postgresql) to run the PostgreSQL catalog tests"
)


def postgres_bindir() -> Path:
    """The folder holding `initdb` and `pg_ctl`: the newest /usr/lib/postgresql/<v>/bin, else PATH's.

    Raises RuntimeError saying what to install when there is none."""
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if versioned:
        return Path(versioned[-1]).parent
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    raise RuntimeError(INSTALL_HINT)


def _as_owner() -> list[str]:
    """The command prefix that runs a server binary as an unprivileged user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root, but `runuser` is missing: cannot start PostgreSQL as the postgres user")
    return [runuser, "-u", SUPERUSER, "--"]


def _chown_to_owner(path: str) -> None:
    """Hand the cluster folder to the user the server runs as (a no-op when not root)."""
    if os.geteuid() == 0:
        shutil.chown(path, user=SUPERUSER)


@dataclass
class PostgresServer:
    """A PostgreSQL cluster the tests started, and the URLs of databases in it."""

    port: int
    folder: str
    stop: Any = field(repr=False)
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        """The catalog URL of `database` on this server (trust auth: no password)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "expstore") -> str:
        """A new empty database with a unique name; its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is [a-z0-9_] by construction
        return self.url(name)


def _run(args: list[str], what: str, log: Path | None = None) -> None:
    """Run a server tool; RuntimeError with its output (and the server log) when it fails."""
    done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(args)}\n{done.stdout}\n{done.stderr}\n{tail}")


def start_postgres() -> PostgresServer:
    """initdb a cluster in a temp folder owned by the server's user and start it on a free 127.0.0.1 port."""
    bindir = postgres_bindir()
    prefix = _as_owner()
    folder = tempfile.mkdtemp(prefix="expstore-pg-")
    _chown_to_owner(folder)
    data, log = Path(folder) / "data", Path(folder) / "server.log"
    port = free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": folder,
        "fsync": "off",  # a throwaway test cluster: durability buys nothing here
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "32MB",
        "max_connections": "200",
    }
    options = " ".join(f"-c {k}={v}" for k, v in settings.items())
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]

    def stop() -> None:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "stop", "-m", "fast", "-w", "-t", "60"], check=False, capture_output=True, timeout=90)
        shutil.rmtree(folder, ignore_errors=True)

    try:
        _run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
              "--locale=C", "--no-sync", "--no-instructions"], "initdb")
        _run([*pg_ctl, "start", "-w", "-t", "60", "-l", str(log), "-o", options], "pg_ctl start", log)
    except BaseException:
        stop()
        raise
    return PostgresServer(port, folder, stop)
