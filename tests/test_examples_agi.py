"""The worked Asterisk example, examples/asterisk/filterd-check.agi, run as Asterisk
runs it (a subprocess, the AGI environment on stdin, "200 result=1" after each
command) against a live `filterd serve` with [api], on a registry server of its own:

- a number with a voice consent: FILTERD_DECISION deliver;
- a voice refusal: drop refused; an sms consent does not make a call deliverable:
  drop no_consent; an unknown number: drop no_consent;
- an unreadable number, a wrong key, the API down: error (fail closed);
- the number never appears in what the script writes (Asterisk logs VERBOSE).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon_helpers import FILTERD, ROOT, environment
from tests.helpers import LogReader, RedisProcess, aof_args, bundled_valkey, free_port, system_redis

SCRIPT = ROOT / "examples" / "asterisk" / "filterd-check.agi"
CONSENTED = "+8613800138001"
REFUSED = "+8613800138002"
SMS_ONLY = "+8613800138003"
UNKNOWN = "+8613800138004"
DIALER_KEY = "D" * 40
CRM_KEY = "C" * 40


@dataclass(frozen=True)
class Api:
    """A running filterd API: its base URL and the dialer's key file."""

    base: str
    key_file: Path


def _write_key(path: Path, key: str) -> Path:
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def _record(base: str, fact: dict[str, str]) -> None:
    """POST /v1/facts with the CRM key; the test fails unless it is 201."""
    request = urllib.request.Request(  # noqa: S310 - a loopback URL the test built
        base + "/v1/facts", data=json.dumps(fact).encode(), method="POST",
        headers={"Authorization": f"Bearer {CRM_KEY}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 201


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    """`filterd serve` with [api] (a dialer key: check; a CRM key: write) on a registry
    server of this module's own, with a voice consent, a voice refusal and an sms
    consent on record for sender acme."""
    binary = bundled_valkey() or system_redis()
    if binary is None:
        pytest.skip("no valkey-server or redis-server binary installed")
    directory = Path(tempfile.mkdtemp(prefix="agi-", dir="/tmp"))
    server = RedisProcess(binary, directory / "registry", aof_args(binary)).start()
    _write_key(directory / "secret", "ab" * 32)
    key_file = _write_key(directory / "dialer.key", DIALER_KEY)
    _write_key(directory / "crm.key", CRM_KEY)
    config = directory / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{server.url}"\nsecret_file = "secret"\ndefault_region = "CN"\n'
        '[api]\nlisten = "127.0.0.1:0"\n'
        '[[api.keys]]\nname = "dialer"\nkey_file = "dialer.key"\nsenders = ["acme"]\n'
        'scopes = ["check"]\n'
        '[[api.keys]]\nname = "crm"\nkey_file = "crm.key"\nsenders = ["acme"]\n'
        'scopes = ["write"]\n'
    )
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment(), bufsize=0,
    )  # fmt: skip
    try:
        listening = LogReader(process).wait_for("listening")
        base = f"http://127.0.0.1:{listening['port']}"
        for number, kind, channel in (
            (CONSENTED, "consent", "voice"),
            (REFUSED, "consent", "voice"),
            (REFUSED, "refusal", "voice"),
            (SMS_ONLY, "consent", "sms"),
        ):
            fact = {"address": number, "kind": kind, "sender": "acme", "channel": channel}
            _record(base, {**fact, "evidence": "call centre ticket 7"})
        yield Api(base, key_file)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        assert process.stdout is not None
        process.stdout.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run_agi(
    base: str, key_file: Path, *args: str, sender_env: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """Run the script as Asterisk would for a call with AGI arguments `args`; the
    variables it set (name -> value) and every command line it wrote."""
    agi_env = {
        "agi_request": "filterd-check.agi",
        "agi_channel": "PJSIP/trunk-00000001",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": "1733580000.1",
        "agi_callerid": "4008001234",
        "agi_context": "outbound-campaign",
        "agi_extension": "s",
        "agi_priority": "2",
        **{f"agi_arg_{n}": value for n, value in enumerate(args, 1)},
    }
    stdin = "".join(f"{name}: {value}\n" for name, value in agi_env.items()) + "\n"
    stdin += "200 result=1\n" * 4
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILTERD_")}
    env |= {"FILTERD_API_URL": base, "FILTERD_API_KEY_FILE": str(key_file)}
    if sender_env is not None:
        env["FILTERD_SENDER"] = sender_env
    done = subprocess.run(
        [SCRIPT], input=stdin, capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    commands = done.stdout.splitlines()
    variables = {}
    for line in commands:
        if line.startswith("SET VARIABLE "):
            name, value = line.removeprefix("SET VARIABLE ").split(" ", 1)
            variables[name] = json.loads(value)
    return variables, commands


def test_the_example_is_an_executable_python3_script() -> None:
    """The script is executable and starts with a python3 shebang, so Asterisk can run
    it from its agi-bin as it is."""
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_a_consented_number_is_delivered(api: Api) -> None:
    """A number with a voice consent of the sender: FILTERD_DECISION deliver, no reason,
    set with SET VARIABLE, then one VERBOSE line without the number."""
    variables, commands = run_agi(api.base, api.key_file, CONSENTED, "acme")
    assert variables == {"FILTERD_DECISION": "deliver", "FILTERD_REASON": "", "FILTERD_RESUME": ""}
    assert commands[-1] == 'VERBOSE "filterd: deliver" 3'
    assert CONSENTED[1:] not in "\n".join(commands)


def test_a_refused_number_is_dropped(api: Api) -> None:
    """A voice refusal newer than the consent: drop, reason refused."""
    variables, commands = run_agi(api.base, api.key_file, REFUSED, "acme")
    assert (variables["FILTERD_DECISION"], variables["FILTERD_REASON"]) == ("drop", "refused")
    assert REFUSED[1:] not in "\n".join(commands)


def test_an_unknown_number_and_an_sms_consent_are_no_consent(api: Api) -> None:
    """A number with no fact, and one with only an sms consent (which does not cover
    calls): drop, reason no_consent. The sender may come from FILTERD_SENDER."""
    for number in (UNKNOWN, SMS_ONLY):
        variables, _ = run_agi(api.base, api.key_file, number, sender_env="acme")
        assert (variables["FILTERD_DECISION"], variables["FILTERD_REASON"]) == (
            "drop",
            "no_consent",
        )


def test_no_decision_is_an_error_so_no_call(api: Api, tmp_path: Path) -> None:
    """Whatever keeps the API from deciding sets FILTERD_DECISION error with its reason:
    an unreadable number, a national number of another shape, a wrong key, a missing
    key file, no sender, no number."""
    wrong = _write_key(tmp_path / "wrong.key", "W" * 40)
    cases = [
        ((api.base, api.key_file, "not-a-number", "acme"), "invalid_address"),
        ((api.base, wrong, CONSENTED, "acme"), "refused_key"),
        ((api.base, tmp_path / "missing.key", CONSENTED, "acme"), "no_key"),
        ((api.base, api.key_file, CONSENTED), "no_sender"),
        ((api.base, api.key_file), "no_number"),
    ]
    for (base, key_file, *args), reason in cases:
        variables, _ = run_agi(base, key_file, *args)
        assert (variables["FILTERD_DECISION"], variables["FILTERD_REASON"]) == ("error", reason)


def test_api_down_fails_closed(api: Api) -> None:
    """Nothing listening at the API URL: FILTERD_DECISION error, reason unreachable
    (the dialplan then does not call), and the script still ends normally."""
    down = f"http://127.0.0.1:{free_port()}"
    variables, _ = run_agi(down, api.key_file, CONSENTED, "acme")
    assert variables == {
        "FILTERD_DECISION": "error",
        "FILTERD_REASON": "unreachable",
        "FILTERD_RESUME": "",
    }


def test_a_hangup_ends_the_script_quietly(api: Api) -> None:
    """When Asterisk's stdin ends after the environment (the channel hung up), the
    script stops after its first command and exits 0."""
    done = subprocess.run(
        [SCRIPT], input="agi_arg_1: +8613800138001\nagi_arg_2: acme\n\n", capture_output=True,
        text=True, timeout=30, check=False,
        env={**os.environ, "FILTERD_API_URL": api.base, "FILTERD_API_KEY_FILE": str(api.key_file)},
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout == 'SET VARIABLE FILTERD_DECISION "deliver"\n'
