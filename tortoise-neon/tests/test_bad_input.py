"""Bad input, systematically: generated DATABASE_URLs and .env files (hypothesis).

The contract, for any string: a settings object, or one ``DatabaseError`` line; never another
exception, and never the password, nor a piece of it. Passwords here are made of Greek letters
and URL special characters, and nothing else is Greek: a Greek letter in a line (or in a parsed
host, user or database) is a piece of the password in the wrong place.

The budget is fixed (``derandomize=True``, a set number of examples): CI runs the same examples
every time, in about five seconds.
"""

from __future__ import annotations

import os
import re
import tempfile
from unittest import mock
from urllib.parse import quote

from tortoise_neon import DatabaseError, DatabaseSettings, parse_database_url
from tortoise_neon.environment import load_database_url
from tortoise_neon.testing.sealed import child_env

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BUDGET = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
SMALL_BUDGET = settings(BUDGET, max_examples=150)  # a file per example: slower

GREEK = re.compile("[\u0370-\u03ff]")
# Every libpq connection parameter (PostgreSQL 18), and the ones this project adds.
LIBPQ = [
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth",
    "channel_binding", "connect_timeout", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
    "requiressl", "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslkeylogfile",
    "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni",
    "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname",
    "gsslib", "gssdelegation", "service", "target_session_attrs", "load_balance_hosts",
    "min_protocol_version", "max_protocol_version", "scram_client_key", "scram_server_key",
    "oauth_issuer", "oauth_client_id", "oauth_client_secret", "oauth_scope",
    "ssl", "statement_cache_size",
]
SPECIALS = "@#/?:%&=+ $!'\"[]<>\\,;~"


def not_greek(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return strategy.map(lambda text: GREEK.sub("", text))


odd_text = not_greek(st.one_of(
    st.text(max_size=30),
    st.text(alphabet=SPECIALS + "abc019", max_size=12),
    st.integers(150, 3000).map(lambda n: "x9" * n),  # very long values
))
odd_values = st.one_of(
    st.sampled_from(["", "require", "verify-full", "verify-ca", "prefer", "allow", "disable",
                     "direct", "postgres", "true", "false", "1", "0", "-1", "30", "1e3", "system",
                     "١٢", "²", "9" * 5000, "/nonexistent/ca.pem", "~/ca.pem", "~nosuchuser/x",
                     "endpoint=ep-x", "-c search_path=a", "%00", "a%0Ab", "%zz"]),
    odd_text,
)
hosts = st.one_of(
    st.sampled_from(["ep-cool-darkness-123456.us-east-2.aws.neon.tech", "localhost", "127.0.0.1",
                     "ep-x-123-pooler.eu-central-1.aws.neon.tech", "[::1]", "[2001:db8::1]",
                     "host.", "a..b", "x" * 70 + ".com", "h1,h2", "[::1", ""]),
    odd_text,
)
ports = st.one_of(st.just(""), st.integers(-5, 70000).map(lambda n: f":{n}"),
                  odd_text.map(lambda text: f":{text}"))
# Greek letters (one at least) mixed with the characters that must be percent-encoded.
LETTERS = "".join(map(chr, range(0x3B1, 0x3CA)))
password_parts = st.text(alphabet=LETTERS + SPECIALS, max_size=12)
passwords = st.tuples(password_parts, st.sampled_from(LETTERS), password_parts).map("".join)
schemes = st.sampled_from(["postgresql", "postgres", "POSTGRESQL", "psql 'postgresql", "mysql",
                           "jdbc:postgresql", "sqlite", "postgresql:"])
users = st.one_of(st.just("alex"), odd_text.map(lambda u: quote(u, safe="")))
databases = st.one_of(st.sampled_from(["/neondb", ""]),
                      odd_text.map(lambda d: "/" + quote(d, safe="")), odd_text)
params = st.lists(st.tuples(st.one_of(st.sampled_from(LIBPQ), odd_text), odd_values), max_size=4)
wrappings = st.sampled_from(["{}", "'{}'", '"{}"', "  {} ", "{}\n", "psql '{}'"])


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, str]:
    """A DATABASE_URL as users write them (right or wrong), and its password."""
    password = draw(passwords)
    if draw(st.booleans()):
        password = password.replace("%", "")  # raw, as typed: "%41" would decode silently
        shown = password
    else:
        shown = quote(password, safe="")
    pairs = draw(params)
    encode = draw(st.booleans())
    query = "&".join(f"{quote(k) if encode else k}={quote(v) if encode else v}" for k, v in pairs)
    question_mark: bool = draw(st.booleans()) or bool(pairs)
    url = (f"{draw(schemes)}://{draw(users)}:{shown}@{draw(hosts)}{draw(ports)}"
           f"{draw(databases)}" + (f"?{query}" if question_mark else ""))
    return draw(wrappings).format(url), password


