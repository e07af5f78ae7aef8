"""The `tellonce` command: the dev stack, the production roles, the catalogue, and submissions via the API.

Role and catalogue modules are imported inside their commands so that `tellonce status` stays
fast and one role's dependencies never stop another command from running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from infra.adapters_cli import adapters_app
from infra.bench.cli import bench_command
from infra.keys_cli import keys_app
from infra.notices_cli import notices_app
from infra.ops.cli import ops_app
from infra.retention_cli import retention_app
from infra.settings import Settings
from workflows.models import FINAL_BUNDLE_STATES, BundleState

if TYPE_CHECKING:
    from bundles.models import BundleDefinition

app = typer.Typer(
    help="tellonce: tell government about a life event once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bundles_app = typer.Typer(
    help="The bundle catalogue (the definition files in this checkout).", no_args_is_help=True
)
app.add_typer(bundles_app, name="bundles")
app.add_typer(adapters_app, name="adapters")
app.add_typer(keys_app, name="keys")
app.add_typer(retention_app, name="retention")
app.add_typer(ops_app, name="ops")
app.command("bench")(bench_command)

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

EXIT_UNREACHABLE = 2
"""Exit code when the API cannot be reached (1 means the API answered with a refusal or failure)."""
EXIT_USAGE = 2

FOLLOW_INTERVAL = 0.5
SUCCESS_STATES = frozenset({BundleState.COMPLETED.value, BundleState.COMPLETED_WITH_EXCEPTIONS.value})
FINAL_STATES = frozenset(state.value for state in FINAL_BUNDLE_STATES)


class Lang(StrEnum):
    """Official language of messages shown to a person."""

    EN = "en"
    FR = "fr"


ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="Base URL of the tellonce API [env TELLONCE_API_URL; default: the `tellonce dev` address].",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
LangOption = Annotated[Lang, typer.Option("--lang", help="Language of program names and messages.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(message, soft_wrap=True, markup=False)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment (and options); a bad TELLONCE_* value is one clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        _fail(f"invalid settings: {exc}", EXIT_USAGE)


# --- the dev stack and production roles -------------------------------------------------------


@app.command()
def dev(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where Temporal's SQLite file and the logs go [env TELLONCE_DATA_DIR].", show_default=False
        ),
    ] = None,
    port_base: Annotated[
        int | None,
        typer.Option(
            min=1024,
            max=60000,
            help="Every port is this plus a fixed offset [env TELLONCE_PORT_BASE; 7200].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the whole stack locally (Temporal, Kafka broker, sandbox, worker, API) until Ctrl-C.

    Prints one `name: address` line per service, then `ready`; Ctrl-C stops everything and
    prints `stopped`. Each service logs to DATA_DIR/logs/NAME.log.
    """
    from infra.devstack import run_dev  # noqa: PLC0415 - keeps client commands free of Temporal imports

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if port_base is not None:
        overrides["port_base"] = port_base
    code = run_dev(
        _settings(**overrides),
        say=lambda line: console.print(line, soft_wrap=True),
        complain=lambda line: errors.print(line, soft_wrap=True, markup=False),
    )
    raise typer.Exit(code)


def _role_settings() -> Settings:
    """Settings for a production role, with logging configured once for the process."""
    from infra.logging import configure_logging  # noqa: PLC0415 - only roles log

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


