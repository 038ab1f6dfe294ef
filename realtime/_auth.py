"""Tokens: who a connection is, and what it may subscribe to.

Theory of operation
-------------------
A key turns authentication on: ``--jwt-secret`` (a shared secret, HS256/384/512),
``--jwt-public-key FILE`` (one PEM public key or certificate: RS256, ES256/384/512 by
curve, EdDSA) or ``--jwks FILE`` (a JWKS document whose keys are chosen by the token's
``kid``, so that a new key can be published before tokens are signed with it). The
loaders below read it once, at start, and refuse a key that is unfit (a short
secret, a private key, an RSA key under 2048 bits, an unknown key type) with a
``ValueError`` that says what to give instead.

The algorithm comes from the key, never from the token (RFC 8725 section 2.1): each
key carries the algorithms it may verify, and PyJWT is told exactly those. So
``alg: none`` is refused, and so is an HS256 token signed with the RSA public key as
its secret (the HS/RS confusion): a public key verifies only its own asymmetric
algorithm, and a secret only the HMAC algorithms its length is fit for (RFC 7518
section 3.2: at least the hash's size, so 32 bytes allow HS256, 48 HS384 too, 64
HS512 too).

:meth:`TokenVerifier.verify` checks the signature and ``aud``/``iss`` (when configured)
with PyJWT, then the claims itself, against ``now`` (Unix seconds) given as an argument,
so tests choose the time: ``sub`` (a non-empty string) and ``exp`` are required, ``nbf``
is honoured, ``channels`` and ``symbols`` (lists) narrow what may be subscribed, and
``roles`` (a list) makes the token an administrator's when it lists :data:`ADMIN_ROLE`,
for the HTTP side only. What it returns is :class:`Claims`, a small frozen object kept
for the connection's life: the token and its other claims are dropped, and equal grant
sets are one shared ``frozenset`` (an idle authenticated connection must cost about what
an anonymous one does). Every refusal is a :class:`TokenError` whose ``reason`` is a
sentence for the log; no reason ever quotes the token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.exceptions import InvalidSubjectError
from jwt.types import Options

from feeds import MAX_USER_LENGTH
from protocol import SYMBOL_PATTERN, Channel

__all__ = [
    "ADMIN_ROLE",
    "MIN_SECRET_BYTES",
    "Claims",
    "TokenError",
    "TokenVerifier",
    "hmac_algorithms",
    "load_jwks",
    "load_public_key",
    "mint_token",
]

#: Shortest ``--jwt-secret``: HS256's hash size (RFC 7518 section 3.2).
MIN_SECRET_BYTES: Final = 32
#: Each HMAC algorithm and the shortest secret it may be used with.
_HMAC: Final = (("HS256", 32), ("HS384", 48), ("HS512", 64))
#: Smallest RSA modulus accepted (RFC 7518 section 3.3).
MIN_RSA_BITS: Final = 2048
#: Asymmetric algorithms a JWKS key may name in its ``alg``.
_JWKS_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Longest ``sub``: it is logged and names the user's connections.
MAX_SUB_LENGTH: Final = MAX_USER_LENGTH
#: The role, in a token's ``roles`` claim, of an administrator: the HTTP side's
#: ``/ws/stats``, ``/metrics`` and every ``/api/*`` take such a token as they take the
#: API key (docs/security.md, "The HTTP side").
ADMIN_ROLE: Final = "admin"
#: Distinct grant sets (and subjects) shared between connections before sharing restarts.
_SHARED_MAX: Final = 4096
_SYMBOL: Final = re.compile(SYMBOL_PATTERN)
_CHANNELS: Final = frozenset(channel.value for channel in Channel)
_CURVES: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class TokenError(Exception):
    """A token that does not authenticate; ``reason`` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Claims:
    """What a verified token says, as a connection keeps it.

    ``sub``: the user. ``exp``: when the token expires, Unix seconds. ``channels``
    and ``symbols``: the channels, and the price symbols, that may be subscribed;
    ``None`` means every one. Equal sets are shared between connections. ``admin``:
    its ``roles`` list :data:`ADMIN_ROLE` (the HTTP side's business; a connection
    gets nothing more for it).
    """

    sub: str
    exp: float
    channels: frozenset[Channel] | None = None
    symbols: frozenset[str] | None = None
    admin: bool = False

    def allows(self, channel: Channel) -> bool:
        """Whether ``channel`` may be subscribed."""
        return self.channels is None or channel in self.channels

    def refused_symbols(self, symbols: Iterable[str]) -> list[str]:
        """The price symbols among ``symbols`` that may not be subscribed, in order."""
        granted = self.symbols
        return [] if granted is None else [s for s in symbols if s not in granted]


