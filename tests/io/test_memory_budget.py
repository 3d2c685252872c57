"""io.memory_budget: decodes in flight never exceed the byte budget; large bodies go to disk, endless ones stop."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time

import aiohttp
import pytest
from aiohttp import web

from oiv4.contracts.errors import BodyTooLarge
from oiv4.io.memory_budget import MemoryBudget, spool_body

CAPACITY = 1000


class Holders:
    """An independent tally of what acquirers hold, to check the budget against (not the budget's own count)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = self.max_total = self.count = 0
        self.log: list[str] = []

    def enter(self, amount: int, name: str) -> None:
        with self.lock:
            self.total += amount
            self.count += 1
            self.max_total = max(self.max_total, self.total)
            self.log.append(f"+{name}:{self.count}")

    def leave(self, amount: int, name: str) -> None:
        with self.lock:
            self.total -= amount
            self.count -= 1
            self.log.append(f"-{name}")


def _wait_until(predicate) -> None:
    """Synchronise with another thread (not a timed assertion: it waits as long as needed)."""
    while not predicate():
        time.sleep(0.001)


def test_concurrent_threads_never_hold_more_than_the_budget():
    budget, holders = MemoryBudget(CAPACITY), Holders()
    rng = random.Random(1)
    amounts = [rng.randint(1, 600) for _ in range(200)]

    def work(amount: int) -> None:
        with budget.hold(amount) as taken:
            holders.enter(taken, "t")
            time.sleep(0.0005)
            holders.leave(taken, "t")

    threads = [threading.Thread(target=work, args=(a,)) for a in amounts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert holders.max_total <= CAPACITY and budget.peak <= CAPACITY
    assert budget.in_use == 0 and budget.waiting == 0


def test_concurrent_tasks_and_threads_share_one_budget_without_exceeding_it():
    budget, holders = MemoryBudget(CAPACITY), Holders()

    def in_thread(amount: int) -> None:
        with budget.hold(amount) as taken:
            holders.enter(taken, "t")
            time.sleep(0.0005)
            holders.leave(taken, "t")

    async def in_task(amount: int) -> None:
        async with budget.hold_async(amount) as taken:
            holders.enter(taken, "a")
            await asyncio.sleep(0.0005)
            holders.leave(taken, "a")

    async def main() -> None:
        rng = random.Random(2)
        jobs = [asyncio.to_thread(in_thread, rng.randint(1, 700)) for _ in range(30)]
        jobs += [in_task(rng.randint(1, 700)) for _ in range(100)]
        rng.shuffle(jobs)
        await asyncio.gather(*jobs)

    asyncio.run(main())
    assert holders.max_total <= CAPACITY and budget.peak <= CAPACITY and budget.in_use == 0


def test_a_request_bigger_than_the_budget_waits_for_everyone_then_runs_alone():
    budget, holders = MemoryBudget(CAPACITY), Holders()
    small = budget.acquire(300)
    holders.enter(small, "small")
    giant_holding, giant_may_leave = threading.Event(), threading.Event()

    def giant() -> None:
        with budget.hold(50 * CAPACITY) as taken:  # a 196 MP PNG on a small budget
            holders.enter(taken, "giant")
            giant_holding.set()
            giant_may_leave.wait()
            holders.leave(taken, "giant")

    def later() -> None:
        with budget.hold(10) as taken:
            holders.enter(taken, "later")
            holders.leave(taken, "later")

    g = threading.Thread(target=giant)
    g.start()
    _wait_until(lambda: budget.waiting == 1)
    late = threading.Thread(target=later)
    late.start()  # queued behind the giant: first come, first served
    _wait_until(lambda: budget.waiting == 2)
    holders.leave(small, "small")
    budget.release(small)
    giant_holding.wait()
    assert budget.in_use == CAPACITY and holders.count == 1  # alone
    giant_may_leave.set()
    g.join()
    late.join()
    assert holders.log == ["+small:1", "-small", "+giant:1", "-giant", "+later:1", "-later"]
    assert budget.in_use == 0


def test_a_cancelled_waiter_gives_back_nothing_it_did_not_get_and_unblocks_those_behind_it():
    async def main() -> tuple[int, int]:
        budget = MemoryBudget(CAPACITY)
        first = await budget.acquire_async(900)
        big = asyncio.create_task(budget.acquire_async(500))
        await asyncio.sleep(0)
        small = asyncio.create_task(budget.acquire_async(100))  # fits, but queued behind `big`
        await asyncio.sleep(0)
        assert budget.waiting == 2
        big.cancel()
        with pytest.raises(asyncio.CancelledError):
            await big
        got = await small
        budget.release(got)
        budget.release(first)
        return budget.in_use, budget.waiting

    assert asyncio.run(main()) == (0, 0)


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"


def test_an_endless_body_stops_reading_at_the_limit():
    sent = []

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"\xff" * 65536
        try:
            while True:
                await resp.write(chunk)
                sent.append(len(chunk))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def main() -> None:
        runner, url = await _serve(endless)
        try:
            async with aiohttp.ClientSession() as s, s.get(url) as resp:
                with pytest.raises(BodyTooLarge, match="exceeds 4194304 bytes"):
                    await spool_body(resp.content.iter_chunked(65536), max_bytes=4 << 20, spool_above=256 << 10)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert sum(sent) >= 4 << 20


def test_a_large_body_spills_to_disk_and_reads_back_identical_with_its_md5():
    payload = random.Random(3).randbytes(3 << 20)

    async def serve_payload(request: web.Request) -> web.Response:
        return web.Response(body=payload)

    async def main() -> tuple[bool, bytes, str, bool]:
        runner, url = await _serve(serve_payload)
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(url) as resp:
                    big = await spool_body(
                        resp.content.iter_chunked(65536),
                        max_bytes=8 << 20,
                        spool_above=1 << 20,
                        hashers={"md5": hashlib.md5()},
                    )
                async with s.get(url) as resp:
                    small = await spool_body(resp.content.iter_chunked(65536), max_bytes=8 << 20, spool_above=4 << 20)
            data = bytes(big.view())
            result = (big.on_disk, data, big.digests["md5"].hexdigest(), small.on_disk)
            big.close()
            small.close()
            return result
        finally:
            await runner.cleanup()

    on_disk, data, md5, small_on_disk = asyncio.run(main())
    assert on_disk and not small_on_disk
    assert data == payload and md5 == hashlib.md5(payload).hexdigest()


def test_a_budget_needs_a_positive_capacity():
    with pytest.raises(ValueError, match="positive"):
        MemoryBudget(0)
