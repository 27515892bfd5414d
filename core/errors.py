"""Typed errors raised at the boundaries; the CLIs map them to one-line messages and exit codes."""
from __future__ import annotations


class MsaError(Exception):
    """Base of every error a user can act on. ``reason`` is a stable machine-readable code."""

    exit_code = 1
    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    def one_line(self) -> str:
        return " ".join(str(self).split())


class MediaError(MsaError):
    """A clip cannot be probed or decoded (reasons: corrupt_media, no_audio, no_video, not_found, permission_denied, timeout, too_short, too_large)."""

    reason = "corrupt_media"


class UsageError(MsaError):
    """Bad command-line arguments or configuration."""

    exit_code = 2
    reason = "usage"


class DataError(MsaError):
    """A features file or label.csv that does not match the expected schema."""

    reason = "bad_data"


class BundleError(MsaError):
    """A checkpoint bundle that is missing, inconsistent or does not match the current extractors."""

    reason = "bad_bundle"


class MissingBackendError(MsaError):
    """An optional package or model weights are not available offline; the message names what to supply."""

    reason = "missing_backend"


class ExtractionError(MsaError):
    """An extractor failed on one clip (the reason code says why)."""

    reason = "extraction_failed"
