"""`python -m infra.sandbox --host H --port P`: run the legacy sandbox in this process."""

from __future__ import annotations

import argparse

from infra.sandbox.app import serve
from infra.settings import Settings


def main() -> None:
    """Parse the command line and serve until interrupted."""
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m infra.sandbox", description="tellonce legacy sandbox")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port("sandbox"))
    args = parser.parse_args()
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
