"""Exceptions of the chain layer. Every rejection carries a short, stable reason string."""

from __future__ import annotations


class ChainError(Exception):
    """Base of all chain errors."""


class ValidationError(ChainError):
    """A rejected transaction, header or block.

    `reason` is a short stable string (Bitcoin style, e.g. ``bad-txn-nonce``); tests assert on it.
    `punish` says whether the peer that sent the object is at fault; `retry_later` says the object may
    become valid later (e.g. ``time-too-new``, an unknown parent) and should be kept or re-requested.
    `layer` is set by chain.transition.validate_and_apply to the block-validation layer that raised it
    ("proof", "sanity", "context" or "state"; None elsewhere).
    """

    layer: str | None = None

    def __init__(self, reason: str, detail: str = "", *, punish: bool = True, retry_later: bool = False):
        self.reason = reason
        self.detail = detail
        self.punish = punish
        self.retry_later = retry_later
        super().__init__(f"{reason}: {detail}" if detail else reason)


class EncodingError(ValidationError):
    """Bytes that are not the canonical encoding of a well-formed object."""


class TxError(ValidationError):
    """A transaction rejected by a context-free or state check."""


class BlockError(ValidationError):
    """A header or block rejected by validation."""


class StorageError(ChainError):
    """A missing, corrupted or mismatched database; the message names the problem."""


class KeyFileError(ChainError):
    """A wallet key file that cannot be read or decrypted."""
