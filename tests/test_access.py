"""acrelease.access: password hashes, the Basic header parser, the cached check, reloads,
the MAC allowlist and the access decision (docs/operations.md, "Access files")."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acrelease import access
from acrelease.access import credentials as credentials_module
from acrelease.access.passwords import ScryptHash, parse_hash
from acrelease.errors import AcreleaseError

HASH = re.compile(r"^\$scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return access.hash_password("s3cret")


@pytest.fixture
def creds_file(tmp_path: Path, alice_hash: str) -> Path:
    path = tmp_path / "users"
    path.write_text(f"# devices\n\nalice:{alice_hash}\n")
    return path


@pytest.fixture
def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every slow verification's password, in order (wraps the real scrypt check)."""
    calls: list[bytes] = []
    real = credentials_module.verify_password

    def counting(password: bytes, stored: ScryptHash) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(credentials_module, "verify_password", counting)
    return calls


# -- hashes ---------------------------------------------------------------------------------------

def test_hash_format_is_salted_scrypt(alice_hash: str) -> None:
    match = HASH.match(alice_hash)
    assert match, alice_hash
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    assert (n, r, p) == (16384, 8, 3)
    assert len(base64.b64decode(match.group(4))) == 16 and len(base64.b64decode(match.group(5))) == 32
    again = access.hash_password("s3cret")
    assert again != alice_hash  # a fresh salt each time
    assert access.verify_password(b"s3cret", parse_hash(again))


def test_verify_rejects_wrong_password(alice_hash: str) -> None:
    stored = parse_hash(alice_hash)
    assert access.verify_password(b"s3cret", stored)
    assert not access.verify_password(b"s3cret ", stored)
    assert not access.verify_password(b"", stored)


@pytest.mark.parametrize("text", [
    "", "scrypt$n=16384,r=8,p=1$AAAA$AAAA", "$bcrypt$n=16384,r=8,p=1$AAAAAAAAAAA=$" + "A" * 44,
    "$scrypt$n=16383,r=8,p=1$AAAAAAAAAAA=$" + "A" * 44,       # n not a power of two
    "$scrypt$n=1048576,r=8,p=1$AAAAAAAAAAA=$" + "A" * 44,     # 1 GiB of memory per request
    "$scrypt$n=16384,r=8$AAAAAAAAAAA=$" + "A" * 44, "$scrypt$n=16384,r=8,p=1,p=1$AAAAAAAAAAA=$" + "A" * 44,
    "$scrypt$n=16384,r=8,p=1$not*base64$" + "A" * 44, "$scrypt$n=16384,r=8,p=1$AAAA$" + "A" * 44,
])
def test_bad_stored_hashes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hash(text)


# -- the header parser ----------------------------------------------------------------------------

def test_parse_basic_accepts_what_the_esp_clients_send() -> None:
    assert access.parse_basic(basic("dev", "pw:with:colons")) == ("dev", b"pw:with:colons")
    assert access.parse_basic(basic("dev", "").encode()) == ("dev", b"")
    assert access.parse_basic("basic " + basic("dév", "pässword")[6:]) == ("dév", "pässword".encode())


@pytest.mark.parametrize("value", [
    None, "", "Basic", "Basic ", "Bearer abc", "Digest " + basic("a", "b")[6:],
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b":empty-user").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:bad-utf8").decode(),
    "Basic !!!!", "Basic YWJj", "Basic YWI6Yw", "Basic " + basic("a", "b")[6:] + " extra",
    "Basic " + basic("a", "x" * 1100)[6:],  # absurdly long
    "Basic ÄÖÜ", b"Basic \xff\xff",
])
def test_parse_basic_refuses_anything_else(value: str | bytes | None) -> None:
    assert access.parse_basic(value) is None


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=1200), st.binary(max_size=1200),
                 st.binary(max_size=300).map(lambda b: "Basic " + base64.b64encode(b).decode())))
