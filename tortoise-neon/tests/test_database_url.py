"""DATABASE_URL in every form users meet, turned into Tortoise's config (no server needed)."""

from __future__ import annotations

import os
import ssl
import sys
import types
from dataclasses import replace
from pathlib import Path

import tortoise_neon
from tortoise_neon import DatabaseError, parse_database_url, tortoise_config
from tortoise_neon.config import project_models
from tortoise_neon.connecting import is_not_ready
from tortoise_neon.database_settings import INSECURE_TLS, DatabaseSettings
from tortoise_neon.environment import load_database_url
from tortoise_neon.errors import failure_reason
from tortoise_neon.testing.fixtures import project
from tortoise_neon.tls import ssl_option

import asyncpg
import pytest

NEON = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
POOLER = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"


def credentials(url: str, allow: bool | None = None) -> dict:
    settings = parse_database_url(url, allow_insecure_tls=allow)
    return tortoise_config(settings)["connections"]["default"]["credentials"]


def assert_verified(ssl_value: object) -> None:
    assert isinstance(ssl_value, ssl.SSLContext)
    assert ssl_value.verify_mode == ssl.CERT_REQUIRED
    assert ssl_value.check_hostname is True


def test_guide_form_with_ssl_true() -> None:
    creds = credentials(f"postgres://alex:AbC123dEf@{NEON}/neondb?ssl=true")
    assert (creds["host"], creds["port"], creds["user"], creds["database"]) == (
        NEON, 5432, "alex", "neondb")
    assert creds["password"]() == "AbC123dEf"  # a callable: see test_debug_log_...
    assert_verified(creds["ssl"])
    assert "statement_cache_size" not in creds  # direct endpoint: the cache stays on


def test_neon_console_form() -> None:
    url = f"postgresql://alex:AbC123dEf@{NEON}/neondb?sslmode=require&channel_binding=require"
    creds = credentials(url)
    assert_verified(creds["ssl"])
    assert "sslmode" not in creds and "channel_binding" not in creds  # nothing unknown for asyncpg
    assert creds["connect"].settings.direct_tls is True  # a Neon host: see test_direct_tls_by_default_on_neon


def test_neons_pooler_keeps_the_statement_cache_on() -> None:
    """Neon's pooler is PgBouncer 1.24.1 with max_prepared_statements=1000: cached statements
    cost one round trip instead of two."""
    url = f"postgresql://alex:AbC123dEf@{POOLER}/neondb?sslmode=require&channel_binding=require"
    settings = parse_database_url(url)
    assert settings.pooled
    assert credentials(url)["statement_cache_size"] == 100
    assert "statement cache off" not in settings.describe()


def test_other_pooler_hosts_turn_statement_cache_off() -> None:
    """A -pooler host that is not Neon's: its PgBouncer may be older than 1.21."""
    url = "postgresql://alex:pw@db-pooler.example.com/app?sslmode=require"
    settings = parse_database_url(url)
    assert settings.pooled and credentials(url)["statement_cache_size"] == 0
    assert "statement cache off" in settings.describe()


def test_explicit_statement_cache_size_wins_over_pooler_detection() -> None:
    url = f"postgresql://alex:pw@{POOLER}/neondb?sslmode=require&statement_cache_size=50"
    assert credentials(url)["statement_cache_size"] == 50


@pytest.mark.parametrize("host", ["ep-pooler-name.neon.tech", f"{NEON}", "pooler.example.com"])
def test_only_a_first_label_ending_in_pooler_is_pooled(host: str) -> None:
    assert not parse_database_url(f"postgresql://u:p@{host}/db").pooled


def test_sslnegotiation_direct_and_endpoint_option() -> None:
    url = (f"postgresql://alex:pw@{NEON}/neondb?sslmode=require&sslnegotiation=direct"
           "&options=endpoint%3Dep-cool-darkness-123456")
    creds = credentials(url)
    assert creds["connect"].settings.direct_tls is True
    assert creds["server_settings"] == {"options": "endpoint=ep-cool-darkness-123456"}


