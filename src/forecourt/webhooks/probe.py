"""Send a signed ``webhook.test`` event to one endpoint now, and report the attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecourt.events.outbox import lookup_type, prepare
from forecourt.principal import Principal
from forecourt.webhooks import fanout
from forecourt.webhooks.models import Attempt

if TYPE_CHECKING:
    from forecourt.core import Forecourt

TEST_EVENT_TYPE = "webhook.test"


async def send_test(fc: Forecourt, actor: Principal, endpoint_id: str) -> Attempt:
    """One attempt, made right away through the delivery code path and logged like any
    other. The test event goes to this endpoint only and is never retried in the background.
    """
    async with fc.sessionmaker() as session:
        endpoint = await fc.webhooks(session).get(actor, endpoint_id)
        view = await lookup_type(session, actor.tenant_id, TEST_EVENT_TYPE)
        event = prepare(
            view,
            actor.tenant_id,
            data={"endpoint_id": endpoint.id, "message": "A test event from Forecourt."},
            subject=endpoint.id,
        ).event()
        session.add(event)
        await session.flush()
        [delivery] = fanout.enqueue(session, actor.tenant_id, event.id, event.type, [endpoint])
        delivery.next_attempt_at = None  # never claimed by the background loop
        await session.commit()
    assert fc.worker is not None, "Forecourt.start() builds the delivery worker"
    return await fc.worker.deliver_now(delivery.id, once=True)
