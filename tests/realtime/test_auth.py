"""Token verification: PyJWT-made tokens, good and bad, against each kind of key."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from protocol import Channel
from realtime import Config
from realtime._auth import Claims, TokenError, TokenVerifier, hmac_algorithms, mint_token

from .helpers import REALTIME, TIMEOUT, drain_log, start_process

NOW = 1_800_000_000.0
SECRET = "s" * 32
LONG_SECRET = "L" * 64


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": NOW + 60, **extra}


def hs_token(secret: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(**extra), secret, algorithm="HS256")


def unsigned(payload: dict[str, Any], **headers: str) -> str:
    """An ``alg: none`` token, which PyJWT makes with no key."""
    return jwt.encode(payload, None, algorithm="none", headers=headers or None)  # type: ignore[arg-type]  # none takes no key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(payload: dict[str, Any], key: bytes, algorithm: str = "HS256") -> str:
    """An HMAC token signed by hand: PyJWT itself refuses to sign with some keys (a PEM
    public key as a secret, a secret shorter than the hash)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    head = _b64(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), digest[algorithm]).digest()
    return f"{head}.{body}.{_b64(signature)}"


def pem(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def refused(verifier: TokenVerifier, token: str, reason: str) -> None:
    with pytest.raises(TokenError) as info:
        verifier.verify(token, now=NOW)
    assert reason in info.value.reason, info.value.reason
    assert not token or token not in info.value.reason


# --- shared secret ---------------------------------------------------------------


def test_a_valid_token_gives_its_claims() -> None:
    verifier = TokenVerifier.from_secret(SECRET)
    assert verifier.verify(hs_token(), now=NOW) == Claims("alice", NOW + 60, None, None)


def test_grants_narrow_and_equal_ones_are_shared() -> None:
    verifier = TokenVerifier.from_secret(SECRET)
    token = hs_token(channels=["prices", "alerts"], symbols=["AAPL", "MSFT"])
    first = verifier.verify(token, now=NOW)
    second = verifier.verify(
        hs_token(channels=["alerts", "prices"], symbols=["MSFT", "AAPL"]), now=NOW
    )
    assert first.channels == frozenset({Channel.PRICES, Channel.ALERTS})
    assert first.symbols == frozenset({"AAPL", "MSFT"})
    assert first.channels is second.channels
    assert first.symbols is second.symbols
    assert first.allows(Channel.ALERTS)
    assert not first.allows(Channel.PORTFOLIO)
    assert first.refused_symbols(["AAPL", "TSLA", "NVDA"]) == ["TSLA", "NVDA"]
    # Absent: every channel and symbol. Empty: none.
    everything = verifier.verify(hs_token(), now=NOW)
    assert everything.allows(Channel.PORTFOLIO)
    assert everything.refused_symbols(["X"]) == []
    nothing = verifier.verify(hs_token(channels=[], symbols=[]), now=NOW)
    assert not nothing.allows(Channel.PRICES)
    assert nothing.refused_symbols(["X"]) == ["X"]


def test_claims_are_compact() -> None:
    claims = TokenVerifier.from_secret(SECRET).verify(hs_token(), now=NOW)
    assert not hasattr(claims, "__dict__")  # slotted: four references, no dict


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (hs_token(exp=NOW - 5), "expired 5 s ago"),
        (hs_token(exp=NOW), "expired 0 s ago"),
        (hs_token(nbf=NOW + 30), "not valid yet: nbf is 30 s ahead"),
        (hs_token(secret="x" * 32), "bad signature"),
        (unsigned(claims()), "algorithm 'none' refused"),
        (jwt.encode({"exp": NOW + 60}, SECRET, algorithm="HS256"), "the sub claim is missing"),
        (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "the exp claim is missing"),
        (hs_token(sub=""), "the sub claim must be a string of 1-256 characters"),
        (hs_token(sub=7), "the sub claim must be a string"),
        (hs_token(sub="u" * 257), "the sub claim must be a string of 1-256 characters"),
        (hs_token(exp="soon"), "the exp claim must be a number"),
        (hs_token(exp=True), "the exp claim must be a number"),
        (hs_token(channels="prices"), "the channels claim must be a list of strings"),
        (hs_token(channels=["prices", "alert"]), "unknown channel 'alert'"),
        (hs_token(symbols=["aapl"]), "the symbols claim holds 'aapl', not a ticker"),
        (hs_token(symbols=[1]), "the symbols claim must be a list of strings"),
        ("garbage", "malformed token"),
        ("", "malformed token"),
        ("a.b.c", "malformed token"),
        (hs_token()[:-4] + "AAAA", "bad signature"),
    ],
)
def test_invalid_tokens_are_refused_with_a_reason(token: str, reason: str) -> None:
    refused(TokenVerifier.from_secret(SECRET), token, reason)