async def _until_signalled(work: Awaitable[None]) -> None:
    """Run until the work ends or SIGINT/SIGTERM cancels it, so workers shut down gracefully."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@app.command()
def worker() -> None:
    """Run the Temporal workers (bundle workflows and legacy-system activities) until stopped."""
    from infra.worker import run_worker  # noqa: PLC0415 - heavy; only this role needs it

    settings = _role_settings()
    asyncio.run(_until_signalled(run_worker(settings)))


@app.command()
def api(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on [settings].", show_default=False)
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [port base + 800].", show_default=False)] = None,
) -> None:
    """Serve the resident HTTP API until stopped."""
    import uvicorn  # noqa: PLC0415 - only this role serves HTTP

    from infra.api import create_app  # noqa: PLC0415 - heavy; only this role needs it

    settings = _role_settings()
    # log_config=None keeps the structlog set-up above instead of uvicorn's own.
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port("api"),
        log_config=None,
    )


@app.command()
def sandbox(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on [settings].", show_default=False)
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [port base + 801].", show_default=False)] = None,
) -> None:
    """Serve the simulated legacy systems (development, demos and tests only)."""
    from infra.sandbox import serve  # noqa: PLC0415 - only this role needs it

    settings = _role_settings()
    serve(host or settings.host, port or settings.port("sandbox"))


# --- the Kafka streams role ---------------------------------------------------------------------

streams_app = typer.Typer(
    help="The Kafka streams role and its tools (run it without a subcommand).",
    invoke_without_command=True,
)
app.add_typer(streams_app, name="streams")
app.add_typer(notices_app, name="notices")


class DlqName(StrEnum):
    """The dead-letter queues `replay-dlq` can read."""

    SUBMISSIONS = "submissions"
    LEGACY_REPLIES = "legacy-replies"
    BIRTH_NOTICES = "birth-notices"


@streams_app.callback()
def streams(
    ctx: typer.Context,
    batch_size: Annotated[int, typer.Option(min=1, max=10000, help="Records per batch at most.")] = 256,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1000, help="Records of a batch handled at once.")
    ] = 64,
) -> None:
    """Consume partner submissions, legacy replies and birth notices until stopped.

    Serves `/health` and `/asyncapi.json` on port base + 802. Offsets are committed only after
    each batch's bundles have started, signals were delivered or dead letters were written.
    """
    if ctx.invoked_subcommand is not None:
        return
    from infra.streams.app import serve  # noqa: PLC0415 - heavy; only this role needs it

    settings = _role_settings()
    asyncio.run(serve(settings, batch_size=batch_size, concurrency=concurrency))


@streams_app.command("asyncapi")
def streams_asyncapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Print (or write) the AsyncAPI document of every topic, with the default topic names.

    Regenerate the checked-in copy with `tellonce streams asyncapi -o docs/asyncapi.json`.
    """
    from infra.streams.app import asyncapi_document  # noqa: PLC0415 - see the module docstring

    document = asyncapi_document()
    if output is None:
        typer.echo(document, nl=False)
    else:
        output.write_text(document)
        console.print(f"wrote {output}")


@streams_app.command("create-topics")
def streams_create_topics() -> None:
    """Create every topic tellonce uses that does not exist yet (partitions and replication from settings)."""
    from infra.streams.topics import ensure_topics  # noqa: PLC0415 - see the module docstring

    settings = _settings()
    created = asyncio.run(ensure_topics(settings))
    console.print(f"created {len(created)} topic(s)" + (f": {', '.join(created)}" if created else ""))


@streams_app.command("replay-dlq")
def streams_replay_dlq(  # noqa: PLR0917 - one parameter per option, as Typer wants
    dlq: Annotated[DlqName, typer.Option("--dlq", help="Which dead-letter queue.")] = DlqName.SUBMISSIONS,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter read.")] = False,
    keys: Annotated[
        list[str] | None, typer.Option("--key", help="Replay dead letters with this record key (repeatable).")
    ] = None,
    reasons: Annotated[
        list[str] | None,
        typer.Option("--reason", help="Replay dead letters with this reason code (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be replayed; change nothing.")
    ] = False,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Read the whole DLQ again, not only what is new.")
    ] = False,
) -> None:
    """Re-publish dead letters to their original topic after a fix, each once.

    Reads the DLQ up to its current end with its own consumer group and commits what it read,
    so the next run sees only newer dead letters (unless --from-beginning). Sealed dead letters
    are opened with the keyring first; one that does not open is not replayed, nor committed past.
    """
    from infra.streams.replay import Selection, replay_dlq  # noqa: PLC0415 - see the module docstring

    if not (replay_all or keys or reasons):
        _fail("say what to replay: --all, --key KEY or --reason CODE", EXIT_USAGE)
    settings = _settings()
    topic = {
        DlqName.SUBMISSIONS: settings.kafka_topic_submissions_dlq,
        DlqName.LEGACY_REPLIES: settings.kafka_topic_legacy_replies_dlq,
        DlqName.BIRTH_NOTICES: settings.kafka_topic_birth_notices_dlq,
    }[dlq]
    selection = Selection(
        everything=replay_all,
        keys=frozenset(key.encode() for key in keys or ()),
        reasons=frozenset(reasons or ()),
    )
    try:
        report = asyncio.run(
            replay_dlq(settings, topic, selection, dry_run=dry_run, from_beginning=from_beginning)
        )
    except ValueError as exc:
        _fail(str(exc))
    verb = "would replay" if dry_run else "replayed"
    for entry in report.replayed:
        key = entry.key.decode(errors="replace")[:80] if entry.key is not None else "-"
        original = f"{entry.original[0]}/{entry.original[1]}/{entry.original[2]}"
        console.print(
            f"{verb} {original} key={key} reasons={','.join(entry.codes)}",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"{verb} {len(report.replayed)}; not selected {report.not_selected}; "
        f"duplicates {report.duplicates}; not dead letters {report.not_dead_letters}"
        + (f"; sealed, not opened {report.undecryptable}" if report.undecryptable else "")
        + (f"; too large, not kept {report.not_kept}" if report.not_kept else ""),
        soft_wrap=True,
    )
    if report.undecryptable:
        # Left uncommitted: a run with the keyring that holds their key replays them.
        errors.print(
            f"{report.undecryptable} sealed dead letter(s) did not open with this keyring: not replayed"
        )


