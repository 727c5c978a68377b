"""Ed25519 keys, addresses and wallet key files.

- Address = first 20 bytes of H("addr", public key) (chain/hashing.py). Text form: hex.
- Key file (JSON): ``{"version": 1, "kdf": "scrypt", "n", "r", "p", "salt", "nonce", "ciphertext"}``
  with the 32-byte Ed25519 seed sealed by AES-256-GCM under scrypt(passphrase); or, only when asked
  explicitly (devnet), ``{"version": 1, "kdf": "none", "seed": hex}``.
- The devnet faucet key is derived from the documented seed ``sha256(b"pouw devnet faucet")``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chain.errors import KeyFileError
from chain.hashing import tagged_hash

ADDRESS_LEN = 20
PUBKEY_LEN = 32
SIG_LEN = 64
ZERO_ADDRESS = b"\x00" * ADDRESS_LEN
FAUCET_SEED_PHRASE = b"pouw devnet faucet"


def address_of(pubkey: bytes) -> bytes:
    """The 20-byte account address of an Ed25519 public key."""
    return tagged_hash(b"addr", pubkey)[:ADDRESS_LEN]


def parse_address(text: str) -> bytes:
    s = text[2:] if text.startswith("0x") else text
    b = bytes.fromhex(s)
    if len(b) != ADDRESS_LEN:
        raise ValueError(f"address must be {ADDRESS_LEN} bytes, got {len(b)}")
    return b


def verify_sig(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """Strict Ed25519 verification (libsodium rejects non-canonical S and small-order keys)."""
    try:
        nacl.signing.VerifyKey(pubkey).verify(message, signature)
        return True
    except (
        nacl.exceptions.BadSignatureError,
        nacl.exceptions.ValueError,
        nacl.exceptions.TypeError,
        ValueError,
        TypeError,
    ):
        return False


@dataclass(frozen=True)
class PrivateKey:
    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")

    @classmethod
    def generate(cls) -> "PrivateKey":
        return cls(os.urandom(32))

    @classmethod
    def from_phrase(cls, phrase: bytes) -> "PrivateKey":
        """Deterministic key for devnets and tests: seed = sha256(phrase)."""
        return cls(hashlib.sha256(phrase).digest())

    @cached_property
    def _sk(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @cached_property
    def pubkey(self) -> bytes:
        return bytes(self._sk.verify_key)

    @cached_property
    def address(self) -> bytes:
        return address_of(self.pubkey)

    def sign(self, message: bytes) -> bytes:
        return self._sk.sign(message).signature


def faucet_key() -> PrivateKey:
    """The devnet faucet key (seed = sha256(b"pouw devnet faucet")); funded in configs/devnet.toml."""
    return PrivateKey.from_phrase(FAUCET_SEED_PHRASE)


# --- key files --------------------------------------------------------------------------------------

SCRYPT_N = 1 << 15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAX_COST = 2 * SCRYPT_N * SCRYPT_R * SCRYPT_P  # n·r·p a key file may ask for (twice ours: 64 MiB)


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def save_key(
    path: str | Path,
    key: PrivateKey,
    passphrase: str | None,
    *,
    allow_unencrypted: bool = False,
    scrypt_n: int = SCRYPT_N,
) -> None:
    """Write a key file (mode 0600). Without a passphrase, requires allow_unencrypted=True."""
    if passphrase is None:
        if not allow_unencrypted:
            raise KeyFileError("refusing to write an unencrypted key file without allow_unencrypted=True")
        doc = {"version": 1, "kdf": "none", "address": key.address.hex(), "seed": key.seed.hex()}
    else:
        salt, nonce = os.urandom(16), os.urandom(12)
        k = _kdf(passphrase, salt, scrypt_n, SCRYPT_R, SCRYPT_P)
        ct = AESGCM(k).encrypt(nonce, key.seed, b"pouw-key-v1")
        doc = {
            "version": 1,
            "kdf": "scrypt",
            "n": scrypt_n,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "address": key.address.hex(),
            "salt": salt.hex(),
            "nonce": nonce.hex(),
            "ciphertext": ct.hex(),
        }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def load_key(path: str | Path, passphrase: str | None = None) -> PrivateKey:
    """Read a key file; raises KeyFileError on a wrong passphrase or a damaged file."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("version") != 1:
            raise KeyFileError(f"{path}: unsupported key file version {doc.get('version')!r}")
        if doc["kdf"] == "none":
            key = PrivateKey(bytes.fromhex(doc["seed"]))
        elif doc["kdf"] == "scrypt":
            if passphrase is None:
                raise KeyFileError(f"{path}: key file is encrypted; a passphrase is required")
            n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])
            if n < 2 or n & (n - 1) or r < 1 or p < 1 or n * r * p > SCRYPT_MAX_COST:
                raise KeyFileError(
                    f"{path}: scrypt parameters out of range (n={n}, r={r}, p={p}; n·r·p at most {SCRYPT_MAX_COST})"
                )
            k = _kdf(passphrase, bytes.fromhex(doc["salt"]), n, r, p)
            try:
                seed = AESGCM(k).decrypt(bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["ciphertext"]), b"pouw-key-v1")
            except InvalidTag as e:
                raise KeyFileError(f"{path}: wrong passphrase or corrupted key file") from e
            key = PrivateKey(seed)
        else:
            raise KeyFileError(f"{path}: unknown kdf {doc['kdf']!r}")
    except KeyFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KeyFileError(f"{path}: unreadable key file ({e})") from e
    if "address" in doc and doc["address"] != key.address.hex():
        raise KeyFileError(f"{path}: address does not match the key")
    return key
