"""`tellonce ops …`: the operator's commands, spoken to a running API with a bearer token."""

from __future__ import annotations

import typer

ops_app = typer.Typer(help="Find and resolve stuck bundles (needs TELLONCE_TOKEN).", no_args_is_help=True)