# --- the catalogue ------------------------------------------------------------------------------


def _load_catalogue_definitions() -> list[BundleDefinition]:
    from adapters.registry import KNOWN_ADAPTERS  # noqa: PLC0415 - see the module docstring
    from bundles.catalogue import Catalogue, DefinitionError  # noqa: PLC0415

    try:
        definitions: list[BundleDefinition] = Catalogue.load(known_adapters=KNOWN_ADAPTERS).all()
    except DefinitionError as exc:
        _fail(f"the catalogue is invalid:\n{exc}")
    return definitions


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@bundles_app.command("list")
def bundles_list(json_out: JsonOption = False, lang: LangOption = Lang.EN) -> None:
    """List the bundles of the catalogue."""
    definitions = _load_catalogue_definitions()
    if json_out:
        _echo_json([d.model_dump(mode="json") for d in definitions])
        return
    table = Table("id", "version", "jurisdiction", "life event", "title", "steps", title="Bundles")
    for d in definitions:
        title = getattr(d.title, lang.value)
        table.add_row(d.id, str(d.version), d.jurisdiction, d.life_event, title, str(len(d.steps)))
    console.print(table)


@bundles_app.command("show")
def bundles_show(bundle_id: str, json_out: JsonOption = False, lang: LangOption = Lang.EN) -> None:
    """Show one bundle and its steps: needs, consent, optional, pivot, adapter and fields."""
    by_id = {d.id: d for d in _load_catalogue_definitions()}
    if bundle_id not in by_id:
        _fail(f"no bundle {bundle_id!r} in the catalogue; known: {', '.join(sorted(by_id)) or 'none'}")
    d = by_id[bundle_id]
    if json_out:
        _echo_json(d.model_dump(mode="json"))
        return
    console.print(f"[bold]{getattr(d.title, lang.value)}[/bold]  ({d.id} v{d.version}, {d.jurisdiction})")
    console.print(getattr(d.description, lang.value))
    console.print(f"life event: {d.life_event}   submission schema: {d.submission_schema}")
    # One block per step rather than one wide table: ten columns do not fit a terminal.
    for number, step in enumerate(d.steps, start=1):
        console.print(
            f"\n[bold]{number}. {step.id}[/bold]: {getattr(step.program, lang.value)} "
            f"({getattr(step.organization, lang.value)}, {step.level.value})"
        )
        rules = Table.grid(padding=(0, 2))
        rules.add_row("  adapter", step.adapter)
        rules.add_row("  needs", ", ".join(step.needs) or "-")
        rules.add_row("  consent", step.consent or "-")
        rules.add_row("  optional", _yes(step.optional))
        rules.add_row("  pivot", _yes(step.pivot))
        rules.add_row("  fields", ", ".join(step.fields))
        console.print(rules)


@bundles_app.command("validate")
def bundles_validate(
    path: Annotated[Path, typer.Argument(exists=True, help="A definition file, or a directory of them.")],
) -> None:
    """Check bundle definitions; list every problem and exit 1 if there is any."""
    from bundles.catalogue import Catalogue, DefinitionError, load_definition  # noqa: PLC0415

    try:
        from adapters.registry import KNOWN_ADAPTERS  # noqa: PLC0415 - see the module docstring
    except DefinitionError as exc:
        # A broken system file (bundles/systems/*.yaml) leaves no adapters to check steps against.
        errors.print("[red]invalid[/red]: the configured systems")
        for problem in exc.problems:
            errors.print(f"  - {problem}", markup=False, soft_wrap=True)
        _fail(f"{len(exc.problems)} problem(s) in the configured systems")

    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
    if not files:
        _fail(f"no bundle definitions (*.yaml) in {path}")
    invalid: list[tuple[Path, DefinitionError]] = []
    valid: list[BundleDefinition] = []
    for file in files:
        try:
            valid.append(load_definition(file, known_adapters=KNOWN_ADAPTERS))
        except DefinitionError as exc:
            invalid.append((file, exc))
    if not invalid and path.is_dir():
        # Rules across files (such as two definitions with one id and version) need the whole set.
        try:
            Catalogue.load(path, known_adapters=KNOWN_ADAPTERS)
        except DefinitionError as exc:
            invalid.append((path, exc))
    if invalid:
        for where, error in invalid:
            errors.print(f"[red]invalid[/red]: {where}")
            for problem in error.problems or [str(error)]:
                errors.print(f"  - {problem}", markup=False, soft_wrap=True)
        count = sum(max(len(error.problems), 1) for _, error in invalid)
        _fail(f"{count} problem(s) in {len(invalid)} file(s)")
    names = ", ".join(f"{d.id} v{d.version}" for d in valid)
    console.print(f"valid: {len(valid)} definition(s) ({names})")


