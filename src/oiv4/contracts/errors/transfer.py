"""Errors of moving bytes over the network (`io.retry`, `io.http`, `io.download`, `io.ranged`, `io.net_guard`).

`TransferError` is the base a caller catches for "this transfer failed" (the message names the URL and the
cause); each concrete class also carries the category that says why, and with it the exit code.
"""

from __future__ import annotations

from oiv4.contracts.errors import Interrupted, Oiv4Error, SourceError, StorageError

#: The `address` of a BlockedAddress for a name that does not resolve (through a proxy only).
UNRESOLVED = "(unresolved)"


class TransferError(RuntimeError, Oiv4Error):
    """A transfer that cannot complete; the message names the URL and the cause. `attempts` made so far."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class TransientError(TransferError, SourceError):
    """A failure worth retrying; `retry_after` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnreachableError(TransferError, SourceError):
    """Connection refused or host unknown: the address is wrong or nothing serves there; never retried."""


class ChangedError(TransferError, SourceError):
    """The remote object is not the one a download started from (ETag / Last-Modified / size differ)."""


class NotFoundError(TransferError, SourceError):
    """HTTP 404 / no such object."""


class BlockedError(TransferError, SourceError):
    """The URL (or a redirect) leads to an address the network guard refuses; never retried."""


class TlsError(TransferError, SourceError):
    """The server's certificate cannot be verified (or the TLS handshake failed); never retried."""


class DownloadError(TransferError, SourceError):
    """A download that cannot complete; the message says which URL and why."""


class Cancelled(TransferError, Interrupted):
    """The caller's cancel event was set (Ctrl-C of the whole run)."""


class DiskError(TransferError, StorageError):
    """The download cannot be written (disk full, permissions)."""


class BodyTooLarge(SourceError):
    """The body went past `max_bytes`; ledger outcome `too_large`."""


class BlockedAddress(SourceError):
    """A URL (or a redirect) leads to an address the guard refuses; ledger outcome `blocked_address`.

    The reason names the host and the address class only: it is the same whether anything listens there or not.
    What the guard raises is also an `aiohttp.ClientError` (see `io.net_guard`), so aiohttp passes it through.
    """

    def __init__(self, host: str, address: str, why: str) -> None:
        self.host, self.address, self.why = host, address, why
        if address == UNRESOLVED:
            super().__init__(
                f"refused {host}: the name cannot be resolved here, so the guard cannot prove it public "
                "(through a proxy only targets known to be public are fetched)"
            )
            return
        super().__init__(
            f"refused {host}: it resolves to {why} address {address} "
            "(only public addresses are fetched; --allow-private-networks admits a private mirror)"
        )
