"""Subscriber key pairs and their serialisation for encrypted storage."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pipeline.errors import PolicyError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
_CURVES: dict[str, ec.EllipticCurve] = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}


def generate_key(key_type: str) -> PrivateKey:
    """Generate a key of ``key_type`` (rsa-2048|rsa-3072|rsa-4096|ec-p256|ec-p384). Raises PolicyError."""
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    raise PolicyError(f"unsupported key type {key_type!r}")


def key_to_der(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER -- only ever handed straight to the secret box."""
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_der(der: bytes) -> PrivateKey:
    # Our own keys were validated when generated; skipping RSA's consistency
    # check on reload saves milliseconds of GIL-held work per request.
    key: PrivateKeyTypes = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PolicyError("stored key is of an unsupported type")
    return key


def key_type_of(public_key: object) -> str:
    """Our key-type name for a public key, or raise PolicyError."""
    if isinstance(public_key, rsa.RSAPublicKey):
        name = f"rsa-{public_key.key_size}"
        if name in _RSA_BITS:
            return name
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        for name, curve in _CURVES.items():
            if public_key.curve.name == curve.name:
                return name
    raise PolicyError("the certificate's key is not one of the supported types")


def public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
