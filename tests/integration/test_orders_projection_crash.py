"""The Orders projections survive a killed process: no event applied twice or skipped."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import uuid

from cqrskit import Backend
from orders.app import Settings, build_app
from tests.support.orders import fill_orders, full_replay, snapshot

# The child applies the projections slowly (a pause per decoded event) so that the kill lands
# inside a batch, between the read-model writes and the commit.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from cqrskit import EventCodec
    from orders.app import Settings, build_app

    decode = EventCodec.decode
    def slow_decode(self, recorded):
        time.sleep(0.001)
        return decode(self, recorded)
    EventCodec.decode = slow_decode

    async def main():
        app = await build_app(Settings(db_url=sys.argv[1], projection_batch_size=97))
        print("started", flush=True)
        await app.catch_up()
        print("finished", flush=True)
        await app.close()

    asyncio.run(main())
    """
)


async def test_a_projection_killed_mid_batch_resumes_to_a_full_replay(
    durable_backend: Backend,
) -> None:
    url = durable_backend.url
    app = await build_app(Settings(db_url=url))
    try:
        await fill_orders(app, 400, prefix=uuid.uuid4().hex[:8])
    finally:
        await app.close()

    for delay in (0.3, 0.5):  # two kills at different points of the rebuild
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, url, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"started"
        await asyncio.sleep(delay)
        child.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), 30) == -signal.SIGKILL

    app = await build_app(Settings(db_url=url))
    try:
        head = await app.backend.events.head_position()
        partial = [await app.backend.read.checkpoint(r.projection.name) for r in app.runners]
        assert any(0 < position < head for position in partial), "the kill came too late"
        await app.catch_up()
        rebuilt, replayed = await snapshot(app.backend.read), await full_replay(app.backend.events)
        for name in rebuilt:
            for got, want in zip(rebuilt[name], replayed[name], strict=False):
                assert got == want, (name, {k: (got[k], want[k]) for k in got if got[k] != want[k]})
        assert rebuilt == replayed
    finally:
        await app.close()