def hmac_algorithms(secret: bytes) -> tuple[str, ...]:
    """The HMAC algorithms ``secret`` is long enough for (none below 32 bytes)."""
    return tuple(name for name, size in _HMAC if len(secret) >= size)


def _looks_like_a_key_file(secret: str) -> bool:
    return "-----BEGIN " in secret or secret.startswith(("ssh-", "ecdsa-sha2-"))


def check_secret(secret: str) -> None:
    """Raise ``ValueError`` saying why ``secret`` cannot be a ``--jwt-secret``.

    The message never repeats the secret.
    """
    if _looks_like_a_key_file(secret):
        raise ValueError(
            "is a public key, not a shared secret: give the key's file with --jwt-public-key"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_SECRET_BYTES} bytes (HS256's hash size, RFC 7518 "
            "section 3.2); make one with: openssl rand -base64 48"
        )


def _algorithm_of(key: object) -> str:
    """The one algorithm a public key verifies; ``ValueError`` for a key unfit for any."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"is a {key.key_size}-bit RSA key; RS256 needs at least {MIN_RSA_BITS} bits"
            )
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _CURVES.get(key.curve.name)
        if algorithm is None:
            raise ValueError(
                f"is an EC key on curve {key.curve.name}; use P-256 (ES256), P-384 or P-521"
            )
        return algorithm
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise ValueError(
        f"is a {type(key).__name__.lstrip('_')}; use an RSA (RS256), EC P-256 (ES256) "
        "or Ed25519 (EdDSA) public key"
    )


def load_public_key(path: Path) -> tuple[Any, str]:
    """The public key in PEM file ``path`` (a key, or a certificate's) and its algorithm.

    Raises ``ValueError`` saying what is wrong with the file (the caller names the
    setting): missing, a private key, not PEM, an unfit key.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if b"PRIVATE KEY-----" in data:
        raise ValueError(
            f"{path} holds a private key: give the public key "
            "(openssl pkey -in KEY -pubout -out KEY.pub), and keep the private one with the "
            "token issuer"
        )
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except ValueError:
        raise ValueError(
            f"{path} is not a PEM public key or certificate (-----BEGIN PUBLIC KEY-----)"
        ) from None
    try:
        return key, _algorithm_of(key)
    except ValueError as exc:
        raise ValueError(f"{path} {exc}") from None


def load_jwks(path: Path) -> dict[str | None, tuple[Any, str]]:
    """The signing keys of JWKS file ``path``: ``{kid: (key, algorithm)}``.

    Keys marked ``"use": "enc"`` are skipped. Each key's algorithm is its ``alg`` when
    given, else what its type and curve imply. A single key may lack ``kid`` (it is
    then stored under ``None``); with several, each needs a distinct one. Raises
    ``ValueError`` naming the key (``keys[1]``) and what is wrong: a shared secret
    (``kty: oct``), a private key, an unknown type or algorithm.
    """
    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f'{path} is not JSON: a JWKS is {{"keys": [...]}}') from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'{path} has no keys: a JWKS is {{"keys": [...]}}')
    keys: dict[str | None, tuple[Any, str]] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        if entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") == "oct":
            raise ValueError(f"{where} is a shared secret (kty oct): give it with --jwt-secret")
        if "d" in entry:
            raise ValueError(f"{where} holds a private key: publish only the public part")
        algorithm = entry.get("alg")
        if algorithm is not None and algorithm not in _JWKS_ALGORITHMS:
            raise ValueError(
                f"{where} names alg {str(algorithm)[:20]!r}; use one of "
                f"{', '.join(sorted(_JWKS_ALGORITHMS))}"
            )
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if isinstance(jwk.key, rsa.RSAPublicKey) and jwk.key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{where} is a {jwk.key.key_size}-bit RSA key; use 2048 or more")
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError(f"{where}: kid must be a string")
        if kid in keys:
            raise ValueError(f"{where}: kid {kid!r} is given twice")
        keys[kid] = (jwk.key, jwk.algorithm_name)
    if not keys:
        raise ValueError(f'{path} has no signing keys (every key is "use": "enc")')
    if len(keys) > 1 and None in keys:
        raise ValueError(f"{path}: with several keys, each needs a kid for tokens to name")
    return keys


