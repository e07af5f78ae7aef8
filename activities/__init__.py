"""Every side effect of a bundle: calls to adapters, with idempotency keys and error classes."""
