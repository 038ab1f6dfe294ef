"""The gateway's TLS context from ``--certfile`` and ``--keyfile``, with errors that say
which file is wrong and why.

OpenSSL's own errors name neither file (``[SSL] PEM lib``), and for an encrypted key
it asks for a pass phrase on the terminal, which blocks a service's start for ever.
So the files are looked at first, the key is loaded with a pass phrase callback that
refuses, and what OpenSSL still reports is translated. :class:`~realtime.Config`
loads the context once when it is built, so that a bad file stops ``realtime serve``
before anything is bound; the server loads it again to serve.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final, Literal

#: What each file must hold: a marker found in every such PEM block, and how to say it.
_CERTIFICATE: Final = (b"-----BEGIN CERTIFICATE-----", "certificate (-----BEGIN CERTIFICATE-----)")
#: Any PEM key: PKCS#8, RSA, EC, encrypted or not.
_PRIVATE_KEY: Final = (b"PRIVATE KEY-----", "private key (-----BEGIN PRIVATE KEY-----)")
#: Larger than any certificate chain or key; more is not a PEM file of ours.
_MAX_PEM_BYTES: Final = 1024 * 1024


class TLSFileError(ValueError):
    """A certificate or key file that cannot serve TLS; ``setting`` names the culprit."""

    def __init__(self, setting: Literal["certfile", "keyfile"], message: str) -> None:
        super().__init__(message)
        self.setting = setting


class _EncryptedKey(Exception):
    """Raised by the pass phrase callback: there is no one to ask."""


def _refuse_pass_phrase() -> bytes:
    raise _EncryptedKey


def server_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """A server-side context for the chain in ``certfile`` and the key in ``keyfile``
    (both PEM; they may be the same file), offering HTTP/1.1 by ALPN.

    Never prompts. Raises :exc:`TLSFileError` for a file that cannot be read, holds no
    certificate or key, an encrypted key, a key that is not the certificate's, or
    anything else OpenSSL refuses.
    """
    _read_pem(certfile, "certfile", _CERTIFICATE)
    _read_pem(keyfile, "keyfile", _PRIVATE_KEY)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile, password=_refuse_pass_phrase)
    except _EncryptedKey:
        raise TLSFileError(
            "keyfile",
            f"{keyfile} is encrypted, and the gateway does not ask for pass phrases: "
            f"give it the key decrypted (openssl pkey -in {keyfile} -out KEY.pem), "
            "readable only by the gateway's user",
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSFileError(
                "keyfile", f"{keyfile} is not the private key of the certificate in {certfile}"
            ) from None
        raise TLSFileError(
            "certfile", f"OpenSSL cannot load {certfile} with {keyfile}: {exc.reason or exc}"
        ) from None
    except OSError as exc:  # removed or made unreadable since _read_pem
        raise TLSFileError("certfile", f"cannot read {exc.filename}: {exc.strerror}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _read_pem(
    path: Path, setting: Literal["certfile", "keyfile"], expected: tuple[bytes, str]
) -> None:
    marker, described = expected
    try:
        with path.open("rb") as file:
            text = file.read(_MAX_PEM_BYTES)
    except OSError as exc:
        raise TLSFileError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    if marker not in text:
        raise TLSFileError(setting, f"{path} holds no PEM {described}")
