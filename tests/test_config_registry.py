"""filterd.config.registry: [registry] with its defaults beside the config file,
plain, Sentinel and Cluster urls, and bad values (shown without their password)
naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError
from filterd.policy import FailMode
from filterd.settings import Settings
from tests.config_helpers import REFERENCE, assert_refused, write


def test_reference_registry(reference: Settings) -> None:
    """[registry]: embedded, 30d request TTL in seconds, closed fail mode, region CN."""
    reg = reference.registry
    assert reg.url == "embedded"
    assert reg.cluster is False
    assert reg.data_dir == REFERENCE.parent / "var"
    assert reg.secret_file == REFERENCE.parent / "var" / "secret"
    assert reg.request_ttl_s == 30 * 86400
    assert reg.fail_mode is FailMode.CLOSED
    assert reg.default_region == "CN"
    assert reg.server is None
    assert reg.bucket_bits == 16
    assert reg.audit_max_entries == 1_000_000
    assert reg.audit_retention_s == 400 * 86400


def test_default_paths_resolve_against_config_directory(tmp_path: Path) -> None:
    """Without [registry] the defaults var and var/secret sit next to the config file."""
    settings = load(write(tmp_path, ""))
    assert settings.registry.data_dir == tmp_path.resolve() / "var"
    assert settings.registry.secret_file == tmp_path.resolve() / "var" / "secret"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    """An absolute data_dir or secret_file is used as written."""
    data = tmp_path / "abs-data"
    secret = tmp_path / "abs-secret"
    path = write(tmp_path / "conf", f'[registry]\ndata_dir = "{data}"\nsecret_file = "{secret}"\n')
    settings = load(path)
    assert settings.registry.data_dir == data
    assert settings.registry.secret_file == secret


BAD_VALUES = [
    pytest.param(
        '[registry]\nrequest_ttl = "30 days"\n', "registry.request_ttl", id="request-ttl-format"
    ),
    pytest.param('[registry]\nrequest_ttl = "0d"\n', "registry.request_ttl", id="request-ttl-zero"),
    pytest.param("[registry]\nrequest_ttl = 30\n", "registry.request_ttl", id="request-ttl-int"),
    pytest.param('[registry]\nfail_mode = "ajar"\n', "registry.fail_mode", id="fail-mode"),
    pytest.param(
        '[registry]\nurl = "http://127.0.0.1:6379"\n', "registry.url", id="url-http-scheme"
    ),
    pytest.param('[registry]\nurl = "localhost:6379"\n', "registry.url", id="url-no-scheme"),
    pytest.param(
        '[registry]\ndefault_region = "XX"\n', "registry.default_region", id="region-unknown"
    ),
    pytest.param(
        '[registry]\ndefault_region = "China"\n', "registry.default_region", id="region-name"
    ),
    pytest.param("[registry]\ncluster = true\n", "registry.cluster", id="cluster-embedded"),
    pytest.param("[registry]\nbucket_bits = 8\n", "registry.bucket_bits", id="bucket-bits"),
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    assert_refused(path, key)


def test_bad_value_message_names_the_value(tmp_path: Path) -> None:
    """The reason quotes the offending value, so an operator can find it."""
    path = write(tmp_path, '[registry]\nurl = "http://127.0.0.1:6379"\n')
    with pytest.raises(ConfigError, match=r"registry\.url: 'http://127\.0\.0\.1:6379'"):
        load(path)


def test_cluster_accepted_with_a_node_url(tmp_path: Path) -> None:
    """cluster = true is accepted with a redis:// or rediss:// url naming any node."""
    for url in ("redis://10.0.0.1:7000", "rediss://:pw@node.example:7000"):
        text = f'[registry]\nurl = "{url}"\ncluster = true\nmin_replicas = 1\n'
        reg = load(write(tmp_path, text)).registry
        assert (reg.url, reg.cluster, reg.min_replicas) == (url, True, 1)


