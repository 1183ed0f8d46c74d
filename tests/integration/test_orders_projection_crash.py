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
from tests.support.waiting import DEADLINE

# The child stops dead inside a batch once this process has committed at least one (a decode
# that comes after a committed batch prints "blocked" and never returns), so that the kill
# lands between a batch's read-model writes and its commit, with some progress behind it.
CHILD = textwrap.dedent(
    """
    import asyncio, sys, threading
    from cqrskit import EventCodec
    from orders.app import Settings, build_app

    app = None
    decode = EventCodec.decode
    def decode_or_stop(self, recorded):
        if app is not None and any(r.status.events_applied for r in app.runners):
            print("blocked", flush=True)
            threading.Event().wait()
        return decode(self, recorded)
    EventCodec.decode = decode_or_stop

    async def main():
        global app
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

    for _ in range(2):  # two kills, each after the child committed one more batch
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, url, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        async with asyncio.timeout(DEADLINE):
            assert (await child.stdout.readline()).strip() == b"started"
            assert (await child.stdout.readline()).strip() == b"blocked"
        child.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), DEADLINE) == -signal.SIGKILL

    app = await build_app(Settings(db_url=url))
    try:
        head = await app.backend.events.head_position()
        partial = [await app.backend.read.checkpoint(r.projection.name) for r in app.runners]
        assert any(0 < position < head for position in partial), partial
        await app.catch_up()
        rebuilt, replayed = await snapshot(app.backend.read), await full_replay(app.backend.events)
        for name in rebuilt:
            for got, want in zip(rebuilt[name], replayed[name], strict=False):
                assert got == want, (name, {k: (got[k], want[k]) for k in got if got[k] != want[k]})
        assert rebuilt == replayed
    finally:
        await app.close()
