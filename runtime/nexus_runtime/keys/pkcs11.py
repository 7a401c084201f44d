"""Keys on a PKCS#11 token (an HSM, a cloud KMS's PKCS#11 library, SoftHSM2 in tests).

Keys are generated on the token as token objects that are sensitive and not
extractable (``CKA_SENSITIVE``, ``CKA_EXTRACTABLE = false``), so the token
refuses to reveal or wrap the private half: every signature is computed
inside it. A reference is the label of the key pair (both halves carry it,
with the same ``CKA_ID``). Mechanisms: ``CKM_SHA256_RSA_PKCS`` (RS256),
``CKM_SHA256_RSA_PKCS_PSS`` (PS256), ``CKM_ECDSA`` over a SHA-256 digest made
here (ES256, the one mechanism every token has) and ``CKM_EDDSA`` (Ed25519),
each only where the token lists it.

One session is opened per provider and shared under a lock: tokens allow one
login per application, and signing is quick.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from nexus_runtime.keys.algorithms import PSS_SALT_BYTES, Algorithm, PublicKey
from nexus_runtime.keys.provider import KeyNotFoundError, KeyProviderError

__all__ = ["DEFAULT_RSA_BITS", "Pkcs11Key", "Pkcs11KeyProvider", "read_pin"]

DEFAULT_RSA_BITS = 3072
MAX_PIN_BYTES = 256
_P256_OID = "secp256r1"
_ED25519_OID = "1.3.101.112"


def read_pin(path: Path) -> str:
    """The user PIN from a file that only its owner can read (KeyProviderError otherwise)."""
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise KeyProviderError(f"PIN file {path} is readable by others; chmod 600 it")
        raw = path.read_bytes()[: MAX_PIN_BYTES + 1]
    except FileNotFoundError:
        raise KeyProviderError(f"PIN file {path} does not exist") from None
    except OSError as exc:
        raise KeyProviderError(f"PIN file {path} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_PIN_BYTES:
        raise KeyProviderError(f"PIN file {path} is longer than {MAX_PIN_BYTES} bytes")
    return raw.decode("utf-8", "strict").strip()


def _der_octets(value: bytes) -> bytes:
    """The content of a DER OCTET STRING (how tokens return CKA_EC_POINT)."""
    if len(value) < 2 or value[0] != 0x04:
        return value
    length = value[1]
    offset = 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(value[2 : 2 + count], "big")
        offset = 2 + count
    if offset + length != len(value):
        return value
    return value[offset:]


@dataclass
class Pkcs11Key:
    """A key pair on the token; ``sign`` runs on the token."""

    reference: str
    algorithm: Algorithm
    _provider: Pkcs11KeyProvider
    _private: Any
    _public: PublicKey

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._provider.sign_with(self._private, self.algorithm, message)


class Pkcs11KeyProvider:
    """One token of a PKCS#11 library, logged in with the user PIN."""

    kind = "pkcs11"

    def __init__(self, module: Path, token_label: str, pin: str) -> None:
        try:
            import pkcs11
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise KeyProviderError(f"python-pkcs11 is not installed: {exc}") from None
        self._pkcs11 = pkcs11
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self._lock = threading.Lock()
        self._session: Any = None
        try:
            self._lib = pkcs11.lib(str(module))
            self._token = self._lib.get_token(token_label=token_label)
        except pkcs11.exceptions.NoSuchToken:
            raise KeyProviderError(
                f"no PKCS#11 token labelled {token_label!r} in {module}"
            ) from None
        except (pkcs11.exceptions.PKCS11Error, RuntimeError, OSError) as exc:
            raise KeyProviderError(f"cannot load the PKCS#11 module {module}: {exc}") from None

    def _open_session(self) -> Any:
        if self._session is None:
            errors = self._pkcs11.exceptions
            try:
                self._session = self._token.open(user_pin=self._pin, rw=True)
            except errors.UserAlreadyLoggedIn:
                # A login holds for the whole process (PKCS#11 sessions of one
                # application share it): another provider of this token did it.
                self._session = self._token.open(rw=True)
            except errors.PinIncorrect:
                raise KeyProviderError(f"the PIN for token {self.token_label!r} is wrong") from None
            except errors.PKCS11Error as exc:
                raise KeyProviderError(f"cannot open token {self.token_label!r}: {exc!r}") from None
        return self._session

    def mechanisms(self) -> set[str]:
        """Names of the mechanisms the token offers (``SHA256_RSA_PKCS``, ``EDDSA`` …)."""
        return {m.name for m in self._token.slot.get_mechanisms()}

    def supports(self, algorithm: Algorithm) -> bool:
        needed = {
            Algorithm.RS256: "SHA256_RSA_PKCS",
            Algorithm.PS256: "SHA256_RSA_PKCS_PSS",
            Algorithm.ES256: "ECDSA",
            Algorithm.EDDSA: "EDDSA",
        }[algorithm]
        return needed in self.mechanisms()

    def _find(self, session: Any, reference: str, object_class: Any) -> Any | None:
        found = list(
            session.get_objects(
                {
                    self._pkcs11.Attribute.LABEL: reference,
                    self._pkcs11.Attribute.CLASS: object_class,
                }
            )
        )
        if len(found) > 1:
            raise KeyProviderError(
                f"token {self.token_label!r} holds {len(found)} keys {reference!r}"
            )
        return found[0] if found else None

    def exists(self, reference: str) -> bool:
        with self._lock:
            session = self._open_session()
            return self._find(session, reference, self._pkcs11.ObjectClass.PRIVATE_KEY) is not None

    def generate(self, reference: str, algorithm: Algorithm) -> Pkcs11Key:
        p = self._pkcs11
        if not self.supports(algorithm):
            raise KeyProviderError(f"token {self.token_label!r} cannot sign {algorithm}")
        private_template = {
            p.Attribute.SENSITIVE: True,
            p.Attribute.EXTRACTABLE: False,
            p.Attribute.TOKEN: True,
            p.Attribute.PRIVATE: True,
            p.Attribute.SIGN: True,
        }
        public_template = {p.Attribute.TOKEN: True, p.Attribute.VERIFY: True}
        key_id = hashlib.sha256(reference.encode()).digest()[:16]
        with self._lock:
            session = self._open_session()
            if self._find(session, reference, p.ObjectClass.PRIVATE_KEY) is not None:
                raise KeyProviderError(
                    f"token {self.token_label!r} already holds a key {reference!r}"
                )
            try:
                if algorithm in (Algorithm.RS256, Algorithm.PS256):
                    session.generate_keypair(
                        p.KeyType.RSA,
                        DEFAULT_RSA_BITS,
                        id=key_id,
                        label=reference,
                        store=True,
                        public_template=public_template,
                        private_template=private_template,
                    )
                else:
                    from pkcs11.util.ec import encode_named_curve_parameters

                    if algorithm is Algorithm.ES256:
                        key_type, curve, mechanism = p.KeyType.EC, _P256_OID, None
                    else:
                        key_type = p.KeyType.EC_EDWARDS
                        curve = _ED25519_OID
                        mechanism = p.Mechanism.EC_EDWARDS_KEY_PAIR_GEN
                    params = session.create_domain_parameters(
                        key_type,
                        {p.Attribute.EC_PARAMS: encode_named_curve_parameters(curve)},
                        local=True,
                    )
                    extra = {"mechanism": mechanism} if mechanism is not None else {}
                    params.generate_keypair(
                        id=key_id,
                        label=reference,
                        store=True,
                        public_template=public_template,
                        private_template=private_template,
                        **extra,
                    )
            except p.exceptions.PKCS11Error as exc:
                raise KeyProviderError(
                    f"token {self.token_label!r} refused to make a key: {exc!r}"
                ) from None
        return self.open(reference, algorithm)

    def open(self, reference: str, algorithm: Algorithm) -> Pkcs11Key:
        p = self._pkcs11
        with self._lock:
            session = self._open_session()
            private = self._find(session, reference, p.ObjectClass.PRIVATE_KEY)
            public = self._find(session, reference, p.ObjectClass.PUBLIC_KEY)
            if private is None or public is None:
                raise KeyNotFoundError(
                    f"token {self.token_label!r} holds no key pair {reference!r}"
                )
            public_key = self._public_key(public, algorithm)
        algorithm.check_key(public_key)
        return Pkcs11Key(reference, algorithm, self, private, public_key)

    def _public_key(self, public: Any, algorithm: Algorithm) -> PublicKey:
        p = self._pkcs11
        if algorithm in (Algorithm.RS256, Algorithm.PS256):
            n = int.from_bytes(public[p.Attribute.MODULUS], "big")
            e = int.from_bytes(public[p.Attribute.PUBLIC_EXPONENT], "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        point = _der_octets(bytes(public[p.Attribute.EC_POINT]))
        if algorithm is Algorithm.ES256:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        return ed25519.Ed25519PublicKey.from_public_bytes(point)

    def sign_with(self, private: Any, algorithm: Algorithm, message: bytes) -> bytes:
        p = self._pkcs11
        try:
            with self._lock:
                if algorithm is Algorithm.RS256:
                    return bytes(private.sign(message, mechanism=p.Mechanism.SHA256_RSA_PKCS))
                if algorithm is Algorithm.PS256:
                    return bytes(
                        private.sign(
                            message,
                            mechanism=p.Mechanism.SHA256_RSA_PKCS_PSS,
                            mechanism_param=(p.Mechanism.SHA256, p.MGF.SHA256, PSS_SALT_BYTES),
                        )
                    )
                if algorithm is Algorithm.ES256:
                    digest = hashlib.sha256(message).digest()
                    return bytes(private.sign(digest, mechanism=p.Mechanism.ECDSA))
                return bytes(private.sign(message, mechanism=p.Mechanism.EDDSA))
        except p.exceptions.PKCS11Error as exc:
            raise KeyProviderError(f"token {self.token_label!r} could not sign: {exc!r}") from None

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
