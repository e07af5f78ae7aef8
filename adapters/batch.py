"""`BatchFileAdapter`: legacy systems that take request files and answer later with reply files.

The exchange with one system lives under `<system>/`: tellonce drops requests in `inbox/`, the
system writes reply files to `outbox/`, and tellonce moves each reply file it has handed to its
bundles into `outbox/done/`. Files travel over SFTP or through a shared directory
(`Settings.batch_transport`).

A request file is named from a hash of its idempotency key, never from anything the resident
wrote, and is written under a temporary name then renamed: a retry rewrites the same file
(harmless), and the system never reads half a file.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import logging
import re
import shutil
from collections.abc import AsyncIterator, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

import asyncssh

from adapters.fixedwidth import DecodedRecord, FileLayout, LayoutError, Value
from adapters.http import UNREADABLE_ANSWER
from adapters.mapping import FieldMap
from adapters.sdk import (
    Adapter,
    AsyncReply,
    CallContext,
    NeedsAttentionError,
    PolledReplies,
    ReplyBatch,
    StepRequest,
    SubmitResult,
    TransientError,
)
from bundles.models import LocalizedText

if TYPE_CHECKING:
    import httpx

    from infra.settings import Settings

INBOX = "inbox"
OUTBOX = "outbox"
DONE = "outbox/done"
REPLY_SUFFIX = ".dat"
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""What a file name of the exchange may look like: no paths, nothing hidden."""

DEFAULT_MAX_TIMEOUT = timedelta(seconds=60)

# asyncssh logs a dozen INFO lines per connection (auth, channel, subsystem...): with a poll every
# few seconds they would drown the worker's own log. Its warnings and errors still come through.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

T = TypeVar("T")

NOT_ENCODABLE = LocalizedText(
    en="Some of the information does not fit the program's forms (a name too long, or a character "
    "it cannot print); an agent will adjust it.",
    fr="Certains renseignements ne conviennent pas aux formulaires du programme (un nom trop long ou "
    "un caractère qu'il ne peut pas imprimer); un agent les ajustera.",
)
REJECTED = LocalizedText(en="The program refused the request.", fr="Le programme a refusé la demande.")
REVIEW = LocalizedText(
    en="The program must review this request; an agent will follow up.",
    fr="Le programme doit examiner cette demande; un agent fera le suivi.",
)


def request_file_name(key: str) -> str:
    """The request file's name for an idempotency key: `REQ-<sha256(key)[:24]>.dat`."""
    return f"REQ-{hashlib.sha256(key.encode()).hexdigest()[:24].upper()}{REPLY_SUFFIX}"


def checked_name(name: str) -> str:
    """A file name of the exchange, or `ValueError` (never a path: nothing may escape the folder)."""
    if not FILE_NAME.match(name):
        raise ValueError("not a file name of the batch exchange")
    return name


class BatchSession(abc.ABC):
    """File operations within one system's exchange folder, over one connection."""

    @abc.abstractmethod
    async def write(self, folder: str, name: str, data: bytes) -> None:
        """Write a file atomically: whole or not at all, replacing a file of the same name."""

    @abc.abstractmethod
    async def list(self, folder: str) -> list[str]:
        """The names of the plain files in a folder (none when it does not exist)."""

    @abc.abstractmethod
    async def read(self, folder: str, name: str) -> bytes:
        """A file's content."""

    @abc.abstractmethod
    async def move(self, name: str, source: str, target: str) -> bool:
        """Move a file between folders; False when it is no longer in `source`."""


class BatchTransport(abc.ABC):
    """How files reach a batch system: SFTP, or a directory both sides share."""

    @abc.abstractmethod
    def session(self, system: str) -> contextlib.AbstractAsyncContextManager[BatchSession]:
        """A session rooted at the system's exchange folder."""