def test_parse_basic_never_raises(value: str | bytes) -> None:
    result = access.parse_basic(value)
    assert result is None or (isinstance(result[0], str) and result[0] and isinstance(result[1], bytes))


@given(st.text(min_size=1, max_size=40).filter(lambda u: ":" not in u), st.text(max_size=60))
def test_parse_basic_round_trips(user: str, password: str) -> None:
    assert access.parse_basic(basic(user, password)) == (user, password.encode())


# -- the credentials file ---------------------------------------------------------------------

@pytest.mark.parametrize(("content", "line", "words"), [
    ("alice\n", 1, "expected user:$scrypt$"),
    ("# ok\nbad user:{h}\n", 2, "bad user name"),
    ("alice:{h}\nalice:{h}\n", 2, "appears twice"),
    ("\n\nbob:$scrypt$n=16384,r=8,p=1$AAAA$AAAA\n", 3, "bad password hash for 'bob'"),
    ("alice:{h}\n\xff\n", 2, "not UTF-8"),
])
def test_malformed_credentials_name_file_and_line(tmp_path: Path, alice_hash: str, content: str, line: int,
                                                  words: str) -> None:
    path = tmp_path / "users"
    path.write_bytes(content.replace("{h}", alice_hash).encode("latin-1"))
    with pytest.raises(access.AccessError) as caught:
        access.load_credentials(path)
    message = str(caught.value)
    assert isinstance(caught.value, AcreleaseError)
    assert message.startswith(f"{path}:{line}: ") and words in message and "\n" not in message
    assert alice_hash not in message


def test_missing_credentials_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(access.AccessError, match="cannot read the credentials file"):
        access.load_credentials(tmp_path / "absent")


def test_add_user_creates_0600_and_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "users"
    assert access.add_user(path, "alice", "one") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("# fleet A\n" + path.read_text() + "# end\n")
    os.chmod(path, 0o644)
    assert access.add_user(path, "bob", "two") is True
    assert access.add_user(path, "alice", "three") is False
    lines = path.read_text().splitlines()
    assert lines[0] == "# fleet A" and lines[2] == "# end" and lines[1].startswith("alice:$scrypt$")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert access.list_users(path) == ["alice", "bob"]
    loaded = access.load_credentials(path)
    assert loaded.check(basic("alice", "three")) == "alice"
    assert loaded.check(basic("alice", "one")) is None
    assert loaded.check(basic("bob", "two")) == "bob"
    assert sorted(os.listdir(tmp_path)) == ["users"]  # no temp files left behind
    access.remove_user(path, "alice")
    assert access.list_users(path) == ["bob"]
    with pytest.raises(access.AccessError, match="no user 'alice'"):
        access.remove_user(path, "alice")


@pytest.mark.parametrize("user", ["", "a:b", "a b", "tab\tuser", "ctl\x07", "#hash", "x" * 65])
def test_add_user_validates_names(tmp_path: Path, user: str) -> None:
    with pytest.raises(access.AccessError, match="user name"):
        access.add_user(tmp_path / "users", user, "pw")
    assert not (tmp_path / "users").exists()


def test_add_user_refuses_empty_password_and_broken_files(tmp_path: Path) -> None:
    path = tmp_path / "users"
    with pytest.raises(access.AccessError, match="empty"):
        access.add_user(path, "alice", "")
    path.write_text("garbage line\n")
    with pytest.raises(access.AccessError, match=f"{path}:1:"):
        access.add_user(path, "alice", "pw")
    assert path.read_text() == "garbage line\n"  # not rewritten


# -- the cached check -------------------------------------------------------------------------

def test_check_outcomes(creds_file: Path, count_hashes: list[bytes]) -> None:
    creds = access.load_credentials(creds_file)
    assert creds.users == ["alice"]
    assert creds.check(basic("alice", "s3cret")) == "alice"
    assert creds.check(basic("alice", "s3cret").encode()) == "alice"  # raw ASGI bytes work too
    assert creds.check(basic("alice", "wrong")) is None
    assert creds.check(None) is None
    assert creds.check("Basic garbage") is None
    assert creds.check("Basic " + "A" * 2000) is None
    assert creds.check("Basic ☃") is None
    before = len(count_hashes)
    assert creds.check(basic("mallory", "s3cret")) is None
    assert len(count_hashes) == before + 1  # an unknown user pays the slow hash too (no user probing)