@pytest.mark.parametrize(("url", "direct", "fallback"), [
    # hosts under neon.tech: direct TLS unless the URL says otherwise; may fall back
    (f"postgresql://a:b@{NEON}/db?sslmode=require&channel_binding=require", True, True),
    (f"postgresql://a:b@{POOLER}/db?sslmode=require", True, True),  # the proxy, then PgBouncer
    (f"postgres://a:b@{NEON}/db?ssl=true", True, True),
    (f"postgresql://a:b@{NEON}/db", True, True),  # verified TLS by default
    (f"postgresql://a:b@{NEON.upper()}./db?sslmode=verify-full", True, True),
    (f"postgresql://a:b@{NEON}/db?sslmode=require&sslnegotiation=postgres", False, False),
    (f"postgresql://a:b@{NEON}/db?sslmode=require&sslnegotiation=direct", True, False),
    (f"postgresql://a:b@{NEON}/db?sslmode=prefer", False, False),  # not verified: not direct
    (f"postgresql://a:b@{NEON}/db?sslmode=disable", False, False),
    # anything else: the standard negotiation unless sslnegotiation=direct
    ("postgresql://a:b@db.example.com/db?sslmode=require", False, False),
    ("postgresql://a:b@neon.tech.example.com/db?sslmode=require", False, False),
    ("postgresql://a:b@myneon.tech/db?sslmode=require", False, False),
    ("postgresql://a:b@db.example.com/db?sslmode=require&sslnegotiation=direct", True, False),
])
def test_direct_tls_by_default_on_neon(url: str, direct: bool, fallback: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSECURE_TLS, "1")  # sslmode=prefer and disable to Neon: allowed here
    settings = parse_database_url(url)
    assert (settings.direct_tls, settings.direct_tls_fallback) == (direct, fallback)
    assert credentials(url)["connect"].settings.direct_tls is direct


@pytest.mark.parametrize(("error", "direct_waits", "standard_waits"), [
    (ConnectionResetError(), False, True),  # a server without direct TLS hangs up on the hello
    # PostgreSQL 17+ closes a direct connection without ALPN after the handshake
    (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
     False, True),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), False, False),
    (ConnectionRefusedError(111, "Connection refused"), True, True),  # not started yet
    (TimeoutError(), True, True),
])
def test_a_failed_direct_handshake_is_never_waited_for(error: Exception, direct_waits: bool,
                                                       standard_waits: bool) -> None:
    direct = parse_database_url(f"postgresql://a:b@{NEON}/db?sslnegotiation=direct")
    standard = parse_database_url(f"postgresql://a:b@{NEON}/db?sslnegotiation=postgres")
    assert is_not_ready(error, direct) is direct_waits
    assert is_not_ready(error, standard) is standard_waits