# --- submissions through the API ----------------------------------------------------------------


def http_client(api_url: str) -> httpx.Client:
    """The HTTP client of every API command (tests replace it to answer without a server)."""
    return httpx.Client(base_url=api_url, timeout=10.0)


def _api_url(api: str | None) -> str:
    return (api or _settings().api_base_url).rstrip("/")


@contextlib.contextmanager
def _api(api: str | None) -> Iterator[tuple[httpx.Client, str]]:
    """A client for the API; an unreachable API becomes one clear line and exit code 2."""
    url = _api_url(api)
    try:
        with http_client(url) as client:
            yield client, url
    except httpx.TransportError:
        _fail(f"cannot reach the tellonce API at {url} — is `tellonce dev` running?", EXIT_UNREACHABLE)


def _access_codes_file() -> Path:
    return _settings().data_dir / "cli" / "access-codes.json"


def _read_access_codes(path: Path) -> dict[str, str]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def remember_access_code(tracking_id: str, access_code: str) -> None:
    """Keep an access code so `tellonce status` works without `--access-code` (file mode 0600)."""
    path = _access_codes_file()
    codes = _read_access_codes(path) | {tracking_id: access_code}
    # Written beside the file and renamed into place, created 0600: an access code opens a
    # resident's status, so no other user may read it, not even for an instant.
    temporary = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(codes, out, indent=2)
        temporary.replace(path)
    except OSError as exc:
        errors.print(f"could not remember the access code in {path}: {exc}", markup=False)


def recall_access_code(tracking_id: str) -> str | None:
    """The access code `tellonce submit` remembered for a tracking id, if any."""
    return _read_access_codes(_access_codes_file()).get(tracking_id)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _localized(text: Any, lang: Lang) -> str:
    if isinstance(text, dict):
        return str(text.get(lang.value) or text.get("en") or "")
    return "" if text is None else str(text)


