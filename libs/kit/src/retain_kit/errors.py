"""Errors that carry their gRPC status; one interceptor turns them into aborts."""

from __future__ import annotations

import grpc


class RetainError(Exception):
    """Base error. Subclasses declare the gRPC status; `field` names the offending input."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(RetainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RetainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RetainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RetainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(RetainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(RetainError):
    code = grpc.StatusCode.UNAVAILABLE


FIELD_METADATA_KEY = "retain-field"