@pytest.mark.parametrize("quoted", ["'{}'", '"{}"', "  {}  "])
def test_quoted_url_from_env_file(quoted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://alex:pw@{NEON}/neondb?sslmode=require"
    monkeypatch.setenv("DATABASE_URL", quoted.format(url))
    loaded = load_database_url()
    assert loaded is not None
    assert parse_database_url(loaded).host == NEON


def test_percent_encoded_password() -> None:
    creds = credentials(f"postgresql://alex:p%40ss%3Aw%2Frd%25@{NEON}/neondb")
    assert creds["password"]() == "p@ss:w/rd%"


def test_no_tls_parameter_on_a_remote_host_still_verifies() -> None:
    assert_verified(credentials(f"postgresql://alex:pw@{NEON}/neondb")["ssl"])


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_every_verifying_sslmode_verifies_in_full(mode: str) -> None:
    assert_verified(credentials(f"postgresql://alex:pw@{NEON}/neondb?sslmode={mode}")["ssl"])


def test_empty_password_means_none() -> None:
    assert parse_database_url(f"postgresql://alex:@{NEON}/neondb").password is None


def test_ipv6_host_is_bracketed_when_shown() -> None:
    settings = parse_database_url("postgresql://a:b@[2001:db8::1]:5433/db?sslmode=require")
    assert settings.host == "2001:db8::1"
    assert settings.where == "[2001:db8::1]:5433/db"


def test_direct_host_with_cache_off_is_not_called_pooled() -> None:
    said = parse_database_url(f"postgresql://a:b@{NEON}/db?statement_cache_size=0").describe()
    assert "statement cache off" in said and "pooled" not in said


def test_debug_log_of_tortoise_init_never_shows_the_password(caplog) -> None:
    import asyncio
    import logging

    from tortoise import Tortoise

    config = tortoise_config(parse_database_url(f"postgresql://alex:TopSecret99@{NEON}/neondb"))

    async def init() -> None:
        await Tortoise.init(config=config)  # connects lazily: nothing goes over the network
        await Tortoise.close_connections()

    with caplog.at_level(logging.DEBUG, logger="tortoise"):
        asyncio.run(init())
    assert "startup" in caplog.text
    assert "TopS" not in caplog.text


@pytest.mark.parametrize(("mode", "expected", "said"), [
    ("disable", False, "not encrypted"),
    ("allow", "allow", "not verified"),
    ("prefer", "prefer", "not verified"),
])
def test_explicit_weak_sslmode_is_honoured_and_said(mode: str, expected: object, said: str) -> None:
    url = f"postgresql://alex:pw@localhost/db?sslmode={mode}"
    assert credentials(url)["ssl"] == expected
    assert said in parse_database_url(url).describe()


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
@pytest.mark.parametrize("host", ["db.example.com", NEON, "127.0.0.2", "[2001:db8::1]", "10.0.0.5"])
def test_weak_sslmode_to_a_remote_host_is_refused(host: str, mode: str) -> None:
    url = f"postgresql://alex:TopSecret99@{host}/db?sslmode={mode}"
    with pytest.raises(DatabaseError) as info:
        parse_database_url(url)
    line = str(info.value)
    assert line.startswith(f"DATABASE_URL has sslmode={mode} for {host.strip('[]')}, a host not "
                           "on this machine: ")
    assert line.endswith(f"use sslmode=require (TLS, certificate verified), or set {INSECURE_TLS}"
                         "=1 if you accept that risk (docs/connecting.md)")
    assert "\n" not in line and "TopSecret99" not in line
    allowed = parse_database_url(url, allow_insecure_tls=True)
    assert allowed.sslmode == mode and allowed.allow_insecure_tls
    assert allowed.describe().endswith(f"; a host not on this machine: allowed by {INSECURE_TLS})")
    assert credentials(url.replace("TopSecret99", "pw"), allow=True)["ssl"] == (
        False if mode == "disable" else mode)


@pytest.mark.parametrize(("value", "allowed"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("", False), ("false", False), ("no", False), ("off", False),
])
def test_the_override_is_read_from_the_environment(value: str, allowed: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSECURE_TLS, value)
    url = "postgresql://alex:pw@db.example.com/db?sslmode=disable"
    if allowed:
        assert parse_database_url(url).allow_insecure_tls
    else:
        with pytest.raises(DatabaseError, match=f"or set {INSECURE_TLS}=1 if you accept"):
            parse_database_url(url)
    # what it never changes: verified TLS stays verified, a local host needs no override
    assert_verified(credentials("postgresql://alex:pw@db.example.com/db?sslmode=require")["ssl"])
    assert not parse_database_url("postgresql://a:b@localhost/db?sslmode=disable").allow_insecure_tls


def test_an_override_that_says_neither_yes_nor_no_is_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INSECURE_TLS, "please")
    with pytest.raises(DatabaseError) as info:
        parse_database_url("postgresql://alex:pw@db.example.com/db?sslmode=prefer")
    assert str(info.value) == (f"{INSECURE_TLS}=please is not understood: set it to 1 to allow "
                               "sslmode=disable, allow or prefer to a host not on this machine, "
                               "or unset it")


def test_the_refusal_names_the_variable_that_holds_the_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://a:b@localhost/db?sslmode=disable")
    monkeypatch.setenv("DATABASE_URL_REPLICA", "postgresql://a:b@replica.example.com/db?sslmode=allow")
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "postgresql://a:b@db.example.com/db?sslmode=prefer")
    with pytest.raises(DatabaseError, match="^DATABASE_URL_REPLICA has sslmode=allow for "
                                            "replica.example.com, a host not on this machine"):
        tortoise_neon.load_settings()
    with pytest.raises(DatabaseError, match="^DATABASE_URL_UNPOOLED has sslmode=prefer for "
                                            "db.example.com, a host not on this machine"):
        tortoise_neon.load_settings(for_migrations=True)
    monkeypatch.setenv(INSECURE_TLS, "1")
    assert tortoise_neon.load_settings().replicas[0].allow_insecure_tls


def test_settings_made_by_hand_follow_the_same_rule() -> None:
    """tls.py checks again: DatabaseSettings built without a URL get the same line."""
    made = DatabaseSettings(engine="postgres", host="db.example.com", sslmode="disable")
    with pytest.raises(DatabaseError, match="^DATABASE_URL has sslmode=disable for db.example"):
        ssl_option(made)
    assert ssl_option(replace(made, allow_insecure_tls=True)) is False
    local = DatabaseSettings(engine="postgres", host="localhost", sslmode="prefer")
    assert ssl_option(local) == "prefer"


def test_local_host_without_sslmode_behaves_like_libpq_prefer() -> None:
    assert credentials("postgresql://alex:pw@localhost:5433/db")["ssl"] == "prefer"