def test_the_secret_length_chooses_the_hmac_algorithms() -> None:
    assert hmac_algorithms(SECRET.encode()) == ("HS256",)
    assert hmac_algorithms(b"x" * 48) == ("HS256", "HS384")
    assert hmac_algorithms(LONG_SECRET.encode()) == ("HS256", "HS384", "HS512")
    # RFC 7518 section 3.2: HS512 needs a 64-byte key, so a 32-byte secret refuses it.
    refused(
        TokenVerifier.from_secret(SECRET),
        handmade(claims(), SECRET.encode(), "HS512"),
        "algorithm 'HS512' refused: this key verifies HS256 only",
    )
    long = TokenVerifier.from_secret(LONG_SECRET)
    for algorithm in ("HS256", "HS384", "HS512"):
        token = jwt.encode(claims(), LONG_SECRET, algorithm=algorithm)
        assert long.verify(token, now=NOW).sub == "alice"


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = TokenVerifier.from_secret(SECRET, audience="gateway", issuer="https://idp")
    good = hs_token(aud=["other", "gateway"], iss="https://idp")
    assert verifier.verify(good, now=NOW).sub == "alice"
    refused(verifier, hs_token(aud="other", iss="https://idp"), "wrong audience")
    refused(verifier, hs_token(iss="https://idp"), "the aud claim is missing")
    refused(verifier, hs_token(aud="gateway", iss="https://evil"), "wrong issuer")
    refused(verifier, hs_token(aud="gateway"), "the iss claim is missing")
    # Not configured: not checked.
    assert TokenVerifier.from_secret(SECRET).verify(good, now=NOW).sub == "alice"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("short", "must be at least 32 bytes"),
        ("-----BEGIN PUBLIC KEY-----\n" + "A" * 64, "is a public key"),
    ],
)
def test_unfit_secrets_are_refused(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        TokenVerifier.from_secret(secret)
    assert secret not in str(info.value)


def test_mint_token_makes_what_the_verifier_takes() -> None:
    token = mint_token(
        SECRET,
        sub="bob",
        now=NOW,
        ttl=3600,
        channels=[Channel.PRICES],
        symbols=["AAPL"],
        audience="gw",
        issuer="dev",
    )
    verifier = TokenVerifier.from_secret(SECRET, audience="gw", issuer="dev")
    got = verifier.verify(token, now=NOW + 3599)
    assert got == Claims("bob", NOW + 3600, frozenset({Channel.PRICES}), frozenset({"AAPL"}))
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(token, now=NOW + 3600)


@pytest.mark.parametrize(
    ("roles", "admin"), [(None, False), ([], False), (["trader"], False), (["x", "admin"], True)]
)
def test_the_roles_claim_makes_an_administrator(roles: list[str] | None, admin: bool) -> None:
    token = mint_token(SECRET, sub="root", now=NOW, ttl=60, roles=roles)
    assert TokenVerifier.from_secret(SECRET).verify(token, now=NOW).admin is admin


def test_roles_must_be_a_list_of_strings() -> None:
    token = jwt.encode({"sub": "x", "exp": NOW + 60, "roles": "admin"}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="the roles claim must be a list of strings"):
        TokenVerifier.from_secret(SECRET).verify(token, now=NOW)


# --- public keys -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed"])
def test_public_keys_verify_their_own_algorithm(
    kind: str,
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    key: Any = {"rsa": rsa_key, "ec": ec_key, "ed": ed_key}[kind]
    algorithm = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}[kind]
    verifier = TokenVerifier.from_public_key(write(tmp_path, "key.pem", pem(key.public_key())))
    assert verifier.description == algorithm
    assert verifier.verify(jwt.encode(claims(), key, algorithm=algorithm), now=NOW).sub == "alice"
    refused(verifier, jwt.encode(claims(), SECRET, algorithm="HS256"), "algorithm 'HS256' refused")
    refused(verifier, unsigned(claims()), "algorithm 'none' refused")
    other: Any = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }[kind]
    refused(verifier, jwt.encode(claims(), other, algorithm=algorithm), "bad signature")