def test_slow_hash_runs_once_for_many_identical_checks(creds_file: Path, count_hashes: list[bytes]) -> None:
    creds = access.load_credentials(creds_file)
    header = basic("alice", "s3cret")
    assert all(creds.check(header) == "alice" for _ in range(200))
    assert count_hashes == [b"s3cret"]
    wrong = basic("alice", "guess")
    assert all(creds.check(wrong) is None for _ in range(200))
    assert count_hashes == [b"s3cret", b"guess"]  # the repeated wrong header: one hash, not 200
    for guess in range(5):  # brute force: every new guess pays
        assert creds.check(basic("alice", f"guess{guess}")) is None
    assert len(count_hashes) == 7


def test_cache_stores_no_secret(creds_file: Path) -> None:
    creds = access.load_credentials(creds_file)
    header = basic("alice", "s3cret")
    creds.check(header)
    creds.check(basic("alice", "wrong"))
    stored = repr(vars(creds))
    assert "s3cret" not in stored and header[6:] not in stored and "wrong" not in stored


def test_negative_entries_expire_and_caches_are_bounded(creds_file: Path, count_hashes: list[bytes]) -> None:
    creds = access.load_credentials(creds_file, negative_ttl=0.0, cache_size=2)
    wrong = basic("alice", "nope")
    creds.check(wrong)
    creds.check(wrong)
    assert count_hashes == [b"nope", b"nope"]  # expired at once: pays again
    count_hashes.clear()
    headers = [basic("alice", "s3cret") + pad for pad in ("", " ", "  ")]  # 3 distinct valid values
    for header in headers:
        assert creds.check(header) == "alice"
    assert creds.check(headers[2]) == "alice" and creds.check(headers[1]) == "alice"
    assert len(count_hashes) == 3
    assert creds.check(headers[0]) == "alice"  # evicted (LRU of 2): verified again
    assert len(count_hashes) == 4


def test_reload_follows_the_file(creds_file: Path, count_hashes: list[bytes]) -> None:
    creds = access.load_credentials(creds_file, interval=0.0)
    alice = basic("alice", "s3cret")
    assert creds.check(alice) == "alice"
    assert creds.check(basic("bob", "pw")) is None
    access.add_user(creds_file, "bob", "pw")  # atomic replace: new inode
    assert creds.check(basic("bob", "pw")) == "bob"  # negative entry dropped on reload
    hashes = len(count_hashes)
    assert creds.check(alice) == "alice"
    assert len(count_hashes) == hashes  # alice unchanged: her cache entry survived the reload
    access.add_user(creds_file, "alice", "rotated")
    assert creds.check(alice) is None  # changed password: the old header stops working at once
    assert creds.check(basic("alice", "rotated")) == "alice"
    access.remove_user(creds_file, "bob")
    assert creds.check(basic("bob", "pw")) is None


def test_reload_is_throttled_and_explicit_reload_is_immediate(creds_file: Path) -> None:
    creds = access.load_credentials(creds_file, interval=3600.0)
    access.add_user(creds_file, "bob", "pw")
    assert creds.check(basic("bob", "pw")) is None  # not stat'ed again within the interval
    assert creds.reload_if_changed() is True
    assert creds.check(basic("bob", "pw")) == "bob"
    assert creds.reload_if_changed() is False


