"""`tellonce ops …`: the operator's commands, spoken to a running API with a bearer token.

Every command but `token` calls `/api/v1/ops` on `--api` (env TELLONCE_API_URL) with the token
in TELLONCE_TOKEN (or `--token`). Tables for people, `--json` for scripts. Exit codes: 0 done,
1 refused or failed (the API's reason is printed), 2 API unreachable or bad usage.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

ops_app = typer.Typer(help="Find and resolve stuck bundles (needs TELLONCE_TOKEN).", no_args_is_help=True)
audit_app = typer.Typer(help="The operations audit trail.", no_args_is_help=True)
ops_app.add_typer(audit_app, name="audit")

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

EXIT_REFUSED = 1
EXIT_USAGE = 2
OPS = "/api/v1/ops"


class RoleName(StrEnum):
    """Roles a dev token can carry."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"


class Reason(StrEnum):
    """Why a bundle is stuck (the `--reason` filter)."""

    NEEDS_ATTENTION = "needs_attention"
    RETRIES_EXCEEDED = "retries_exceeded"
    PAST_DEADLINE = "past_deadline"
    REPLY_OVERDUE = "reply_overdue"
    SYSTEM_PAUSED = "system_paused"
    BREAKER_OPEN = "breaker_open"


class ExportFormat(StrEnum):
    """Audit export formats."""

    JSONL = "jsonl"
    JSON = "json"


ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="Base URL of the tellonce API [env TELLONCE_API_URL; default: the `tellonce dev` address].",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="TELLONCE_TOKEN", help="Bearer token [env TELLONCE_TOKEN].", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ReasonText = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]
StepOption = Annotated[str | None, typer.Option("--step", help="The step to act on.")]
BundleFilter = Annotated[str | None, typer.Option("--bundle", help="Bundle definition, e.g. newborn-on.")]
JurisdictionFilter = Annotated[str | None, typer.Option("--jurisdiction", help="e.g. CA-ON.")]
SystemFilter = Annotated[str | None, typer.Option("--system", help="Legacy system, e.g. esdc-sin.")]
ReasonFilter = Annotated[Reason | None, typer.Option("--stuck-reason", help="Why it is stuck.")]
OlderFilter = Annotated[
    str | None, typer.Option("--older-than", help="Stuck at least this long: 90s, 15m, 2h, 3d.")
]
AllStuck = Annotated[
    bool, typer.Option("--all-stuck", help="Act on every stuck bundle the filters select (supervisor).")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only show what would happen.")]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Bulk: run on the previewed targets without asking.")
]
RateOption = Annotated[float, typer.Option("--rate", min=0.1, help="Bulk: bundles per second at most.")]


def _table(*headers: str) -> Table:
    # Ids and error codes are what an operator copies: wrap them whole rather than cut them short.
    table = Table()
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    errors.print(message, soft_wrap=True, markup=False)
    raise typer.Exit(code)


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `3d` (or a number of seconds) as a timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        return timedelta(seconds=float(number) * units[unit])
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 3d") from None


@contextlib.contextmanager
def _client(api: str | None, token: str | None) -> Iterator[httpx.Client]:
    from infra import cli  # noqa: PLC0415 - infra.cli imports this module; its client is the shared one

    if not token:
        _fail(
            "no token: set TELLONCE_TOKEN (tellonce dev prints an ops-token line) or pass --token", EXIT_USAGE
        )
    url = (api or cli._settings().api_base_url).rstrip("/")
    try:
        with cli.http_client(url) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            yield client
    except httpx.TransportError:
        _fail(f"cannot reach the tellonce API at {url} — is `tellonce dev` running?", EXIT_USAGE)


def _answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer; otherwise the API's reason and exit 1."""
    if response.is_success:
        return response.json()
    try:
        problem = response.json()
    except ValueError:
        _fail(f"the API answered {response.status_code}: {response.text.strip()[:300]}")
    detail = problem.get("detail") if isinstance(problem, dict) else None
    text = detail.get("en") if isinstance(detail, dict) else detail
    lines = [f"{problem.get('title', 'refused')} ({response.status_code}): {text or ''}".rstrip(": ")]
    lines += [
        f"  {e.get('path') or '-'}: {(e.get('message') or {}).get('en', '')}"
        for e in problem.get("errors") or []
        if e.get("path") not in ("", "Authorization")
    ]
    _fail("\n".join(lines))


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _filters(
    bundle: str | None,
    jurisdiction: str | None,
    system: str | None,
    reason: Reason | None,
    older_than: str | None,
) -> dict[str, Any]:
    chosen: dict[str, Any] = {
        "bundle_id": bundle,
        "jurisdiction": jurisdiction,
        "system": system,
        "reason": reason.value if reason else None,
        "older_than": parse_duration(older_than).total_seconds() if older_than else None,
    }
    return {k: v for k, v in chosen.items() if v is not None}


