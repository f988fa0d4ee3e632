"""One error type for everything the service refuses, carrying the HTTP status the API answers with."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal the client can act on: HTTP status, a short error and a detail sentence."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{error}: {detail}")
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}
