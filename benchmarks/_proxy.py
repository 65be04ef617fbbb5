"""A TCP proxy on loopback that adds a fixed delay to every request, like a far-away server.

Each chunk the client sends is forwarded ``delay`` seconds after it arrived, in order, so
every request reaches the server ``delay`` later than it was sent, whatever its size and
however many requests share a connection (a one-way delay on the request path, not a
bandwidth limit). Answers come back undelayed, so a request/response round trip grows by
``delay``. The proxy runs its own event loop in a daemon thread of the benchmark process.

The proxy is a client of the server too, so it acknowledges the server's replies at once
(``TCP_QUICKACK`` after each forwarded request, as the hook's processes do). Linux delays
an ACK on a connection that sends soon after it received; with a delay under 40 ms a reply
the server writes in two pieces would then wait for the proxy's ACK, a stall that a real
network path between the hook and the server does not add.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from inspect_mlflow._writer.quickack import quick_ack


class DelayProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` with a delay.

    Use as a context manager; :attr:`url` is the address to give the client.
    """

    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="delay-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delaying proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            done.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        """Stop listening and end every connection, so the loop closes cleanly."""
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                self._delayed(client_r, server_w),
                self._pipe(server_r, client_w),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # shutdown; end normally (asyncio's stream callback reads the outcome)
        finally:
            for writer in (client_w, server_w):
                with contextlib.suppress(Exception):
                    writer.close()

    async def _delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward each chunk ``delay`` seconds after it arrived, keeping their order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                quick_ack(writer.get_extra_info("socket"))

        sender = asyncio.ensure_future(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
        finally:
            queue.put_nowait((loop.time() + self.delay, b""))  # end of stream (or reset)
            with contextlib.suppress(Exception):
                await sender

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.write_eof()