class DirectoryTransport(BatchTransport):
    """A directory shared with the system (a mounted share, or the sandbox's own folder).

    Args:
        root: The folder that holds one sub-folder per system.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.asynccontextmanager
    async def session(self, system: str) -> AsyncIterator[BatchSession]:
        """A session on `<root>/<system>`."""
        yield _DirectorySession(self.root / checked_name(system))


class _DirectorySession(BatchSession):
    def __init__(self, base: Path) -> None:
        self.base = base

    async def write(self, folder: str, name: str, data: bytes) -> None:
        await asyncio.to_thread(_write_atomically, self.base / folder, checked_name(name), data)

    async def list(self, folder: str) -> list[str]:
        def names() -> list[str]:
            path = self.base / folder
            return [p.name for p in path.iterdir() if p.is_file()] if path.is_dir() else []

        return await asyncio.to_thread(names)

    async def read(self, folder: str, name: str) -> bytes:
        return await asyncio.to_thread((self.base / folder / checked_name(name)).read_bytes)

    async def move(self, name: str, source: str, target: str) -> bool:
        def move() -> bool:
            origin = self.base / source / checked_name(name)
            if not origin.exists():
                return False
            (self.base / target).mkdir(parents=True, exist_ok=True)
            shutil.move(origin, self.base / target / name)
            return True

        return await asyncio.to_thread(move)


def _write_atomically(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{name}.part"
    temporary.write_bytes(data)
    temporary.replace(folder / name)


class SftpTransport(BatchTransport):
    """An SFTP server that holds one folder per system (the session is chrooted or homed there).

    Args:
        host: The server.
        port: Its port.
        username: The account.
        password: Its password, if it uses one.
        client_key: A private key file, if the account uses one.
        known_hosts: A known_hosts file pinning the server's key; None accepts any key (only
            for development: production settings refuse it).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        *,
        password: str | None = None,
        client_key: Path | None = None,
        known_hosts: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.client_key = client_key
        self.known_hosts = known_hosts

    @contextlib.asynccontextmanager
    async def session(self, system: str) -> AsyncIterator[BatchSession]:
        """One SSH connection and SFTP session for the duration of the block."""
        async with (
            asyncssh.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                client_keys=[str(self.client_key)] if self.client_key else None,
                known_hosts=str(self.known_hosts) if self.known_hosts else None,
                agent_path=None,
                config=[],
            ) as connection,
            connection.start_sftp_client() as sftp,
        ):
            yield _SftpSession(sftp, checked_name(system))


class _SftpSession(BatchSession):
    def __init__(self, sftp: asyncssh.SFTPClient, base: str) -> None:
        self.sftp = sftp
        self.base = base

    def _path(self, folder: str, name: str | None = None) -> str:
        return f"{self.base}/{folder}" + (f"/{checked_name(name)}" if name else "")

    async def write(self, folder: str, name: str, data: bytes) -> None:
        await self.sftp.makedirs(self._path(folder), exist_ok=True)
        temporary = self._path(folder, f"{name}.part")
        async with self.sftp.open(temporary, "wb") as handle:
            await handle.write(data)
        # posix-rename replaces an existing file in one step, where plain SFTP rename refuses.
        await self.sftp.posix_rename(temporary, self._path(folder, name))

    async def list(self, folder: str) -> list[str]:
        try:
            entries = await self.sftp.readdir(self._path(folder))
        except asyncssh.SFTPNoSuchFile:
            return []
        return [
            str(entry.filename) for entry in entries if entry.attrs.type == asyncssh.FILEXFER_TYPE_REGULAR
        ]

    async def read(self, folder: str, name: str) -> bytes:
        async with self.sftp.open(self._path(folder, name), "rb") as handle:
            data: bytes = await handle.read()
            return data

    async def move(self, name: str, source: str, target: str) -> bool:
        await self.sftp.makedirs(self._path(target), exist_ok=True)
        try:
            await self.sftp.posix_rename(self._path(source, name), self._path(target, name))
        except asyncssh.SFTPNoSuchFile:
            return False
        return True


def transport_from_settings(settings: Settings) -> BatchTransport:
    """The transport `Settings.batch_transport` names, configured from the `sftp_*` settings."""
    if settings.batch_transport == "directory":
        return DirectoryTransport(settings.batch_root)
    host, port = settings.sftp_target
    return SftpTransport(
        host,
        port,
        settings.sftp_username,
        password=settings.sftp_password.get_secret_value() if settings.sftp_password else None,
        client_key=settings.sftp_client_key,
        known_hosts=settings.sftp_known_hosts,
    )