def test_the_rsa_public_key_used_as_an_hmac_secret_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    # The classic confusion: the attacker knows the public key, signs HS256 with its
    # PEM as the secret, and hopes the server lets the token's alg choose.
    public = pem(rsa_key.public_key())
    verifier = TokenVerifier.from_public_key(write(tmp_path, "key.pem", public))
    for algorithm in ("HS256", "HS384", "HS512"):
        token = handmade(claims(), public, algorithm)
        refused(verifier, token, f"algorithm '{algorithm}' refused: this key verifies RS256 only")


def test_a_certificate_gives_its_public_key(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(ec_key, hashes.SHA256())
    )
    path = write(tmp_path, "cert.pem", certificate.public_bytes(serialization.Encoding.PEM))
    verifier = TokenVerifier.from_public_key(path)
    assert verifier.verify(jwt.encode(claims(), ec_key, algorithm="ES256"), now=NOW).sub == "alice"


def test_unfit_key_files_are_refused_with_what_to_do(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    secp256k1 = ec.generate_private_key(ec.SECP256K1())
    cases = [
        (write(tmp_path, "private.pem", private), "holds a private key: give the public key"),
        (write(tmp_path, "junk.pem", "hello"), "is not a PEM public key or certificate"),
        (write(tmp_path, "weak.pem", pem(weak.public_key())), "1024-bit RSA key"),
        (write(tmp_path, "k1.pem", pem(secp256k1.public_key())), "curve secp256k1"),
        (tmp_path / "missing.pem", "cannot read"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            TokenVerifier.from_public_key(path)


# --- JWKS --------------------------------------------------------------------------


def jwk(key: Any, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, **extra}


def jwks_file(tmp_path: Path, *keys: dict[str, Any]) -> Path:
    return write(tmp_path, "jwks.json", json.dumps({"keys": list(keys)}))


def test_jwks_keys_are_chosen_by_kid(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    path = jwks_file(
        tmp_path,
        jwk(rsa_key, kid="2026-01"),
        jwk(ec_key, kid="2026-02"),
        jwk(ed_key, kid="enc", use="enc"),  # an encryption key: skipped
    )
    verifier = TokenVerifier.from_jwks(path)
    assert verifier.description == "ES256/RS256 from 2 JWKS keys"
    old = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "2026-01"})
    new = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "2026-02"})
    assert verifier.verify(old, now=NOW).sub == verifier.verify(new, now=NOW).sub == "alice"
    # The kid names the key; the key, not the token, names the algorithm.
    swapped = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "2026-02"})
    refused(verifier, swapped, "algorithm 'RS256' refused: this key verifies ES256 only")
    unknown = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "2025-12"})
    refused(verifier, unknown, "unknown kid '2025-12'")
    refused(verifier, jwt.encode(claims(), rsa_key, algorithm="RS256"), "the token names no kid")
    refused(verifier, jwt.encode(claims(), SECRET, algorithm="HS256"), "the token names no kid")
    forged = unsigned(claims(), kid="2026-01")
    refused(verifier, forged, "algorithm 'none' refused")


