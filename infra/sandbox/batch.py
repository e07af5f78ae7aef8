"""Batch-file systems of the sandbox: an SFTP server, and a periodic run that answers request files.

The run plays a mainframe's nightly job, every `Settings.sandbox_batch_interval`: it reads each
request file in `<system>/inbox/`, passes every record through the same business core as the REST
endpoints (`SystemState`: ledger, replays, fault rules), writes one reply file for the run in
`<system>/outbox/`, and moves the request file to `inbox/processed/` (or `inbox/rejected/` when it
cannot be read). A request file dropped again after it was processed is answered from the
recorded answer: the ledger has one effect.

Faults: `down` (or maintenance) leaves the files waiting for a later run; `reject_when` and
`review_when` answer R and N records; `malformed_replies` garbles the reply line; `drop_replies`
accepts and never answers. All of them honour `key_prefix`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncssh
import structlog

from adapters.esdc_sin import REPLY_LAYOUT, REQUEST_LAYOUT
from adapters.fixedwidth import FileLayout, LayoutError, Value
from infra.sandbox.faults import FaultState, utcnow
from infra.sandbox.systems import Answer, SystemState
from infra.settings import Settings

log = structlog.get_logger("tellonce.sandbox")


@dataclass(frozen=True)
class BatchSystem:
    """A sandbox system that exchanges files, with the layouts of its requests and replies."""

    id: str
    request: FileLayout
    reply: FileLayout
    reply_file_type: str


BATCH_SYSTEMS = (BatchSystem("esdc-sin", REQUEST_LAYOUT, REPLY_LAYOUT, "SINREP"),)
"""The systems that answer by batch file (one layout definition, shared with their adapters)."""

PROCESSED = "processed"
REJECTED = "rejected"


class _Login(asyncssh.SSHServer):
    """Password login for the one sandbox account."""

    def __init__(self, username: str, password: str | None) -> None:
        self.username = username
        self.password = password

    def begin_auth(self, username: str) -> bool:
        return True  # every login must authenticate

    def password_auth_supported(self) -> bool:
        return self.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        if self.password is None:
            return False
        user_ok = secrets.compare_digest(username.encode(), self.username.encode())
        return secrets.compare_digest(password.encode(), self.password.encode()) and user_ok


def host_key(folder: Path) -> asyncssh.SSHKey:
    """The SFTP server's host key, generated at first start and kept so clients can pin it."""
    path = folder / "ssh_host_ed25519_key"
    if path.exists():
        return asyncssh.read_private_key(path)
    folder.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(path)
    path.chmod(0o600)
    key.write_public_key(folder / "ssh_host_ed25519_key.pub")
    return key