Outcome = Literal["accepted", "rejected", "needs_attention"]
OUTCOMES: dict[str, Outcome] = {"A": "accepted", "R": "rejected", "N": "needs_attention"}
"""Reply outcome codes of the reply layout."""


UNFINISHED = frozenset({"missing_trailer", "count_mismatch"})
"""Problems of a reply file that may be still being written: it is read again, not acknowledged."""


class BatchFileAdapter(Adapter, PolledReplies):
    """Base of adapters for systems that read request files and write reply files later.

    Subclasses set `system`, `field_map` (projected fields to the system's request), and the
    `request_layout` and `reply_layout`. The request's detail record carries the idempotency key
    in `correlation_id`; the reply's detail records repeat it, with `outcome` (A, R, N),
    `reference` and `reason_code`, whose meaning comes from the reply layout's code table.

    Args:
        transport: Where the files go.
        max_timeout: Upper bound of one exchange, however far the call's deadline is.
    """

    field_map: ClassVar[FieldMap] = FieldMap()
    request_layout: ClassVar[FileLayout]
    reply_layout: ClassVar[FileLayout]
    request_file_type: ClassVar[str | None] = None

    def __init__(self, transport: BatchTransport, *, max_timeout: timedelta = DEFAULT_MAX_TIMEOUT) -> None:
        self.transport = transport
        self.max_timeout = max_timeout

    @classmethod
    def from_settings(cls, settings: Settings, http_client: httpx.AsyncClient | None = None) -> Self:
        """The adapter on the configured transport (default the sandbox's SFTP server), with its calendar."""
        adapter = cls(transport_from_settings(settings))
        adapter.availability = settings.legacy_system(cls.system).availability
        return adapter

    def encode_request(self, ctx: CallContext, fields: Mapping[str, Any]) -> bytes:
        """The request file for a step's projected fields.

        Raises:
            NeedsAttentionError: `request_not_encodable` when a value does not fit the layout (its
                field names and problem codes in `detail`, never the values): a person amends it.
        """
        mapped, unused_projected = self.field_map.apply(fields)
        values, unused_mapped = self.request_layout.to_values(mapped)
        if unused_projected or unused_mapped:
            ctx.log.warning(
                "adapter.fields_unused", system=self.system, paths=[*unused_projected, *unused_mapped]
            )
        values["correlation_id"] = ctx.idempotency_key
        header = {"file_type": self.request_file_type} if self.request_file_type else None
        try:
            return self.request_layout.encode_file(
                self.batch_id(ctx.idempotency_key), datetime.now(UTC).date(), [values], header
            )
        except LayoutError as exc:
            problems = ", ".join(f"{p.field}: {p.code}" for p in exc.problems)
            raise NeedsAttentionError("request_not_encodable", NOT_ENCODABLE, detail=problems) from None

    @staticmethod
    def batch_id(key: str) -> str:
        """The request's batch id: the file name without its suffix (a hash, no personal data)."""
        return request_file_name(key).removesuffix(REPLY_SUFFIX)

    async def submit(self, ctx: CallContext, request: StepRequest) -> SubmitResult:
        """Drop the request file in the system's inbox; its answer comes later as a reply file.

        Raises:
            TransientError: The server cannot be reached or the transfer failed or ran out of time.
            NeedsAttentionError: The request does not fit the system's record layout.
        """
        data = self.encode_request(ctx, request.fields)
        name = request_file_name(ctx.idempotency_key)

        async def drop() -> None:
            async with self.transport.session(self.system) as session:
                await session.write(INBOX, name, data)

        await self._exchange(ctx, "submit", drop())
        ctx.log.info("adapter.request_dropped", system=self.system, file=name)
        return SubmitResult(reference=self.batch_id(ctx.idempotency_key), pending_reply=True)

    async def fetch_replies(self, ctx: CallContext) -> list[ReplyBatch]:
        """Read every reply file in the outbox, oldest first (names sort by time), without moving it.

        Raises:
            TransientError: The server cannot be reached or a transfer failed or ran out of time.
        """

        async def fetch() -> list[ReplyBatch]:
            batches: list[ReplyBatch] = []
            async with self.transport.session(self.system) as session:
                names = sorted(
                    n for n in await session.list(OUTBOX) if n.endswith(REPLY_SUFFIX) and FILE_NAME.match(n)
                )
                for name in names:
                    batches.append(self.read_reply_file(name, await session.read(OUTBOX, name)))
            return batches

        return await self._exchange(ctx, "fetch_replies", fetch())

    async def acknowledge(self, ctx: CallContext, receipt: str) -> None:
        """Move a reply file to `outbox/done/`; a file already moved is fine."""
        checked_name(receipt)

        async def move() -> None:
            async with self.transport.session(self.system) as session:
                await session.move(receipt, OUTBOX, DONE)

        await self._exchange(ctx, "acknowledge", move())

    def read_reply_file(self, name: str, data: bytes) -> ReplyBatch:
        """The replies of one reply file; unreadable lines become problems.

        A damaged line whose correlation id can still be read also becomes a `needs_attention`
        reply with code `malformed_reply`, so its step goes to an operator at once instead of
        waiting for its reply deadline.
        """
        decoded = self.reply_layout.decode_file(data)
        replies: list[AsyncReply] = []
        problems = [str(problem) for problem in decoded.problems]
        for record in decoded.records:
            reply = self.reply_of(name, record)
            problems.extend(str(problem) for problem in record.problems)
            if reply is not None:
                replies.append(reply)
        # A file cut short (no trailer, fewer records than it counts) may still be being written.
        unfinished = any(p.code in UNFINISHED for p in decoded.problems)
        return ReplyBatch(
            receipt=name, replies=tuple(replies), problems=tuple(problems), complete=not unfinished
        )

    def reply_of(self, name: str, record: DecodedRecord) -> AsyncReply | None:
        """The reply a detail record carries, or None when not even its correlation id is readable."""
        values = record.values
        correlation_id = values.get("correlation_id")
        if not isinstance(correlation_id, str):
            return None
        reply_id = f"{name}:{record.line}"
        if record.problems:
            return AsyncReply(
                correlation_id=correlation_id,
                reply_id=reply_id,
                outcome="needs_attention",
                code="malformed_reply",
                message=UNREADABLE_ANSWER,
            )
        outcome = OUTCOMES[str(values["outcome"])]
        code = values.get("reason_code")
        reference = values.get("reference")
        return AsyncReply(
            correlation_id=correlation_id,
            reply_id=reply_id,
            outcome=outcome,
            reference=reference if isinstance(reference, str) else None,
            code=code if isinstance(code, str) else None,
            message=self.reply_message(values, outcome),
        )

    def reply_message(self, values: Mapping[str, Value | None], outcome: Outcome) -> LocalizedText | None:
        """The reply's own text in both languages, else its code's (or outcome's) from the code table."""
        english, french = values.get("message_en"), values.get("message_fr")
        if isinstance(english, str) and isinstance(french, str):
            return LocalizedText(en=english, fr=french)
        code = values.get("reason_code")
        message = self.reply_layout.message(code if isinstance(code, str) else outcome)
        if message is None and outcome != "accepted":
            message = REJECTED if outcome == "rejected" else REVIEW
        return message

    async def _exchange(self, ctx: CallContext, what: str, work: Coroutine[Any, Any, T]) -> T:
        """Run one exchange bounded by the call's deadline, with failures made `TransientError`."""
        left = min(ctx.remaining(datetime.now(UTC)), self.max_timeout)
        if left <= timedelta(0):
            work.close()
            raise TransientError("deadline_passed", detail=f"no time left to reach {self.system}")
        try:
            async with asyncio.timeout(left.total_seconds()):
                return await work
        except TimeoutError as exc:
            raise TransientError(
                "timeout", detail=f"{what} at {self.system} took longer than {left.total_seconds():.1f}s"
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            # The exception's type only: messages may quote paths or server text.
            raise TransientError(
                "connection_failed", detail=f"{type(exc).__name__} during {what} at {self.system}"
            ) from exc
