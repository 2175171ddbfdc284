"""Shared fixtures: real registry servers spawned by the test session; short temp
directories and a minimal config for `filterd serve`; a filterctl home (config and
embedded registry) with and without [http]; the reference config, parsed; `filterd serve`
running the SMTP relay (and with opt-outs by mail and DKIM signing) for the tests of the
SMTP relay; a running SMPP relay (`smpp_relay`)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterd.config.load import load as load_config
from filterd.settings import Settings
from filterd.storage.embedded import EmbeddedServer
from tests.cli_helpers import HTTP_SECTIONS
from tests.config_helpers import REFERENCE
from tests.helpers import RedisProcess, SinkServer, aof_args, bundled_valkey, system_redis
from tests.helpers import dkim_key as make_dkim_key
from tests.smpp_relay_helpers import Relay as SmppRelay
from tests.smpp_relay_helpers import running_relay
from tests.smtp_helpers import Relay, start_filterd, start_listeners, stop_filterd, write_config

SERVERS = {"valkey": bundled_valkey(), "redis": system_redis()}


class ServerPool:
    """Session-wide servers, started on first use, one per kind."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self._servers: dict[str, RedisProcess] = {}

    def get(self, kind: str) -> RedisProcess:
        """The running server of `kind` (skips the test when none is installed)."""
        binary = SERVERS[kind]
        if binary is None:
            pytest.skip(f"no {kind} server binary installed")
        if kind not in self._servers:
            directory = Path(self._factory.mktemp(kind, numbered=True))
            self._servers[kind] = RedisProcess(binary, directory, aof_args(binary)).start()
        server = self._servers[kind]
        if server.process is None or server.process.poll() is not None:
            server.start()
        return server

    def close(self) -> None:
        """Stop every server."""
        for server in self._servers.values():
            server.stop()


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The session's servers."""
    pool = ServerPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture
def valkey_server(server_pool: ServerPool) -> RedisProcess:
    """A flushed Valkey server (WAITAOF durability)."""
    server = server_pool.get("valkey")
    flush(server)
    return server


def flush(server: RedisProcess) -> None:
    """Empty a shared server between tests."""
    assert server.command(b"FLUSHALL") == b"+OK"


@pytest.fixture
def event_loop_runner() -> Iterator[asyncio.Runner]:
    """An asyncio runner for tests that drive async code from sync test functions."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp with a short path (unix socket paths must be < 100 chars)."""
    path = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve_config(short_dir: Path) -> Path:
    """A minimal config: only [registry], embedded, data and secret in a short directory."""
    path = short_dir / "filterd.toml"
    path.write_text('[registry]\nurl = "embedded"\ndata_dir = "data"\nsecret_file = "secret/key"\n')
    return path


@pytest.fixture
def home() -> Iterator[Path]:
    """A short directory with a config using the embedded registry, default region CN."""
    directory = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))
    (directory / "filterd.toml").write_text(
        '[registry]\nurl = "embedded"\ndata_dir = "var"\nsecret_file = "var/secret"\n'
        'default_region = "CN"\nrequest_ttl = "30d"\n'
    )
    yield directory
    server = EmbeddedServer(directory / "var")
    if server.alive():  # a test that failed midway may leave it running
        server.acquire()
        server.release()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def http_home(home: Path) -> Path:
    """The home config plus [http] and an account naming the sender acme."""
    with (home / "filterd.toml").open("a") as config:
        config.write(HTTP_SECTIONS)
    return home


# ---- the SMTP relay ([smtp]; opt-outs by mail and DKIM signing) ------------------


@pytest.fixture
def relay(server_pool: ServerPool) -> Iterator[Relay]:
    """filterd relaying to a fresh sink, on a flushed Valkey registry."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="smtp", dir="/tmp"))
    sink = SinkServer().start()
    config = write_config(home, registry_server.url, sink.port)
    try:
        process, reader, port = start_filterd(config)
    except BaseException:
        sink.shutdown()
        raise
    try:
        yield Relay(process, reader, port, sink, registry_server, home)
    finally:
        code = stop_filterd(process)
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert code == 0


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An RSA key file (0600) for [dkim] and the TXT record that publishes it."""
    return make_dkim_key(tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def optout_relay(server_pool: ServerPool, dkim_key: tuple[Path, bytes]) -> Iterator[Relay]:
    """filterd with an unsubscribe domain and listener, a feedback address, [http] and
    [dkim], relaying to a fresh sink."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="smtp", dir="/tmp"))
    sink = SinkServer().start()
    extra = (
        'unsubscribe_domain = "unsub.test"\nunsubscribe_listen = "127.0.0.1:0"\n'
        'feedback_address = "fbl@acme.test"\n'
        '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://u.acme.test"\n'
        f'[dkim]\nselector = "mail"\ndomain = "acme.test"\nkey_file = "{dkim_key[0]}"\n'
    )
    config = write_config(home, registry_server.url, sink.port, extra)
    try:
        process, reader, ports = start_listeners(config, 3)
    except BaseException:
        sink.shutdown()
        raise
    try:
        yield Relay(
            process, reader, ports["smtp"], sink, registry_server, home,
            intake_port=ports["smtp.unsubscribe"],
        )  # fmt: skip
    finally:
        code = stop_filterd(process)
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert code == 0


@pytest.fixture(scope="module")
def reference() -> Settings:
    """The annotated reference config, parsed once."""
    return load_config(REFERENCE)


@pytest.fixture
def smpp_relay(valkey_server: RedisProcess) -> Iterator[SmppRelay]:
    """filterd's SMPP relay bound to a fresh fake carrier, on a flushed Valkey
    registry (the SMPP relay's tests)."""
    with running_relay(valkey_server) as relay:
        yield relay


@pytest.fixture
def private_server() -> Iterator[RedisProcess]:
    """A registry server of the test's own, which it may stop and restart (outages)."""
    binary = bundled_valkey() or system_redis()
    if binary is None:
        pytest.skip("no valkey-server or redis-server binary installed")
    directory = Path(tempfile.mkdtemp(prefix="reg-", dir="/tmp"))
    server = RedisProcess(binary, directory, aof_args(binary)).start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)