@pytest.mark.parametrize(
    "url", ["unix:///run/redis.sock", "redis+sentinel://10.0.0.1:26379/filterd"]
)
def test_cluster_refused_with_other_urls(tmp_path: Path, url: str) -> None:
    """cluster = true with a unix socket or a sentinel url is a ConfigError on
    registry.cluster naming the url."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, f'[registry]\nurl = "{url}"\ncluster = true\n'))
    assert error.value.key == "registry.cluster"
    assert url in str(error.value)


def test_sentinel_url_accepted_with_one_replica_by_default(tmp_path: Path) -> None:
    """A redis+sentinel:// url (sentinels, service, db, password) is accepted, and each
    write then needs 1 replica's confirmation unless min_replicas says otherwise."""
    url = "redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380,sentinel.example:26381/filterd/2"
    settings = load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert (settings.registry.url, settings.registry.min_replicas) == (url, 1)
    settings = load(write(tmp_path, f'[registry]\nurl = "{url}"\nmin_replicas = 2\n'))
    assert settings.registry.min_replicas == 2
    plain = "redis+sentinel://127.0.0.1:26379/filterd"
    settings = load(write(tmp_path, f'[registry]\nurl = "{plain}"\nmin_replicas = 0\n'))
    assert settings.registry.min_replicas == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://10.0.0.1:99999/0", "the port is not a number from 1 to 65535"),
        ("redis://10.0.0.1:abc/0", "the port is not a number from 1 to 65535"),
        ("rediss:///0", "needs a host"),
        ("unix://", "needs a socket path"),
    ],
)
def test_bad_plain_url_names_registry_url(tmp_path: Path, url: str, reason: str) -> None:
    """A redis://, rediss:// or unix:// url that cannot be used (port out of range or not
    a number, no host, no socket path) is a ConfigError on registry.url with the reason,
    at load (check-config), not a traceback when the registry is first used."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert error.value.key == "registry.url"
    assert reason in str(error.value)


def test_sentinel_url_may_name_the_sentinels_own_credentials(tmp_path: Path) -> None:
    """A sentinel url's query may give sentinel_password (and sentinel_username): the
    credentials of sentinels run with requirepass; the url is kept as written."""
    url = "redis+sentinel://:pw@10.0.0.1:26379/filterd?sentinel_password=s%26p&sentinel_username=u"
    assert load(write(tmp_path, f'[registry]\nurl = "{url}"\n')).registry.url == url


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@10.0.0.1:99999/0",
        "ftp://admin:s3cret@10.0.0.1/",
        "redis+sentinel://:s3cret@10.0.0.1:26379/filterd/x",
        "redis+sentinel://10.0.0.1:26379/filterd/x?sentinel_password=s3cret",
    ],
)
def test_bad_url_error_shows_no_password(tmp_path: Path, url: str) -> None:
    """The ConfigError of a bad registry.url shows the url with its password as ***."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert "s3cret" not in str(error.value)
    assert "***" in str(error.value)


def test_min_replicas_defaults_to_zero_without_sentinel(tmp_path: Path) -> None:
    """Without Sentinel no replica is required by default; a plain url may ask for some."""
    assert load(write(tmp_path, "")).registry.min_replicas == 0
    text = '[registry]\nurl = "redis://10.0.0.1:6379/0"\nmin_replicas = 1\n'
    assert load(write(tmp_path, text)).registry.min_replicas == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://10.0.0.1:26379", "no service name"),
        ("redis+sentinel://10.0.0.1:26379/", "no service name"),
        ("redis+sentinel:///filterd", "no sentinel named"),
        ("redis+sentinel://10.0.0.1/filterd", "is not host:port"),
        ("redis+sentinel://10.0.0.1:99999/filterd", "out of range"),
        ("redis+sentinel://10.0.0.1:26379,/filterd", "is not host:port"),
        ("redis+sentinel://10.0.0.1:26379/filterd/x", "only a db number"),
        ("redis+sentinel://10.0.0.1:26379/filterd/1/2", "only a db number"),
        ("redis+sentinel://pw@10.0.0.1:26379/filterd", ":password@"),
        ("redis+sentinel://10.0.0.1:26379/filterd?db=1", "query"),
        ("redis+sentinel://10.0.0.1:26379/filterd?sentinel_password=", "query"),
        ("redis+sentinel://10.0.0.1:26379/filterd#x", "fragment"),
        ("redis+sentinel:10.0.0.1:26379/filterd", "no //"),
    ],
)
def test_bad_sentinel_url_names_registry_url(tmp_path: Path, url: str, reason: str) -> None:
    """A malformed sentinel url is a ConfigError on registry.url that says what is wrong
    and shows the expected form."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert error.value.key == "registry.url"
    assert reason in error.value.reason
    assert "redis+sentinel://[:password@]host:port" in error.value.reason


@pytest.mark.parametrize(
    "text",
    [
        'url = "redis+sentinel://10.0.0.1:26379/filterd"\nmin_replicas = -1\n',
        'url = "redis://10.0.0.1:6379"\nmin_replicas = -2\n',
        'url = "embedded"\nmin_replicas = 1\n',
        'url = "redis://10.0.0.1:6379"\nmin_replicas = "1"\n',
    ],
)
def test_bad_min_replicas_names_the_key(tmp_path: Path, text: str) -> None:
    """Negative, non-integer, or (for the embedded server, which has no replicas)
    non-zero min_replicas is a ConfigError naming registry.min_replicas."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, "[registry]\n" + text))
    assert error.value.key == "registry.min_replicas"