def test_a_single_jwks_key_needs_no_kid(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    verifier = TokenVerifier.from_jwks(jwks_file(tmp_path, jwk(ed_key)))
    token = jwt.encode(claims(), ed_key, algorithm="EdDSA")
    assert verifier.verify(token, now=NOW).sub == "alice"


def test_unfit_jwks_files_are_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    cases: list[tuple[Any, str]] = [
        ("not json", "is not JSON"),
        ({"keys": []}, "has no keys"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "keys[0] is a shared secret"),
        ({"keys": [private]}, "keys[0] holds a private key"),
        ({"keys": [jwk(ec_key, alg="HS256")]}, "keys[0] names alg 'HS256'"),
        ({"keys": [jwk(ec_key, kid="a"), jwk(rsa_key, kid="a")]}, "kid 'a' is given twice"),
        ({"keys": [jwk(ec_key), jwk(rsa_key, kid="b")]}, "each needs a kid"),
        ({"keys": [jwk(ec_key, use="enc")]}, "has no signing keys"),
        ({"keys": [{"kty": "XYZ"}]}, "keys[0]: Unsupported kty"),
    ]
    for document, message in cases:
        text = document if isinstance(document, str) else json.dumps(document)
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            TokenVerifier.from_jwks(write(tmp_path, "jwks.json", text))


# --- configuration -----------------------------------------------------------------


def test_a_key_turns_authentication_on(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert not Config().authentication
    assert Config().token_verifier() is None
    secret = Config.from_env({"REALTIME_JWT_SECRET": SECRET})
    assert secret.authentication
    assert SECRET not in repr(secret)
    verifier = secret.token_verifier()
    assert verifier is not None
    assert verifier.description == "HS256"
    path = write(tmp_path, "key.pem", pem(ec_key.public_key()))
    public = Config(jwt_public_key=path, jwt_audience="gw", jwt_issuer="idp")
    verifier = public.token_verifier()
    assert verifier is not None
    assert (verifier.description, verifier.audience, verifier.issuer) == ("ES256", "gw", "idp")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"REALTIME_JWT_SECRET": "too short"},
            "--jwt-secret (REALTIME_JWT_SECRET) must be at least 32 bytes",
        ),
        (
            {"REALTIME_JWT_SECRET": SECRET, "REALTIME_JWKS": "jwks.json"},
            "--jwt-secret (REALTIME_JWT_SECRET) and --jwks (REALTIME_JWKS): give one way",
        ),
        (
            {"REALTIME_JWT_AUDIENCE": "gw"},
            "--jwt-audience (REALTIME_JWT_AUDIENCE) checks tokens: give a key too",
        ),
        (
            {"REALTIME_JWT_PUBLIC_KEY": "/nonexistent/key.pem"},
            "--jwt-public-key (REALTIME_JWT_PUBLIC_KEY): cannot read /nonexistent/key.pem",
        ),
        (
            {"REALTIME_JWKS": "/nonexistent/jwks.json"},
            "--jwks (REALTIME_JWKS): cannot read /nonexistent/jwks.json",
        ),
        (
            {"REALTIME_HOST": "0.0.0.0"},
            "--host (REALTIME_HOST) '0.0.0.0' is reachable from other machines and "
            "authentication is off",
        ),
        ({"REALTIME_HOST": "gateway.internal"}, "or --insecure-no-auth"),
    ],
)
def test_bad_authentication_settings_name_the_setting(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match="REALTIME_") as info:
        Config.from_env(environ)
    assert message in str(info.value)
    assert "too short" not in str(info.value)  # the secret is never repeated


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_key(host: str) -> None:
    # ("[::1]" is refused before this check: the listener cannot bind a bracketed host.)
    assert Config(host=host).host == host


def test_other_addresses_need_a_key_or_the_insecure_flag() -> None:
    assert Config(host="0.0.0.0", jwt_secret=SECRET).authentication
    assert not Config(host="0.0.0.0", insecure_no_auth=True).authentication


# --- realtime token ------------------------------------------------------------------


def run_token(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REALTIME, "token", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", ""), **environ},
    )


