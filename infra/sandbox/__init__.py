"""The legacy sandbox: simulated legacy systems over HTTP, with a ledger and fault injection.

For development, demos and tests only. Run it with `python -m infra.sandbox` or `tellonce sandbox`.
"""

from infra.sandbox.app import create_app, serve

__all__ = ["create_app", "serve"]