class TokenVerifier:
    """Verifies tokens against the configured key(s); see the module docstring.

    Build it with :meth:`from_secret`, :meth:`from_public_key` or :meth:`from_jwks`.
    :meth:`verify` does no I/O and never blocks.
    """

    def __init__(
        self,
        keys: Mapping[str | None, tuple[Any, Sequence[str]]],
        *,
        description: str,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self._keys = dict(keys)
        #: What verifies tokens, for the start-up log: ``"HS256 (--jwt-secret)"``.
        self.description = description
        self.audience = audience
        self.issuer = issuer
        self._shared: dict[Any, Any] = {}

    @classmethod
    def from_secret(cls, secret: str, **kwargs: Any) -> TokenVerifier:
        """Verify HMAC tokens signed with ``secret`` (see :func:`check_secret`)."""
        check_secret(secret)
        key = secret.encode()
        algorithms = hmac_algorithms(key)
        return cls({None: (key, algorithms)}, description="/".join(algorithms), **kwargs)

    @classmethod
    def from_public_key(cls, path: Path, **kwargs: Any) -> TokenVerifier:
        """Verify tokens signed for the public key in PEM file ``path``."""
        key, algorithm = load_public_key(path)
        return cls({None: (key, (algorithm,))}, description=algorithm, **kwargs)

    @classmethod
    def from_jwks(cls, path: Path, **kwargs: Any) -> TokenVerifier:
        """Verify tokens signed for a key of JWKS file ``path``, chosen by ``kid``."""
        keys = load_jwks(path)
        algorithms = sorted({algorithm for _, algorithm in keys.values()})
        return cls(
            {kid: (key, (algorithm,)) for kid, (key, algorithm) in keys.items()},
            description=f"{'/'.join(algorithms)} from {len(keys)} JWKS keys",
            **kwargs,
        )

    def verify(self, token: str, *, now: float) -> Claims:
        """The claims of ``token`` if it is valid at ``now`` (Unix seconds).

        Raises :class:`TokenError` for anything else: malformed, unknown ``kid``, an
        algorithm the key does not verify (``none`` included), a bad signature, a
        wrong ``aud`` or ``iss``, a missing or mistyped claim, expired, not yet valid.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token: not a signed JWT") from None
        key, algorithms = self._key_for(header.get("kid"))
        options: Options = {
            "require": ["sub", "exp"],
            # Time is checked below, against the caller's clock.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": self.audience is not None,
            "verify_iss": self.issuer is not None,
        }
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                options=options,
                audience=self.audience,
                issuer=self.issuer,
            )
        except jwt.InvalidAlgorithmError:
            alg = str(header.get("alg"))[:20]
            raise TokenError(
                f"algorithm {alg!r} refused: this key verifies {'/'.join(algorithms)} only"
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature: signed with another key") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"the {exc.claim} claim is missing") from None
        except InvalidSubjectError:
            raise TokenError(
                f"the sub claim must be a string of 1-{MAX_SUB_LENGTH} characters"
            ) from None
        except jwt.InvalidAudienceError:
            raise TokenError(f"wrong audience: aud must include {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise TokenError(f"wrong issuer: iss must be {self.issuer!r}") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {str(exc)[:200]}") from None
        return self._claims(payload, now)

    def _key_for(self, kid: object) -> tuple[Any, Sequence[str]]:
        keys = self._keys
        if len(keys) == 1 and None in keys:
            return keys[None]
        if kid is None:
            if len(keys) == 1:
                return next(iter(keys.values()))
            raise TokenError(f"the token names no kid; the JWKS has {len(keys)} keys")
        found = keys.get(kid) if isinstance(kid, str) else None
        if found is None:
            raise TokenError(f"unknown kid {str(kid)[:64]!r}: no key of the JWKS has it")
        return found

    def _claims(self, payload: dict[str, Any], now: float) -> Claims:
        sub = payload["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
            raise TokenError(f"the sub claim must be a string of 1-{MAX_SUB_LENGTH} characters")
        exp = _number(payload, "exp")
        if exp <= now:
            raise TokenError(f"expired {now - exp:.0f} s ago (sub {sub[:64]!r})")
        if "nbf" in payload and (nbf := _number(payload, "nbf")) > now:
            raise TokenError(f"not valid yet: nbf is {nbf - now:.0f} s ahead (sub {sub[:64]!r})")
        channels = payload.get("channels")
        granted: frozenset[Channel] | None = None
        if channels is not None:
            names = _strings(channels, "channels")
            unknown = [name for name in names if name not in _CHANNELS]
            if unknown:
                raise TokenError(
                    f"the channels claim names unknown channel {unknown[0][:32]!r}; "
                    f"channels are {', '.join(Channel)}"
                )
            granted = self._share(frozenset(Channel(name) for name in names))
        symbols = payload.get("symbols")
        entitled: frozenset[str] | None = None
        if symbols is not None:
            names = _strings(symbols, "symbols")
            invalid = [name for name in names if not _SYMBOL.fullmatch(name)]
            if invalid:
                raise TokenError(f"the symbols claim holds {invalid[0][:32]!r}, not a ticker")
            entitled = self._share(frozenset(names))
        roles = payload.get("roles")
        admin = roles is not None and ADMIN_ROLE in _strings(roles, "roles")
        return Claims(self._share(sub), float(exp), granted, entitled, admin)

    def _share(self, value: Any) -> Any:
        """One object for equal values, so that connections with the same grants (or
        user) hold one set between them."""
        shared = self._shared
        if len(shared) >= _SHARED_MAX:
            shared.clear()
        return shared.setdefault(value, value)


def _number(payload: Mapping[str, Any], claim: str) -> float:
    value = payload[claim]
    if type(value) not in (int, float):
        raise TokenError(f"the {claim} claim must be a number (Unix seconds)")
    return float(value)


def _strings(value: object, claim: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenError(f"the {claim} claim must be a list of strings")
    return value


def mint_token(
    secret: str,
    *,
    sub: str,
    now: float,
    ttl: float,
    channels: Sequence[Channel] | None = None,
    symbols: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """An HS256 token for ``sub``, valid from ``now`` for ``ttl`` seconds, signed with
    ``secret``; ``channels`` and ``symbols`` become the grants (``None``: every one),
    ``roles`` its roles (``[ADMIN_ROLE]``: an administrator's).
    For development and tests: production tokens come from the identity provider."""
    check_secret(secret)
    claims: dict[str, Any] = {"sub": sub, "iat": int(now), "exp": int(now + ttl)}
    if channels is not None:
        claims["channels"] = [str(channel) for channel in channels]
    if symbols is not None:
        claims["symbols"] = list(symbols)
    if roles is not None:
        claims["roles"] = list(roles)
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret.encode(), algorithm="HS256")
