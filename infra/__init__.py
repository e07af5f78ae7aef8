"""How tellonce runs: settings, logging, Temporal wiring, the API, the CLI, the dev stack, the sandbox."""