def _ago(value: str | None) -> str:
    if not value:
        return "-"
    since = datetime.fromisoformat(value)
    seconds = int((datetime.now(since.tzinfo) - since).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


@ops_app.command()
def stuck(  # noqa: PLR0917 - one parameter per option, as Typer wants
    bundle: BundleFilter = None,
    jurisdiction: JurisdictionFilter = None,
    system: SystemFilter = None,
    stuck_reason: Annotated[Reason | None, typer.Option("--reason", help="Why it is stuck.")] = None,
    older_than: OlderFilter = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="Bundles listed at most.")] = 100,
    json_out: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """List stuck bundles: a step needs attention, retried too often, past its deadline, reply overdue."""
    params = {**_filters(bundle, jurisdiction, system, stuck_reason, older_than), "limit": limit}
    with _client(api, token) as client:
        found = _answer(client.get(f"{OPS}/stuck", params=params))
    if json_out:
        _echo_json(found)
        return
    table = _table("tracking id", "bundle", "jurisdiction", "why", "systems", "steps", "stuck for")
    for b in found:
        table.add_row(
            b["tracking_id"],
            b.get("bundle_id") or "-",
            b.get("jurisdiction") or "-",
            ", ".join(b.get("reasons") or []),
            ", ".join(b.get("systems") or []),
            ", ".join(b.get("attention_steps") or []),
            _ago(b.get("stuck_since")),
        )
    console.print(table)
    console.print(f"{len(found)} stuck bundle(s)")