def test_sslrootcert_file_is_used(tmp_path) -> None:
    import trustme

    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    ctx = credentials(f"postgresql://alex:pw@{NEON}/db?sslmode=verify-full&sslrootcert={path}")["ssl"]
    assert_verified(ctx)
    assert len(ctx.get_ca_certs()) == 1


def test_connect_timeout_sets_the_deadline() -> None:
    assert parse_database_url(f"postgresql://a:b@{NEON}/db?connect_timeout=5").connect_deadline == 5
    assert parse_database_url(f"postgresql://a:b@{NEON}/db").connect_deadline == 30


def test_describe_never_shows_the_password() -> None:
    settings = parse_database_url(f"postgresql://alex:TopSecret99@{NEON}/neondb")
    assert "TopSecret99" not in settings.describe()
    assert "TopSecret99" not in repr(settings)


def test_sqlite_urls_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_database_url("sqlite://demo.sqlite3").engine == "sqlite"
    monkeypatch.delenv("DATABASE_URL", raising=False)
    config = tortoise_neon.TORTOISE_ORM
    assert config["connections"]["default"]["engine"] == "tortoise.backends.sqlite"
    assert config["apps"]["models"]["models"] == tortoise_neon.MODELS == ["tests.project.members"]  # the project's settings


def test_migrations_use_the_unpooled_string_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neon's two names: the CLI (TORTOISE_ORM) takes DATABASE_URL_UNPOOLED, an app DATABASE_URL."""
    monkeypatch.setenv("DATABASE_URL", f"postgresql://alex:secret@{POOLER}/neondb")
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", f"postgresql://alex:secret@{NEON}/neondb")
    def host(config: dict) -> str:
        return config["connections"]["default"]["credentials"]["host"]

    assert host(tortoise_neon.TORTOISE_ORM) == NEON
    assert host(tortoise_config()) == POOLER
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "")
    assert host(tortoise_neon.TORTOISE_ORM) == POOLER  # unset or empty: DATABASE_URL for both
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "postgresql://<user>:<password>@<endpoint>/neondb")
    with pytest.raises(DatabaseError, match=r"^DATABASE_URL_UNPOOLED still holds the placeholder"):
        tortoise_neon.TORTOISE_ORM  # noqa: B018


def test_models_come_from_the_projects_settings(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    project = types.ModuleType("settings")
    monkeypatch.setitem(sys.modules, "settings", project)
    assert project_models() == ["main"]  # a settings.py without MODELS
    project.MODELS = ["main", "blog"]  # type: ignore[attr-defined]
    assert project_models() == ["main", "blog"]
    monkeypatch.delitem(sys.modules, "settings")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # no settings.py at all
    assert project_models() == ["main"]


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://<user>:<password>@<endpoint>-pooler.neon.tech/neondb", "placeholder"),
    ("ep-cool.neon.tech/neondb", "not a URL"),
    ("mysql://a:b@host/db", "scheme 'mysql://'"),
    ("postgresql://a:b@host:54x2/db", "port"),
    ("postgresql://a:b@/db", "no host"),
    ("postgresql://a:b@host", "names no database"),
    ("postgresql://a:b@host/db?sslmode=required", "sslmode=required"),
    ("postgresql://a:b@host/db?sslrootcert=/nonexistent/ca.pem", "no such file"),
    ("postgresql://a:b@host/db?pool=5", "unknown parameter pool"),
    ("postgresql://a:b@host/db?connect_timeout=soon", "whole number"),
    ("postgresql://a:b@host/db?connect_timeout=0", "at least 1"),
    ("postgresql://a:b@host/db?ssl=false", "sslmode=disable"),
    ("postgresql://a:b@host/db?sslmode=disable&channel_binding=require", "channel_binding"),
    ("postgresql://a:b@host/db?sslmode=prefer&sslnegotiation=direct", "direct TLS needs"),
    ("postgresql://alex:a/b@host/db", "percent-encode"),  # "/" in the password
    ("postgresql://a:b@host:99999/db", "a number from 1 to 65535"),
    ("postgresql://a:b@localhost/db?channel_binding=require",
     "channel_binding=require with no sslmode (prefer, on this machine)"),
])
def test_bad_urls_get_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(DatabaseError) as info:
        parse_database_url(url)
    line = str(info.value)
    assert message in line
    assert "\n" not in line
    assert ":b@" not in line