def test_broken_reload_keeps_previous_users(creds_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    creds = access.load_credentials(creds_file, interval=0.0)
    good = creds_file.read_text()
    caplog.set_level(logging.INFO, logger="acrelease.access")
    creds_file.write_text(good + "half-edited\n")
    assert creds.check(basic("alice", "s3cret")) == "alice"
    assert creds.file.error and f"{creds_file}:4:" in creds.file.error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping the previous credentials file" in errors[0].getMessage()
    creds.check(basic("alice", "s3cret"))
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # logged once, not per poll
    creds_file.unlink()
    assert creds.check(basic("alice", "s3cret")) == "alice"  # deleted: still the last good users
    creds_file.write_text(good)
    assert creds.reload_if_changed() is True and creds.file.error is None


def test_check_async_shares_one_hash_among_concurrent_requests(creds_file: Path,
                                                                count_hashes: list[bytes]) -> None:
    creds = access.load_credentials(creds_file)

    async def herd() -> list[str | None]:
        try:
            return await asyncio.gather(*(creds.check_async(basic("alice", "s3cret")) for _ in range(50)))
        finally:
            creds.close()

    assert asyncio.run(herd()) == ["alice"] * 50
    assert count_hashes == [b"s3cret"]


def test_check_async_bounds_pending_verifications(creds_file: Path) -> None:
    policy = access.AccessPolicy(access.load_credentials(creds_file, max_pending=1))

    async def flood() -> list[access.AccessResult]:
        try:
            return await asyncio.gather(*(policy.check_async("update", basic("alice", f"g{i}"), None)
                                          for i in range(3)))
        finally:
            policy.close()

    results = asyncio.run(flood())
    assert [r.status for r in results] == [401, 503, 503]
    assert results[1].headers == ((b"retry-after", b"5"),)


# -- the allowlist ----------------------------------------------------------------------------

def test_allowlist_normalises_and_ignores_comments(tmp_path: Path) -> None:
    path = tmp_path / "allow"
    path.write_text("# lab\nAABBCCDDEEFF\n  aa:bb:cc:dd:ee:01  # desk\n\nAa-Bb-Cc-Dd-Ee-02\r\n")
    allow = access.load_allowlist(path)
    assert allow.macs == {"AA:BB:CC:DD:EE:FF", "AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:02"}
    assert allow.allows("AA:BB:CC:DD:EE:01")
    assert allow.allows("aabbccddee02")
    assert not allow.allows("AA:BB:CC:DD:EE:03")
    assert not allow.allows(None)
    assert not allow.allows("garbage")


@pytest.mark.parametrize("bad", ["AA:BB:CC:DD:EE", "AA:BB-CC:DD:EE:FF", "GG:BB:CC:DD:EE:FF", "AABBCCDDEEFF00",
                                 "AA:BB:CC:DD:EE:FF extra", "AA::BB:CC:DD:EE:FF"])
def test_malformed_allowlist_names_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "allow"
    path.write_text(f"AABBCCDDEEFF\n# fine\n{bad}\n")
    with pytest.raises(access.AccessError) as caught:
        access.load_allowlist(path)
    assert str(caught.value).startswith(f"{path}:3: ") and "\n" not in str(caught.value)


def test_allowlist_reloads_and_survives_a_broken_edit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "allow"
    path.write_text("AA:BB:CC:DD:EE:FF\n")
    allow = access.load_allowlist(path, interval=0.0)
    path.write_text("AA:BB:CC:DD:EE:FF\n11:22:33:44:55:66\n")
    assert allow.allows("11:22:33:44:55:66")
    path.write_text("11:22:33:44:55:66\nAA:BB:CC:DD:EE\n")  # half-edited
    with caplog.at_level(logging.ERROR, logger="acrelease.access"):
        assert allow.allows("AA:BB:CC:DD:EE:FF")  # previous list still in force
    assert allow.file.error and f"{path}:2:" in allow.file.error
    assert any(f"{path}:2:" in r.getMessage() for r in caplog.records)
    path.write_text("")
    assert not allow.allows("AA:BB:CC:DD:EE:FF") and allow.macs == frozenset()  # empty list: nobody


# -- the decision -----------------------------------------------------------------------------

ROUTES: tuple[access.RouteKind, ...] = ("update", "download", "catalog")


@pytest.fixture
def allow_file(tmp_path: Path) -> Path:
    path = tmp_path / "allow"
    path.write_text("AA:BB:CC:DD:EE:FF\n")
    return path


def test_nothing_configured_is_open() -> None:
    policy = access.AccessPolicy()
    assert not policy.enabled
    assert all(policy.check(route, None, None).allowed for route in ROUTES)


def test_credentials_gate_every_route(creds_file: Path) -> None:
    policy = access.AccessPolicy(access.load_credentials(creds_file))
    for route in ROUTES:
        missing = policy.check(route, None, "AA:BB:CC:DD:EE:FF")
        assert (missing.allowed, missing.status) == (False, 401)
        assert (b"www-authenticate", b'Basic realm="acrelease"') in missing.headers
        assert policy.check(route, basic("alice", "bad"), None).status == 401
        granted = policy.check(route, basic("alice", "s3cret"), None)
        assert (granted.allowed, granted.status, granted.user) == (True, 200, "alice")


def test_allowlist_gates_updates_and_downloads_not_the_catalog(allow_file: Path) -> None:
    policy = access.AccessPolicy(allowlist=access.load_allowlist(allow_file))
    for route in ("update", "download"):
        assert policy.check(route, None, "AA:BB:CC:DD:EE:FF").allowed
        assert policy.check(route, None, "AA:BB:CC:DD:EE:00").status == 403
        assert policy.check(route, None, None).status == 403
    assert policy.check("catalog", None, None).allowed


def test_catalog_can_be_opened_for_autoconnect(creds_file: Path) -> None:
    # AutoConnect's catalog request never carries Authorization (docs/protocol.md A.2).
    policy = access.AccessPolicy(access.load_credentials(creds_file), catalog_auth=False)
    assert policy.check("catalog", None, None).allowed
    assert policy.check("download", None, None).status == 401
    assert asyncio.run(policy.check_async("catalog", None, None)).allowed


def test_credentials_are_checked_before_the_allowlist(creds_file: Path, allow_file: Path) -> None:
    policy = access.AccessPolicy.from_files(creds_file, allow_file)
    assert policy.check("update", None, "AA:BB:CC:DD:EE:00").status == 401  # no MAC probing without auth
    assert policy.check("update", basic("alice", "s3cret"), "AA:BB:CC:DD:EE:00").status == 403
    assert policy.check("download", basic("alice", "s3cret"), "AA:BB:CC:DD:EE:FF").allowed
    assert policy.check("catalog", basic("alice", "s3cret"), None).allowed
    assert asyncio.run(policy.check_async("update", basic("alice", "s3cret"), "AA:BB:CC:DD:EE:FF")).allowed
    policy.close()


def test_reasons_never_carry_secrets(creds_file: Path, allow_file: Path) -> None:
    policy = access.AccessPolicy.from_files(creds_file, allow_file)
    cases: list[tuple[str | None, str | None]] = [
        (basic("alice", "s3cret"), "AA:BB:CC:DD:EE:FF"), (basic("alice", "s3cret"), None),
        (basic("mallory", "hunter2"), "AA:BB:CC:DD:EE:FF"), ("Basic hunter2", None), (None, None)]
    for header, mac in cases:
        for route in ROUTES:
            result = policy.check(route, header, mac)
            text = repr(result)
            assert "s3cret" not in text and "hunter2" not in text and "mallory" not in text
            assert header is None or header[6:] not in text


def test_authorization_header_lookup() -> None:
    value = basic("a", "b").encode()
    assert access.authorization([(b"host", b"x"), (b"Authorization", value)]) == value
    assert access.authorization([(b"host", b"x")]) is None
    assert access.authorization([(b"authorization", value), (b"AUTHORIZATION", value)]) == value
    ambiguous = access.authorization([(b"authorization", value), (b"authorization", basic("c", "d").encode())])
    assert ambiguous is not None and access.parse_basic(ambiguous) is None
