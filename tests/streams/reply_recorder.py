"""A test-only workflow with a `legacy_reply` signal handler that records what it received."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import SIGNAL_LEGACY_REPLY, LegacyReply


@workflow.defn(sandboxed=False)
class ReplyRecorder:
    """Waits until told to finish; keeps every legacy reply signalled to it."""

    def __init__(self) -> None:
        self.replies: list[LegacyReply] = []
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        return len(self.replies)

    @workflow.signal(name=SIGNAL_LEGACY_REPLY)
    def legacy_reply(self, reply: LegacyReply) -> None:
        self.replies.append(reply)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def received(self) -> list[LegacyReply]:
        return self.replies
