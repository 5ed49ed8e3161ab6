"""Throwaway servers for outage tests: a Redis, a PostgreSQL cluster and a RabbitMQ node of the
test's own, on free loopback ports, that a test may stop and start at will without disturbing the
shared servers other test sessions use.

Each is started and stopped synchronously and waits (bounded) until it answers or is gone.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.harness import free_port, wait_for


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run(args: list[str], timeout: float = 60.0, user: str | None = None) -> str:
    if user is not None and os.geteuid() == 0:
        args = ["runuser", "-u", user, "--", *args]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


class RedisServer:
    """``redis-server`` on a free loopback port, without persistence: a restart loses every key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.folder / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_for(self._pong, timeout=15, interval=0.05, what=f"redis on port {self.port}")

    def _pong(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}")
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "ping"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return done.stdout.strip() == "PONG"

    def shutdown(self) -> None:
        """``SHUTDOWN NOSAVE``: the server exits at once and its data is gone."""
        if self.proc is None:
            return
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=10,
        )
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.shutdown()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise AssertionError(f"{name} not found (PostgreSQL server binaries are needed)")
    return on_path


class PostgresCluster:
    """A PostgreSQL cluster of its own (``initdb``), on a free loopback port, trust auth.

    As root, the cluster belongs to and runs as the ``postgres`` OS user, in a temporary folder
    that user owns. ``remove`` stops it and deletes the folder.
    """

    def __init__(self) -> None:
        self.user = "postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="tracking-chaos-pg-"))
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self.data = self.folder / "data"
        self.port = free_port()
        self.superuser = self.user or pwd.getpwuid(os.geteuid()).pw_name

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        _run(
            [_pg_bin("initdb"), "-D", str(self.data), "--auth=trust", "--no-sync", "-U", self.superuser],
            user=self.user,
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\nfsync = off\nmax_connections = 200\n"
            )

    def _pg_ctl(self, *args: str) -> None:
        _run([_pg_bin("pg_ctl"), "-D", str(self.data), *args], user=self.user)

    def start(self) -> None:
        self._pg_ctl("-l", str(self.folder / "server.log"), "-w", "-t", "30", "start")
        wait_for(lambda: _accepts(self.port), timeout=30, what=f"postgres on port {self.port}")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (clients disconnected, clean shutdown) or ``-m immediate``
        (no shutdown checkpoint: crash recovery at the next start)."""
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"tracking_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(
            f"postgresql://{self.superuser}@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class RabbitNode:
    """A RabbitMQ node of its own (its own node name, ports and data folder) on the machine's
    RabbitMQ installation, so that ``stop_app`` hits nobody else's connections.

    As root it runs as the ``rabbitmq`` OS user, which shares its Erlang cookie with ``rabbitmqctl``.
    """

    def __init__(self) -> None:
        self.name = f"tracking-chaos-{uuid.uuid4().hex[:8]}@localhost"
        self.user = "rabbitmq" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="tracking-chaos-rabbit-"))
        (self.folder / "enabled_plugins").write_text("[].\n")
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            for path in (self.folder, self.folder / "enabled_plugins"):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.port = free_port()
        self.dist_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": pwd.getpwnam(self.user).pw_dir if self.user else os.environ.get("HOME", "/"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
        }
        args = ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
        if self.user is not None:
            args = ["runuser", "-u", self.user, "--", "env", *(f"{k}={v}" for k, v in env.items()), *args]
        log = open(self.folder / "server.out", "ab")
        self.proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder
        )
        log.close()
        wait_for(self._listening, timeout=60, interval=0.1, what=f"rabbitmq node {self.name} to listen")
        self.await_startup()

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            out = (self.folder / "server.out").read_text(errors="replace")[-3000:]
            raise AssertionError(f"rabbitmq-server exited with {self.proc.returncode}:\n{out}")
        return _accepts(self.port)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        return _run(["rabbitmqctl", "-q", "-n", self.name, *args], timeout=timeout)

    def await_startup(self) -> None:
        self.ctl("await_startup", "--timeout", "60", timeout=90)
        wait_for(lambda: _accepts(self.port), timeout=30, what=f"rabbitmq on port {self.port}")

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.ctl("stop", timeout=60)
                except (AssertionError, subprocess.TimeoutExpired):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
