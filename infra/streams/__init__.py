"""The Kafka streams role: partner submissions, legacy replies and birth notices in; DLQs out.

`tellonce streams` runs it (see `infra.streams.app`); `docs/streams.md` explains how to operate it.
Every consumer commits an offset only after the effect of its records is durable in Temporal
(or in a dead-letter queue), so a crash at any point loses nothing and starts nothing twice.
"""