def test_the_token_command_mints_what_the_gateway_verifies() -> None:
    environ = {"REALTIME_JWT_SECRET": SECRET, "REALTIME_JWT_AUDIENCE": "gw"}
    before = time.time()
    result = run_token(
        "--sub",
        "alice",
        "--channels",
        "prices,alerts",
        "--symbols",
        "AAPL",
        "--ttl",
        "1h",
        environ=environ,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    verifier = Config.from_env(environ).token_verifier()
    assert verifier is not None
    got = verifier.verify(token, now=time.time())
    assert got.sub == "alice"
    assert got.channels == frozenset({Channel.PRICES, Channel.ALERTS})
    assert got.symbols == frozenset({"AAPL"})
    assert before + 3600 - 1 <= got.exp <= time.time() + 3600
    # Defaults: every channel and symbol, one hour; the secret may come as a flag.
    result = run_token("--sub", "bob", "--jwt-secret", SECRET, environ={})
    assert result.returncode == 0, result.stderr
    everything = TokenVerifier.from_secret(SECRET).verify(result.stdout.strip(), now=time.time())
    assert (everything.channels, everything.symbols, everything.admin) == (None, None, False)
    # --admin: roles ["admin"], the HTTP side's administrator.
    result = run_token("--sub", "root", "--admin", "--jwt-secret", SECRET, environ={})
    assert result.returncode == 0, result.stderr
    assert TokenVerifier.from_secret(SECRET).verify(result.stdout.strip(), now=time.time()).admin


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        ((), {}, "token: signs with the gateway's shared secret: set REALTIME_JWT_SECRET"),
        (
            (),
            {"REALTIME_JWKS": "jwks.json"},
            "this gateway verifies with REALTIME_JWKS: tokens for it come from the issuer",
        ),
        (("--jwt-secret", "short"), {}, "must be at least 32 bytes"),
        (("--channels", "prices,alert"), {"REALTIME_JWT_SECRET": SECRET}, "unknown channel"),
        (("--symbols", "aapl"), {"REALTIME_JWT_SECRET": SECRET}, "'aapl' is not a ticker"),
        (("--ttl", "soon"), {"REALTIME_JWT_SECRET": SECRET}, "--ttl must be a duration"),
        (("--ttl", "0s"), {"REALTIME_JWT_SECRET": SECRET}, "--ttl must be a duration"),
    ],
)
def test_the_token_command_says_what_is_missing(
    args: tuple[str, ...], environ: dict[str, str], message: str
) -> None:
    result = run_token("--sub", "alice", *args, environ=environ)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


# --- safe by default -----------------------------------------------------------------


def test_serve_refuses_a_public_address_without_a_key() -> None:
    result = subprocess.run(
        [*REALTIME, "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "authentication is off: give a key (--jwt-secret" in result.stderr, result.stderr
    assert "or --insecure-no-auth" in result.stderr


async def read_log_until(process: trio.Process, log: list[bytes], text: bytes) -> bytes:
    """The process's log once it holds ``text`` (the caller's fail_after bounds it)."""
    assert process.stderr is not None
    while text not in b"".join(log):
        chunk = await process.stderr.receive_some()
        assert chunk, b"".join(log).decode()
        log.append(bytes(chunk))
    return b"".join(log)


async def stop(process: trio.Process, log: list[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_log, process, log)
        assert await process.wait() == 0


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((), b"WARNING realtime.server: Authentication is off: whoever reaches 127.0.0.1:"),
        (
            ("--jwt-secret", SECRET),
            b"INFO realtime.server: Authentication on: connections need a token (HS256)",
        ),
    ],
)
async def test_serve_says_whether_authentication_is_on(args: tuple[str, ...], line: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        process, port, log = await start_process("--feeds", "false", *args)
        text = await read_log_until(process, log, line)
        await stop(process, log)
    assert text.count(b"Authentication") == 1
    if not args:
        assert b"127.0.0.1:%d reads every channel (give --jwt-secret" % port in text


PUBLIC = ("--host", "0.0.0.0", "--insecure-no-auth")


async def test_insecure_no_auth_serves_a_public_address() -> None:
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(
            [*REALTIME, "serve", "--port", "0", "--feeds", "false", *PUBLIC],
            stderr=subprocess.PIPE,
        )
        log: list[bytes] = []
        text = await read_log_until(process, log, b"reads every channel")
        await stop(process, log)
    assert b"Authentication is off: whoever reaches 0.0.0.0:" in text
