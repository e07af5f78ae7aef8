"""`tellonce keys`: the keyring file that seals Temporal payloads and personal data on Kafka.

These commands manage a keyring *file* (`TELLONCE_ENCRYPTION_KEYS_FILE`, or the data dir's
`keys/keyring.json`). A keyring held in a KMS is rotated with the KMS's own tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.crypto import (
    KeyringError,
    activate_key,
    add_key,
    create_keyring_file,
    describe_keyring,
    read_keyring_file,
    retire_key,
    rotate_keyring_file,
)
from infra.settings import Settings

keys_app = typer.Typer(
    help="The encryption keyring: create it, list its keys, rotate, retire an old key.",
    no_args_is_help=True,
)
console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="Keyring file (default: the settings' keyring file)."),
]


def _path(file: Path | None) -> Path:
    return file or Settings().keyring_path


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]{message}[/red]")
    return typer.Exit(1)


@keys_app.command("init")
def init(file: FileOption = None) -> None:
    """Create a keyring file with one fresh active key (does nothing if it exists)."""
    path = _path(file)
    existed = path.exists()
    try:
        stored = create_keyring_file(path)
    except KeyringError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{'kept' if existed else 'created'} {path}: active key {stored.active}")


@keys_app.command("list")
def list_keys(file: FileOption = None) -> None:
    """Key ids, creation times and the active key (never the secrets)."""
    try:
        stored = read_keyring_file(_path(file))
    except KeyringError as exc:
        raise _fail(str(exc)) from None
    table = Table("key id", "created", "active")
    for row in describe_keyring(stored):
        table.add_row(row["kid"], row["created"], row["active"])
    console.print(table)


@keys_app.command("add")
def add(file: FileOption = None) -> None:
    """Add a fresh key that opens but does not seal yet (phase one of a rotation across hosts)."""
    path = _path(file)
    try:
        kid = add_key(path)
    except KeyringError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"added {kid} to {path} (not active); once every process and partner holds it: "
        f"tellonce keys activate {kid}"
    )


@keys_app.command("activate")
def activate(
    kid: Annotated[str, typer.Argument(help="A key id already in the ring.")],
    file: FileOption = None,
) -> None:
    """Make a key already in the ring the one that seals (phase two of a rotation)."""
    path = _path(file)
    try:
        activate_key(path, kid)
    except KeyringError as exc:
        raise _fail(str(exc)) from None
    console.print(f"active key is now {kid} in {path}; restart tellonce's processes to use it")


@keys_app.command("rotate")
def rotate(file: FileOption = None) -> None:
    """Add a fresh key and make it active at once; older keys keep opening what they sealed.

    For one host, where every process restarts together. Across hosts, or when partners open
    what tellonce seals, use `add`, hand the ring out, then `activate`: a process still on the
    old ring cannot open what the new key seals. Nothing is re-encrypted.
    """
    path = _path(file)
    try:
        kid = rotate_keyring_file(path)
    except KeyringError as exc:
        raise _fail(str(exc)) from None
    console.print(f"active key is now {kid} in {path}; restart tellonce's processes to use it")


@keys_app.command("retire")
def retire(
    kid: Annotated[str, typer.Argument(help="The key id to remove.")],
    file: FileOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: what this key sealed becomes unreadable.")
    ] = False,
) -> None:
    """Remove an old key: whatever it sealed can never be read again (crypto-shredding).

    Retire a key only once everything it sealed is past the retention period.
    """
    if not yes:
        raise _fail(f"retiring {kid} makes everything it sealed unreadable for good: add --yes to confirm")
    path = _path(file)
    try:
        retire_key(path, kid)
    except KeyringError as exc:
        raise _fail(str(exc)) from None
    console.print(f"retired {kid} from {path}")
