"""The sidecar's error answers: one exception class per kind, carrying its HTTP status.

Every kind is counted in ``signalops_errors_total{route,kind}`` and answered as
``{"error": kind, "message": ...}``; the message says what is wrong and where. Input checks
in :mod:`signalops.serving.inputs` raise :class:`~signalops.serving.inputs.InputError`
(422 unless they say otherwise), which these specialise.
"""

from __future__ import annotations

from typing import ClassVar

from signalops.serving.inputs import InputError


class ApiError(InputError):
    """An answer other than 2xx: ``status`` and ``kind`` come from the class."""

    status_code: ClassVar[int] = 422
    error_kind: ClassVar[str] = "bad_request"

    def __init__(self, message: str):
        super().__init__(message, self.status_code, self.error_kind)


class MalformedRequest(ApiError):
    """The body is not what the protocol frames (empty, not JSON, broken binary header)."""

    status_code = 400


class InvalidInput(ApiError):
    """Well-formed, but a field is missing, of the wrong type or out of range."""


class Unauthorized(ApiError):
    status_code, error_kind = 401, "unauthorized"


class UnknownModel(ApiError):
    status_code, error_kind = 404, "unknown_model"


class UnknownVersion(ApiError):
    status_code, error_kind = 404, "unknown_version"


class UnknownSymbol(ApiError):
    status_code, error_kind = 404, "unknown_symbol"


class TooLarge(ApiError):
    status_code, error_kind = 413, "too_large"


class UnsupportedMediaType(ApiError):
    status_code, error_kind = 415, "unsupported_media_type"


class StaleFeatures(ApiError):
    status_code, error_kind = 422, "stale_features"


class BadFeatures(ApiError):
    status_code, error_kind = 422, "bad_features"


class NotReady(ApiError):
    """No model loaded yet: answered with ``Retry-After``."""

    status_code, error_kind = 503, "not_ready"


class RegistryDown(ApiError):
    status_code, error_kind = 503, "registry_down"