@pytest.mark.parametrize(("error", "waits"), [
    (ConnectionRefusedError(111, "Connection refused"), True),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), "
             "[Errno 111] Connect call failed ('127.0.0.1', 5432)"), True),
    (TimeoutError(), True),
    (ConnectionError('PostgreSQL server at "h:5432" rejected SSL upgrade'), False),
    (__import__("socket").gaierror(-2, "Name or service not known"), False),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), False),
    (ValueError("not a connect error"), False),
])
def test_which_connect_errors_are_worth_waiting_for(error: Exception, waits: bool) -> None:
    settings = parse_database_url(f"postgresql://a:b@{NEON}/db")
    assert is_not_ready(error, settings) is waits
    if waits:
        assert failure_reason(error) in ("connection refused", "timed out")


def test_importing_the_config_never_fails_reading_it_builds_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`tortoise_neon.TORTOISE_ORM` is read from DATABASE_URL when used, in a fresh process."""
    import subprocess
    import sys

    code = ("import tortoise_neon\n"
            "try:\n    tortoise_neon.TORTOISE_ORM\nexcept tortoise_neon.DatabaseError as e:\n    print(e)\n")
    env = {"DATABASE_URL": "postgresql://u:<password>@h/db", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=project(), text=True,
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DATABASE_URL still holds the placeholder")


def test_an_sslrootcert_that_is_not_a_certificate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(DatabaseError, match="which is not a CA certificate file"):
        credentials(f"postgresql://a:b@{NEON}/db?sslrootcert={not_pem}")


def test_a_url_without_a_user_is_described_without_one() -> None:
    described = parse_database_url("postgresql://localhost/db").describe()
    assert described.startswith("Connected to PostgreSQL at localhost:5432/db (")


def test_a_variable_set_but_empty_counts_as_not_set(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`export DATABASE_URL=` left in a shell: empty counts as not set, so .env fills it (said
    once, as a warning), and with nothing in .env it is unset (the announced SQLite demo)."""
    monkeypatch.setenv("DATABASE_URL", " ")
    env_file = tmp_path / ".env"
    env_file.write_text(f'DATABASE_URL="postgresql://alex:secret@{POOLER}/neondb"\n')
    with caplog.at_level("WARNING", logger="tortoise_neon"):
        assert load_database_url(str(env_file)) == f"postgresql://alex:secret@{POOLER}/neondb"
        assert load_database_url(str(env_file)) is not None  # said once
    assert [r.getMessage() for r in caplog.records] == [
        (f"DATABASE_URL is empty in the environment: using the one in {env_file} (an empty "
         "variable counts as not set; to leave it unset, empty or delete its line in .env)")]
    assert os.environ["DATABASE_URL"] == " "  # the environment is read, never written
    monkeypatch.setenv("DATABASE_URL", "")
    env_file.write_text("OTHER=1\n")
    assert load_database_url(str(env_file)) is None
    assert "OTHER" not in os.environ
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "")  # the direct string falls back, as documented
    assert load_database_url(str(env_file), name="DATABASE_URL_UNPOOLED") is None


def test_an_empty_line_in_env_is_as_if_it_were_not_there(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """.env.example says: leave DATABASE_URL empty for the SQLite demo."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text('DATABASE_URL=\nDATABASE_URL_REPLICA=""\n')
    assert load_database_url(str(env_file)) is None
    assert load_database_url(str(env_file)) is None  # and again: nothing left behind
    assert load_database_url(str(env_file), name="DATABASE_URL_REPLICA") is None


def test_env_file_is_found_beside_the_script_then_from_the_current_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The package runs from site-packages, so ``.env`` is looked for from the script that runs
    (``python project/sub/script.py`` from anywhere), then from the current folder (``uvicorn``, ``python
    -m tortoise``); never from the package's own folder."""
    import subprocess
    import sys

    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / ".env").write_text("DATABASE_URL=sqlite://x.sqlite3\n")
    script = project / "sub" / "script.py"
    script.write_text("from tortoise_neon.environment import find_env_file\nprint(find_env_file())\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": ""}
    beside = subprocess.run([sys.executable, str(script)], cwd=elsewhere, env=env, text=True,
                            capture_output=True, check=False)
    assert beside.stdout.strip() == str(project / ".env"), beside.stderr
    code = "from tortoise_neon.environment import find_env_file; print(repr(find_env_file()))"
    from_cwd = subprocess.run([sys.executable, "-c", code], cwd=project / "sub", env=env,
                              text=True, capture_output=True, check=False)
    assert from_cwd.stdout.strip() == repr(str(project / ".env")), from_cwd.stderr
    nowhere = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, text=True,
                             capture_output=True, check=False)
    assert nowhere.stdout.strip() == "''", nowhere.stderr
