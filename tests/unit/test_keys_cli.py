"""`tellonce keys`: the keyring file is created private, rotated without loss, retired only on purpose."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from infra.cli import app
from infra.crypto import read_keyring_file

runner = CliRunner()


def test_init_rotate_list_and_retire(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    created = runner.invoke(app, ["keys", "init", "--file", str(path)])
    assert created.exit_code == 0, created.output
    first = read_keyring_file(path).active
    assert path.stat().st_mode & 0o077 == 0

    assert runner.invoke(app, ["keys", "init", "--file", str(path)]).exit_code == 0
    assert read_keyring_file(path).active == first, "init never replaces an existing keyring"

    assert runner.invoke(app, ["keys", "rotate", "--file", str(path)]).exit_code == 0
    second = read_keyring_file(path).active
    assert second != first and set(read_keyring_file(path).keys) == {first, second}

    listed = runner.invoke(app, ["keys", "list", "--file", str(path)])
    assert first in listed.output and second in listed.output
    secrets = [key["secret"] for key in json.loads(path.read_text())["keys"].values()]
    assert not [s for s in secrets if s in listed.output]

    unconfirmed = runner.invoke(app, ["keys", "retire", first, "--file", str(path)])
    assert unconfirmed.exit_code == 1 and "--yes" in unconfirmed.output
    active = runner.invoke(app, ["keys", "retire", second, "--file", str(path), "--yes"])
    assert active.exit_code == 1 and "rotate first" in active.output
    retired = runner.invoke(app, ["keys", "retire", first, "--file", str(path), "--yes"])
    assert retired.exit_code == 0
    assert set(read_keyring_file(path).keys) == {second}


def test_a_missing_keyring_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "list", "--file", str(tmp_path / "nothing.json")])
    assert result.exit_code == 1 and "tellonce keys init" in result.output


def test_a_two_phase_rotation_adds_a_key_that_opens_before_it_seals(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    assert runner.invoke(app, ["keys", "init", "--file", str(path)]).exit_code == 0
    first = read_keyring_file(path).active
    old_ring = read_keyring_file(path).keyring()

    added = runner.invoke(app, ["keys", "add", "--file", str(path)])
    assert added.exit_code == 0, added.output
    stored = read_keyring_file(path)
    (new,) = set(stored.keys) - {first}
    assert stored.active == first, "an added key does not seal yet"
    # A process that already has the new ring opens what the old one still seals.
    assert stored.keyring().open_sealed(old_ring.seal(b"x", "p"), "p") == b"x"

    assert runner.invoke(app, ["keys", "activate", "nope", "--file", str(path)]).exit_code == 1
    assert runner.invoke(app, ["keys", "activate", new, "--file", str(path)]).exit_code == 0
    assert read_keyring_file(path).active == new