class BatchExchange:
    """Takes request files over SFTP (or a shared directory) and writes reply files later."""

    name = "batch"

    def __init__(self, states: dict[str, SystemState], settings: Settings) -> None:
        self.states = states
        self.settings = settings
        self.root = settings.batch_root
        self._server: asyncssh.SSHAcceptor | None = None
        self._runner: asyncio.Task[None] | None = None
        self._sequence = 0

    async def start(self) -> None:
        """Listen for SFTP on `settings.sftp_target`'s port and start the periodic batch run."""
        for system in BATCH_SYSTEMS:
            for folder in ("inbox", "outbox", "outbox/done"):
                (self.root / system.id / folder).mkdir(parents=True, exist_ok=True)
        key = host_key(self.settings.data_dir / "sandbox" / "sftp")
        password = self.settings.sftp_password.get_secret_value() if self.settings.sftp_password else None
        root = str(self.root.resolve()).encode()
        self._server = await asyncssh.create_server(
            lambda: _Login(self.settings.sftp_username, password),
            self.settings.host,
            self.settings.sftp_target[1],
            server_host_keys=[key],
            # Each session sees the batch root as "/" and nothing above it.
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=root),
            allow_scp=False,
        )
        self._runner = asyncio.create_task(self._run_periodically())
        log.info("sandbox.sftp_listening", port=self.settings.sftp_target[1])

    async def stop(self) -> None:
        """Stop the batch run and the SFTP server."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _run_periodically(self) -> None:
        interval = self.settings.sandbox_batch_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                # Synchronous on purpose: no await between reading and writing the systems' state.
                self.run_once()
            except OSError as exc:
                log.warning("sandbox.batch_run_failed", error=type(exc).__name__)

    def run_once(self) -> int:
        """Process every waiting request file of every batch system; returns the records answered."""
        answered = 0
        for system in BATCH_SYSTEMS:
            state = self.states.get(system.id)
            if state is not None:
                answered += self._run_system(system, state)
        return answered

    def _run_system(self, system: BatchSystem, state: SystemState) -> int:
        inbox = self.root / system.id / "inbox"
        replies: list[tuple[dict[str, Value | None], bool]] = []
        files = 0
        for path in sorted(inbox.glob("*.dat")):
            if not path.is_file():
                continue
            processed = self._process_file(system, state, path.read_bytes())
            if processed is None:
                continue  # closed for this key: the file waits for a later run
            files += 1
            outcome_folder, lines = processed
            replies.extend(lines)
            _move(path, inbox / outcome_folder)
        if replies:
            name = self._write_replies(system, replies)
            log.info(
                "sandbox.batch_run", system=system.id, files=files, replies=len(replies), reply_file=name
            )
        return len(replies)

    def _process_file(
        self, system: BatchSystem, state: SystemState, data: bytes
    ) -> tuple[str, list[tuple[dict[str, Value | None], bool]]] | None:
        """The folder the file goes to and its reply lines (each with "garble it"), or None to wait."""
        decoded = system.request.decode_file(data)
        keys = [r.values.get("correlation_id") for r in decoded.records]
        readable = [key for key in keys if isinstance(key, str)]
        if decoded.problems or any(r.problems for r in decoded.records):
            log.warning(
                "sandbox.batch_request_unreadable",
                system=system.id,
                problems=[str(p) for p in decoded.problems]
                + [str(p) for r in decoded.records for p in r.problems],
            )
            lines = [
                (_reply(key, "N", None, "request_unreadable"), _garbled(state.faults, key))
                for key in readable
            ]
            return REJECTED, lines
        now = utcnow()
        if any(_closed(state.faults, key, now) for key in readable):
            return None
        lines = []
        for record in decoded.records:
            key = str(record.values["correlation_id"])
            fields = system.request.from_values(record.values)
            state.counts.requests += 1
            answer = state.replay("submit", key) or state.submit(key, fields)
            if state.faults.applies_to(key) and state.faults.drop_replies:
                log.info("sandbox.batch_reply_dropped", system=system.id)
                continue
            lines.append((_answer_reply(system.reply, key, answer), _garbled(state.faults, key)))
        return PROCESSED, lines

    def _write_replies(self, system: BatchSystem, replies: list[tuple[dict[str, Value | None], bool]]) -> str:
        now = utcnow()
        self._sequence += 1
        batch_id = f"{now:%Y%m%d%H%M%S%f}-{self._sequence:06d}"
        layout = system.reply
        data = bytearray(
            layout.encode_file(
                batch_id, now.date(), [values for values, _ in replies], {"file_type": system.reply_file_type}
            )
        )
        outcome_start = next(start for spec, start, _ in layout.spans["D"] if spec.name == "outcome")
        line_length = layout.record_length + len(layout.line_ending)
        for number, (_, garble) in enumerate(replies, start=1):
            if garble:
                # A character the layout does not allow where the outcome should be: readable
                # correlation id, unreadable answer, as a damaged record looks in real files.
                data[number * line_length + outcome_start] = ord("?")
        name = f"REPLY-{batch_id}.dat"
        outbox = self.root / system.id / "outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        temporary = outbox / f".{name}.part"
        temporary.write_bytes(bytes(data))
        temporary.replace(outbox / name)
        return name


def _closed(faults: FaultState, key: str, now: datetime) -> bool:
    if not faults.applies_to(key):
        return False
    in_maintenance = faults.maintenance_until is not None and now < faults.maintenance_until
    return faults.is_down(now) or in_maintenance


def _garbled(faults: FaultState, key: str | None) -> bool:
    return key is not None and faults.applies_to(key) and faults.malformed_replies


def _reply(key: str, outcome: str, reference: str | None, code: str | None) -> dict[str, Value | None]:
    return {"correlation_id": key, "outcome": outcome, "reference": reference, "reason_code": code}


def _answer_reply(layout: FileLayout, key: str, answer: Answer) -> dict[str, Value | None]:
    """The reply record of a REST-shaped answer: 2xx accepted, 422 rejected, anything else for review.

    The answer's own bilingual text goes along when it fits the record; otherwise the reader
    falls back on its code table.
    """
    body: dict[str, Any] = answer.body
    if 200 <= answer.status < 300:
        reply = _reply(key, "A", str(body["reference"]), None)
    else:
        code = body.get("code") if isinstance(body.get("code"), str) else None
        reply = _reply(key, "R" if answer.status == 422 else "N", None, code)
    message = body.get("message")
    if isinstance(message, dict):
        with_text = {**reply, "message_en": message.get("en"), "message_fr": message.get("fr")}
        try:
            layout.encode_record(layout.detail, with_text)
        except LayoutError:
            return reply
        return with_text
    return reply


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    path.replace(folder / path.name)