def _refused(response: httpx.Response, lang: Lang) -> NoReturn:
    """Explain an error answer (problem+json when the API sent one) and exit 1."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        _fail(f"the API answered {response.status_code}: {response.text.strip()[:500]}")
    errors.print(
        f"[red]{problem.get('title') or 'refused'}[/red] ({response.status_code})"
        + (f": {_localized(problem['detail'], lang)}" if problem.get("detail") else ""),
        soft_wrap=True,
    )
    for error in problem.get("errors") or []:
        where = error.get("path") or "(submission)"
        errors.print(f"  {where}: {_localized(error.get('message'), lang)}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


def _read_submission(file: Path, bundle: str | None) -> tuple[str, dict[str, Any]]:
    """The bundle id and submission from a `{"bundle_id", "submission"}` file or a bare submission."""
    try:
        content = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {file} as JSON: {exc}")
    if not isinstance(content, dict):
        _fail(f"{file} must hold a JSON object")
    if isinstance(content.get("submission"), dict) and "bundle_id" in content:
        named = str(content["bundle_id"])
        if bundle is not None and bundle != named:
            _fail(f"{file} is for bundle {named!r} but --bundle says {bundle!r}")
        return named, content["submission"]
    if bundle is None:
        _fail(f"{file} is a bare submission: say which bundle it is for with --bundle ID")
    return bundle, content


def _fetch_status(client: httpx.Client, tracking_id: str, access_code: str, lang: Lang) -> dict[str, Any]:
    response = client.get(f"/api/v1/submissions/{tracking_id}", headers={"X-Access-Code": access_code})
    if response.status_code == 404:
        _fail(f"no submission {tracking_id} with that access code")
    if response.is_error:
        _refused(response, lang)
    status: dict[str, Any] = response.json()
    return status


def _status_table(status: dict[str, Any], lang: Lang) -> Table:
    table = Table(title=f"{status.get('bundle_id')} · {status.get('tracking_id')} · {status.get('state')}")
    table.add_column("program", overflow="fold")
    table.add_column("organization", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("attempts", justify="right")
    # A reference is what a resident quotes to an agency: wrap it rather than cut it short.
    table.add_column("reference", overflow="fold")
    table.add_column("message")
    for step in status.get("steps", []):
        message = _localized(step.get("message"), lang)
        if step.get("waiting_for"):
            message = f"{message} (waiting for {step['waiting_for']})".strip()
        table.add_row(
            _localized(step.get("program"), lang),
            _localized(step.get("organization"), lang),
            str(step.get("state", "")),
            str(step.get("attempts", "")),
            step.get("reference") or "",
            message,
        )
    return table


def _print_references(status: dict[str, Any], lang: Lang) -> None:
    console.print("references:")
    for step in status.get("steps", []):
        if step.get("reference"):
            console.print(f"  {_localized(step.get('program'), lang)}: {step['reference']}", soft_wrap=True)


def _follow(client: httpx.Client, tracking_id: str, access_code: str, lang: Lang, json_out: bool) -> NoReturn:
    """Poll the status until the bundle is final; exit 0 if it completed, 1 otherwise."""
    status = _fetch_status(client, tracking_id, access_code, lang)
    if json_out:
        while status.get("state") not in FINAL_STATES:
            time.sleep(FOLLOW_INTERVAL)
            status = _fetch_status(client, tracking_id, access_code, lang)
        _echo_json(status)
    else:
        with Live(_status_table(status, lang), console=console, refresh_per_second=4) as live:
            while status.get("state") not in FINAL_STATES:
                time.sleep(FOLLOW_INTERVAL)
                status = _fetch_status(client, tracking_id, access_code, lang)
                live.update(_status_table(status, lang))
        # Off a terminal Live leaves its last frame without a final newline.
        console.line()
        _print_references(status, lang)
        console.print(f"bundle {status.get('state')}")
    raise typer.Exit(0 if status.get("state") in SUCCESS_STATES else 1)


@app.command()
def submit(  # noqa: PLR0917 - Typer turns each parameter into an option
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help='{"bundle_id": ..., "submission": {...}}, or a bare submission.'
        ),
    ],
    bundle: Annotated[
        str | None, typer.Option("--bundle", help="Bundle id, for a bare submission.", show_default=False)
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show the steps live until the bundle is final.")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Sent as Idempotency-Key: a retry with the same key is not a second bundle."),
    ] = None,
    json_out: JsonOption = False,
    api: ApiOption = None,
    lang: LangOption = Lang.EN,
) -> None:
    """Submit a life event to the API and print its tracking id and access code.

    The access code is remembered in DATA_DIR/cli/access-codes.json (readable only by you),
    so `tellonce status TRACKING_ID` works without --access-code. With --follow, exits 0 once
    the bundle completed (with or without exceptions), 1 if it failed or was withdrawn.
    """
    bundle_id, submission = _read_submission(file, bundle)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with _api(api) as (client, _):
        response = client.post(f"/api/v1/bundles/{bundle_id}/submissions", json=submission, headers=headers)
        if response.is_error:
            _refused(response, lang)
        receipt: dict[str, Any] = response.json()
        tracking_id, access_code = str(receipt["tracking_id"]), str(receipt["access_code"])
        remember_access_code(tracking_id, access_code)
        if follow:
            if not json_out:
                console.print(f"tracking id: {tracking_id}\naccess code: {access_code}")
            _follow(client, tracking_id, access_code, lang, json_out)
    if json_out:
        _echo_json(receipt)
    else:
        console.print(f"tracking id: {tracking_id}\naccess code: {access_code}")


@app.command()
def status(
    tracking_id: str,
    access_code: Annotated[
        str | None,
        typer.Option(
            help="Defaults to the code `tellonce submit` remembered for this id.", show_default=False
        ),
    ] = None,
    json_out: JsonOption = False,
    api: ApiOption = None,
    lang: LangOption = Lang.EN,
) -> None:
    """Show a submission's overall state and each step's state, attempts, reference and message."""
    code = access_code or recall_access_code(tracking_id)
    if code is None:
        _fail(f"no access code remembered for {tracking_id}: pass --access-code")
    with _api(api) as (client, _):
        current = _fetch_status(client, tracking_id, code, lang)
    if json_out:
        _echo_json(current)
    else:
        console.print(_status_table(current, lang))


if __name__ == "__main__":
    app()