def assert_contract(url: str, password: str | None = None) -> DatabaseSettings | None:
    """A settings object or one DatabaseError line, never the password; the settings if any."""
    try:
        parsed = parse_database_url(url)
    except DatabaseError as error:
        line = str(error)
        assert line and len(line.splitlines()) == 1 and len(line) <= 300, line
        if password is not None:
            assert not GREEK.search(line), line
            assert quote(password, safe="") not in line, line
        return None
    assert isinstance(parsed, DatabaseSettings)
    assert len(parsed.describe().splitlines()) == 1
    if password is not None and parsed.engine == "postgres":
        # parsed right, or refused: never a password cut in two, one half taken for the host
        assert parsed.password == password, (parsed, password)
        assert not GREEK.search(f"{parsed.host} {parsed.user} {parsed.database}"), parsed
        assert not GREEK.search(parsed.describe())
    return parsed


@BUDGET
@given(st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    st.text(max_size=200).map(lambda t: "postgresql://" + t),
    st.text(alphabet=SPECIALS + "postgrsql:/abc019.-", max_size=80),
))
def test_any_string_is_settings_or_one_line(text: str) -> None:
    assert_contract(text)


@BUDGET
@given(urls())
def test_urls_with_odd_parts_never_show_the_password(case: tuple[str, str]) -> None:
    assert_contract(*case)


def test_a_typed_password_with_special_characters_is_understood_or_refused() -> None:
    """The examples from the issue, and a password Python's parser can split right."""
    assert_contract("postgresql://alex:p@ss#1@ep-cool.neon.tech/neondb", "p@ss#1")
    settings = assert_contract("postgresql://alex:p@ss:w@ep-cool.neon.tech/neondb", "p@ss:w")
    assert settings is not None and settings.host == "ep-cool.neon.tech"


env_lines = st.sampled_from(["DATABASE_URL={}", "export DATABASE_URL={}",
                             "DATABASE_URL = {}  # from Neon", "  DATABASE_URL={}"])
quote_marks = st.sampled_from(["", "'", '"'])
other_lines = st.lists(not_greek(st.text(max_size=40)), max_size=3)
line_ends = st.sampled_from(["\n", "\r\n"])
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])
ENV_FOLDER = tempfile.TemporaryDirectory(prefix="quickstart-env-")  # one .env, rewritten


@st.composite
def env_files(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """The bytes of a .env file, and the password in it (if the file was made around one)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300)), None
    url, password = draw(urls())
    mark = draw(quote_marks)
    lines = [draw(env_lines).format(f"{mark}{url}{mark}"), *draw(other_lines)]
    if draw(st.booleans()):
        lines.reverse()
    text = draw(line_ends).join(lines)
    return text.encode(draw(encodings), "replace"), password


@SMALL_BUDGET
@given(env_files())
def test_env_files_are_settings_or_one_line(case: tuple[bytes, str | None]) -> None:
    content, password = case
    # an environment built for the test, not the caller's: only what .env here says counts
    with mock.patch.dict(os.environ, child_env(), clear=True):
        path = os.path.join(ENV_FOLDER.name, ".env")
        with open(path, "wb") as env_file:
            env_file.write(content)
        try:
            url = load_database_url(path)
        except DatabaseError as error:
            line = str(error)
            assert len(line.splitlines()) == 1 and not GREEK.search(line), line
            return
        if url is not None:
            parsed = assert_contract(url)
            if password is not None and parsed is not None and parsed.engine == "postgres":
                assert not GREEK.search(f"{parsed.host} {parsed.user} {parsed.database}")
