"""A throwaway PostgreSQL server for tests, run from Debian's `postgresql` package binaries.

    server = PostgresServer.start()          # initdb into a temporary folder, pg_ctl start
    dsn = server.create_database("test_x")   # a fresh database per test
    server.stop()                            # pg_ctl stop -m immediate, folder removed

The cluster trusts local connections (no password) as user `wayfarer`, listens on 127.0.0.1 at a
free port and runs with fsync=off: tests kill clients, never this server, so durability across a
power cut is not what they check. initdb refuses to run as root, so under root (CI, this
machine) the folders belong to the `postgres` system user the Debian package creates and the
binaries run through `runuser -u postgres --`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "wayfarer"
INSTALL_HINT = (
    "`make test` installs it (its setup-test step apt-get installs Debian's postgresql package); "
    "or run `apt-get install postgresql`"
)


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server did not start."""


def find_postgres_bin() -> Path:
    """The folder holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)

    candidates = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (path.parent / "pg_ctl").exists() and (path.parent / "postgres").exists()
    ]
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) are neither on PATH nor under "
            f"/usr/lib/postgresql/*/bin; the vote store tests need a real server: {INSTALL_HINT}"
        )
    return max(candidates, key=version)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, root: Path, port: int, bindir: Path, run_as: list[str]):
        self.root = root
        self.port = port
        self.bindir = bindir
        self._run_as = run_as

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    @classmethod
    def start(cls) -> "PostgresServer":
        bindir = find_postgres_bin()
        # Not under pytest's tmp_path: its parents are private to root, and the server may run as
        # `postgres`. mkdtemp makes a folder only its owner can enter.
        root = Path(tempfile.mkdtemp(prefix="wayfarer-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                shutil.chown(root, "postgres", "postgres")
            except LookupError as err:
                shutil.rmtree(root, ignore_errors=True)
                raise PostgresUnavailable(
                    f"running as root, and there is no `postgres` system user to run initdb as: {INSTALL_HINT}"
                ) from err
            run_as = ["runuser", "-u", "postgres", "--"]
        server = cls(root, _free_port(), bindir, run_as)
        sockets = root / "sockets"
        try:
            server._run("initdb", "-D", str(server.data_dir), "-A", "trust", "-U", SUPERUSER, "--no-sync",
                        "-E", "UTF8", "--locale=C")
            server._run("mkdir", str(sockets), binary=False)
            options = (
                f"-k {sockets} -p {server.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=200 -c full_page_writes=off"
            )
            server._run("pg_ctl", "-D", str(server.data_dir), "-l", str(server.log_file), "-o", options,
                        "-w", "-t", "60", "start")
        except PostgresUnavailable:
            server._remove()
            raise
        return server

    def _run(self, program: str, *args: str, binary: bool = True) -> None:
        command = [*self._run_as, str(self.bindir / program) if binary else program, *args]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
            raise PostgresUnavailable(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}\n{log}"
            )

    def _admin(self):
        import psycopg

        return psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its DSN."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop it, closing what a test left connected."""
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