@ops_app.command()
def show(
    tracking_id: str,
    personal: Annotated[
        bool, typer.Option("--personal", help="Also each step's data (operator; the view is audited).")
    ] = False,
    json_out: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """A bundle's timeline: each step's attempts, last error, reference, why it waits, and decisions."""
    with _client(api, token) as client:
        timeline = _answer(
            client.get(f"{OPS}/bundles/{tracking_id}", params={"include_personal": str(personal).lower()})
        )
    if json_out:
        _echo_json(timeline)
        return
    console.print(
        f"[bold]{timeline['tracking_id']}[/bold] {timeline['bundle_id']} v{timeline['definition_version']} "
        f"({timeline['jurisdiction']}) [bold]{timeline['state']}[/bold]"
        + (f" · stuck: {', '.join(timeline['stuck_reasons'])}" if timeline.get("stuck_reasons") else "")
    )
    table = _table("step", "system", "state", "attempts", "last error", "reference", "why it waits")
    for step in timeline["steps"]:
        s = step["status"]
        error = s.get("last_error") or {}
        table.add_row(
            s["id"],
            s.get("system") or "-",
            s["state"],
            str(s.get("attempts", 0)),
            f"{error.get('kind', '')} {error.get('code', '')}".strip() or "-",
            s.get("reference") or "-",
            step.get("held_by") or ", ".join(step.get("stuck_reasons") or []) or "-",
        )
    console.print(table)
    for decision in timeline.get("decisions") or []:
        console.print(
            f"  {decision.get('at', '')} {decision.get('actor', '')}: {decision.get('action', '')} "
            f"{decision.get('step_id') or ''} ({decision.get('reason', '')})",
            markup=False,
            soft_wrap=True,
        )
    for step in timeline["steps"]:
        if step.get("payload") is not None:
            console.print(f"{step['status']['id']} data:", markup=False)
            _echo_json(step["payload"])


def _print_outcome(outcome: dict[str, Any], json_out: bool) -> None:
    if json_out:
        _echo_json(outcome)
    elif outcome["accepted"]:
        console.print(
            f"{outcome['action']} accepted for {outcome['tracking_id']} {outcome.get('step_id') or ''}: "
            f"{outcome.get('before')} → {outcome.get('after')}",
            markup=False,
            soft_wrap=True,
        )
    if not outcome["accepted"]:
        lines = [f"{outcome['action']} refused: {outcome.get('message') or 'no reason given'}"]
        lines += [f"  {e['path']}: {e['message']['en']}" for e in outcome.get("errors") or []]
        _fail("\n".join(lines))


def _print_bulk(report: dict[str, Any], json_out: bool) -> None:
    if json_out:
        _echo_json(report)
        return
    table = _table("tracking id", "step", "system", "state", "would")
    for target in report["targets"]:
        table.add_row(
            target["tracking_id"],
            target.get("step_id") or "-",
            target.get("system") or "-",
            target["state"],
            target["would"],
        )
    console.print(table)
    if report["dry_run"]:
        console.print(f"dry run: {len(report['targets'])} target(s); nothing was changed")
    else:
        console.print(f"{report['action']}: {report['accepted']} accepted, {report['refused']} refused")


def _act(  # noqa: PLR0917 - the shared body of retry, skip, fail and withdraw
    action: str,
    tracking_id: str | None,
    step: str | None,
    reason: str,
    all_stuck: bool,
    filters: dict[str, Any],
    dry_run: bool,
    rate: float,
    json_out: bool,
    api: str | None,
    token: str | None,
    yes: bool = False,
) -> None:
    if all_stuck == (tracking_id is not None):
        _fail(f"say what to {action}: a TRACKING_ID, or --all-stuck with filters", EXIT_USAGE)
    with _client(api, token) as client:
        if all_stuck:
            _bulk(client, action, filters, reason, dry_run=dry_run, rate=rate, json_out=json_out, yes=yes)
            return
        if dry_run:
            _fail("--dry-run goes with --all-stuck (a single action says what it did)", EXIT_USAGE)
        body = {"action": action, "step_id": step, "reason": reason}
        _print_outcome(_answer(client.post(f"{OPS}/bundles/{tracking_id}/actions", json=body)), json_out)


def _bulk(
    client: httpx.Client,
    action: str,
    filters: dict[str, Any],
    reason: str,
    *,
    dry_run: bool,
    rate: float,
    json_out: bool,
    yes: bool,
) -> None:
    """A bulk action: always previewed first; a run, once confirmed, acts only on the previewed
    targets (a bundle stuck since the preview is left alone)."""
    body: dict[str, Any] = {
        "action": action,
        "filter": filters,
        "reason": reason,
        "dry_run": True,
        "rate_per_s": rate,
    }
    preview = _answer(client.post(f"{OPS}/bulk", json=body))
    if dry_run:
        _print_bulk(preview, json_out)
        return
    targets = preview["targets"]
    if not targets:
        _print_bulk(preview, json_out)
        return
    if not yes:
        if json_out:
            _fail("a bulk run with --json asks nothing: add --yes (or preview with --dry-run)", EXIT_USAGE)
        _print_bulk(preview, json_out=False)
        if not typer.confirm(f"{action} these {len(targets)} target(s)?", default=False):
            _fail("nothing was changed")
    pinned = [{"tracking_id": t["tracking_id"], "step_id": t.get("step_id")} for t in targets]
    _print_bulk(
        _answer(client.post(f"{OPS}/bulk", json={**body, "dry_run": False, "targets": pinned})), json_out
    )


def _single_or_bulk(action: str, needs_step: bool) -> Any:
    def command(  # noqa: PLR0917 - one parameter per option, as Typer wants
        reason: ReasonText,
        tracking_id: Annotated[str | None, typer.Argument(help="The bundle (omit with --all-stuck).")] = None,
        step: StepOption = None,
        all_stuck: AllStuck = False,
        bundle: BundleFilter = None,
        jurisdiction: JurisdictionFilter = None,
        system: SystemFilter = None,
        stuck_reason: ReasonFilter = None,
        older_than: OlderFilter = None,
        dry_run: DryRun = False,
        rate: RateOption = 10.0,
        yes: YesOption = False,
        json_out: JsonOption = False,
        api: ApiOption = None,
        token: TokenOption = None,
    ) -> None:
        if needs_step and tracking_id is not None and step is None:
            _fail(f"{action} needs --step STEP", EXIT_USAGE)
        filters = _filters(bundle, jurisdiction, system, stuck_reason, older_than)
        _act(action, tracking_id, step, reason, all_stuck, filters, dry_run, rate, json_out, api, token, yes)

    return command


ops_app.command(
    "retry",
    help="Retry a step now (skipping the backoff wait); or every stuck bundle's with --all-stuck.",
)(_single_or_bulk("retry", needs_step=True))
ops_app.command("skip", help="Skip a step that needs attention (the bundle goes on without it); or in bulk.")(
    _single_or_bulk("skip", needs_step=True)
)
ops_app.command("fail", help="Fail a step that needs attention (compensations run); or in bulk.")(
    _single_or_bulk("fail", needs_step=True)
)
ops_app.command("withdraw", help="Withdraw a bundle on the resident's behalf; or in bulk.")(
    _single_or_bulk("withdraw", needs_step=False)
)


@ops_app.command()
def amend(  # noqa: PLR0917 - one parameter per option, as Typer wants
    tracking_id: str,
    step: Annotated[str, typer.Option("--step", help="The step whose data is corrected.")],
    file: Annotated[Path, typer.Option("--file", exists=True, help="JSON object of corrected fields.")],
    reason: ReasonText,
    json_out: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Correct one step's data (validated like a submission) and send it again."""
    try:
        fields = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {file} as JSON: {exc}", EXIT_USAGE)
    if not isinstance(fields, dict):
        _fail(f"{file} must hold a JSON object of corrected fields", EXIT_USAGE)
    body = {"action": "amend", "step_id": step, "reason": reason, "amended_fields": fields}
    with _client(api, token) as client:
        _print_outcome(_answer(client.post(f"{OPS}/bundles/{tracking_id}/actions", json=body)), json_out)


@ops_app.command()
def pause(
    system: str,
    reason: ReasonText,
    json_out: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Hold every call to a legacy system (planned outage): no retries are spent (supervisor)."""
    with _client(api, token) as client:
        state = _answer(client.post(f"{OPS}/systems/{system}/pause", json={"reason": reason}))
    _echo_json(state) if json_out else console.print(f"{system} paused", markup=False)


@ops_app.command()
def resume(  # noqa: PLR0917 - one parameter per option, as Typer wants
    system: str,
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.01, help="Held calls released per second.")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")] = "resumed",
    json_out: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Release a paused system; held calls go out gradually (supervisor)."""
    body: dict[str, Any] = {"reason": reason}
    if rate is not None:
        body["rate_per_s"] = rate
    with _client(api, token) as client:
        state = _answer(client.post(f"{OPS}/systems/{system}/resume", json=body))
    _echo_json(state) if json_out else console.print(f"{system} resumed", markup=False)


@ops_app.command()
def systems(json_out: JsonOption = False, api: ApiOption = None, token: TokenOption = None) -> None:
    """Each legacy system's health: in flight, retrying, needing attention, held, paused, breaker."""
    with _client(api, token) as client:
        found = _answer(client.get(f"{OPS}/systems"))
    if json_out:
        _echo_json(found)
        return
    table = _table("system", "in flight", "retrying", "attention", "held", "paused", "breaker", "error rate")
    for s in found:
        rate = s.get("error_rate")
        table.add_row(
            s["system_id"],
            str(s["in_flight"]),
            str(s["retrying"]),
            str(s["needs_attention"]),
            str(s["held"]),
            "yes" if s["paused"] else "no",
            str(s["breaker"]),
            "-" if rate is None else f"{rate:.0%}",
        )
    console.print(table)


@ops_app.command()
def whoami(api: ApiOption = None, token: TokenOption = None) -> None:
    """Who the token says you are, and your role."""
    with _client(api, token) as client:
        me = _answer(client.get(f"{OPS}/whoami"))
    console.print(f"{me['subject']} ({me['role']})", markup=False)


@audit_app.command("export")
def audit_export(
    since: Annotated[
        datetime | None, typer.Option("--since", help="Only entries at or after this time (ISO 8601).")
    ] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="JSON lines or one JSON array.")] = (
        ExportFormat.JSONL
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here, not to stdout.")] = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Export the audit trail (supervisor)."""
    params: dict[str, str] = {"format": fmt.value}
    if since is not None:
        params["since"] = since.isoformat()
    with _client(api, token) as client:
        response = client.get(f"{OPS}/audit", params=params)
        if not response.is_success:
            _answer(response)
    if output is None:
        typer.echo(response.text, nl=False)
    else:
        output.write_text(response.text)
        console.print(f"wrote {output}", markup=False)


@audit_app.command("verify")
def audit_verify(json_out: JsonOption = False, api: ApiOption = None, token: TokenOption = None) -> None:
    """Check the audit trail's hash chain; exit 1 at the first entry that was changed (supervisor)."""
    with _client(api, token) as client:
        report = _answer(client.get(f"{OPS}/audit/verify"))
    if json_out:
        _echo_json(report)
    if report["ok"]:
        if not json_out:
            console.print(f"audit trail intact: {report['entries']} entries, last hash {report['last_hash']}")
        return
    _fail(f"audit trail broken at entry {report['first_bad_seq']}: {report['problem']}")


@ops_app.command()
def token(
    role: Annotated[RoleName, typer.Option("--role", help="The role the token carries.")] = RoleName.VIEWER,
    subject: Annotated[str, typer.Option("--subject", help="Who the token names.")] = "dev-operator",
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 15m, 2h, 3d.")] = "12h",
) -> None:
    """Mint a token from the dev stack's local issuer (refused in production and with an issuer set)."""
    from infra import cli  # noqa: PLC0415 - see _client
    from infra.ops.auth import LocalIssuer, Role  # noqa: PLC0415 - PyJWT only for this command

    settings = cli._settings()
    if settings.environment == "production" or settings.oidc_issuer is not None:
        _fail(
            "tokens come from your identity provider here; `ops token` is for tellonce dev only", EXIT_USAGE
        )
    issuer = LocalIssuer.for_settings(settings)
    typer.echo(issuer.mint(subject, Role(role.value), parse_duration(ttl)))
