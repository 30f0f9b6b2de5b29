"""A loopback HTTP/1.1 fault proxy for the campaign and the fault tests: put it between a client and a real
server (the IPFS RPC API, Anvil's JSON-RPC) and make chosen exchanges slow, silent, cut or lying.

The proxy understands just enough HTTP to keep requests and responses apart (Content-Length or chunked
framing), so a fault can target one kind of request (`match`, a substring of the request line or body, e.g.
b"/api/v0/cat" or b"eth_sendRawTransaction") and can rewrite a body while keeping the framing valid: a
truncated or corrupted body then arrives as a clean, well-framed response, which only content verification
(CIDs) can catch. Each exchange is forwarded upstream on a fresh connection with `Connection: close` and the
response is re-framed with Content-Length towards the client, so client connections stay keep-alive.

A test/bench tool: asyncio in one background thread, loopback only, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from base.process import LOOPBACK, free_port

MAX_STALL_S = 120.0  # a stalled exchange is closed after this long even if the client never gives up
IO_TIMEOUT_S = 60.0  # the proxy's own bound on reading a request or the upstream's response


class Fault(enum.Enum):
    PASS = "pass"
    DELAY = "delay"  # forward the response in pieces spread over `delay_s` (slow but complete)
    DRIP = "drip"  # send the response head, then one body byte every `delay_s`, for as long as the client listens
    STALL = "stall"  # forward the request, answer nothing (after `after_bytes` of the response) until the client quits
    CUT = "cut"  # forward the request (it takes effect upstream), send `after_bytes` of the response, close
    DROP_REQUEST = "drop_request"  # close without forwarding: the upstream never sees the request
    TRUNCATE_BODY = "truncate_body"  # a well-framed response whose body keeps only its first `after_bytes`
    CORRUPT_BODY = "corrupt_body"  # a well-framed response with one body byte flipped (at `after_bytes`)
    REFUSE = "refuse"  # forward the request, answer 500 "request timed out" instead of the upstream's response


@dataclass(frozen=True)
class FaultPlan:
    fault: Fault = Fault.PASS
    match: bytes = b""  # only exchanges whose request line or body contains this (b"": every exchange)
    times: int | None = None  # the next `times` matching exchanges (None: all of them)
    delay_s: float = 0.0
    after_bytes: int = 0
    # Decided once the upstream answered: only responses whose body this accepts (e.g. an IPFS payload of one
    # trainer, read from its manifest). A plan with `when_body` counts against `times` only where it applies.
    when_body: Callable[[bytes], bool] | None = None


@dataclass
class _Message:
    head: bytes  # start line + headers, without the blank line
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    def reframed(self, connection: str) -> bytes:
        """The same message with Content-Length framing and the given Connection header."""
        drop = (b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"trailer")
        lines = [ln for ln in self.head.split(b"\r\n")[1:] if ln.split(b":", 1)[0].strip().lower() not in drop]
        lines += [f"Content-Length: {len(self.body)}".encode(), f"Connection: {connection}".encode()]
        return b"\r\n".join([self.head.split(b"\r\n", 1)[0], *lines]) + b"\r\n\r\n" + self.body


async def _read_message(reader: asyncio.StreamReader, until_eof: bool) -> _Message | None:
    """One HTTP/1.1 message; None on a clean EOF before it starts. `until_eof`: a response whose length is
    given by closing the connection when it names none."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial:
            return None
        raise
    message = _Message(head[:-4], b"")
    if (message.header("transfer-encoding") or "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        message.body = b"".join(parts)
    elif (length := message.header("content-length")) is not None:
        message.body = await reader.readexactly(int(length))
    elif until_eof:
        message.body = await reader.read()
    return message


def _refusal() -> bytes:
    """What an IPFS daemon answers when its wait for blocks that nobody provides runs out (the client's
    `timeout` parameter): the caller sees content that is not served, not a broken daemon."""
    body = b'{"Message":"request timed out","Code":0,"Type":"error"}'
    return (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + body)


class FaultProxy:
    """`FaultProxy(upstream_port).start()`; point a client at `.url`; `.plan(FaultPlan(...))` arms a fault."""

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.exchanges = 0  # requests seen
        self.faults_applied = 0
        self._plan = FaultPlan()
        self._left: int | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan, self._left = plan, plan.times

    def clear(self) -> None:
        self.plan(FaultPlan())

    def _take(self, request: _Message, response: _Message | None = None) -> FaultPlan:
        """The fault for this exchange (counting it against `times`), or PASS. Called once before forwarding
        the request, and again with the upstream's `response` for a plan that judges the body (`when_body`)."""
        with self._lock:
            if response is None:
                self.exchanges += 1
            plan = self._plan
            if plan.fault is Fault.PASS or (self._left is not None and self._left <= 0):
                return FaultPlan()
            if plan.match and plan.match not in request.head.split(b"\r\n", 1)[0] + request.body[:4096]:
                return FaultPlan()
            if (plan.when_body is not None) != (response is not None):
                return FaultPlan()  # not this call's to decide
            if plan.when_body is not None and response is not None and not plan.when_body(response.body):
                return FaultPlan()
            if self._left is not None:
                self._left -= 1
            self.faults_applied += 1
            return plan

    def start(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, LOOPBACK, self.port), self._loop)
        self._server = future.result(timeout=10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await asyncio.wait_for(_read_message(reader, until_eof=False), IO_TIMEOUT_S)
                if request is None or not await self._exchange(request, reader, writer):
                    break
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client (or the upstream) went away mid-message: close this connection
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _upstream(self, request: _Message) -> _Message:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        try:
            up_writer.write(request.reframed("close"))
            await up_writer.drain()
            response = await asyncio.wait_for(_read_message(up_reader, until_eof=True), IO_TIMEOUT_S)
        finally:
            up_writer.close()
        if response is None:
            raise ConnectionResetError("upstream closed without answering")
        return response

    async def _exchange(self, request: _Message, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the client connection must close."""
        plan = self._take(request)
        if plan.fault is Fault.DROP_REQUEST:
            return False
        response = await self._upstream(request)
        if plan.fault is Fault.PASS:
            plan = self._take(request, response)
        if plan.fault is Fault.REFUSE:
            writer.write(_refusal())
            await writer.drain()
            return True
        if plan.fault is Fault.TRUNCATE_BODY:
            response.body = response.body[: plan.after_bytes]
        elif plan.fault is Fault.CORRUPT_BODY and response.body:
            at = min(plan.after_bytes, len(response.body) - 1)
            response.body = response.body[:at] + bytes([response.body[at] ^ 0x01]) + response.body[at + 1 :]
        wire = response.reframed("keep-alive")
        if plan.fault is Fault.CUT:
            writer.write(wire[: plan.after_bytes])
            await writer.drain()
            return False
        if plan.fault is Fault.STALL:
            writer.write(wire[: plan.after_bytes])
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(), MAX_STALL_S)  # until the client hangs up
            return False
        if plan.fault is Fault.DRIP:
            head_len = len(wire) - len(response.body)
            writer.write(wire[:head_len])
            for at in range(head_len, len(wire)):
                await asyncio.sleep(plan.delay_s)
                if reader.at_eof():
                    return False  # the client gave up
                writer.write(wire[at : at + 1])
                await writer.drain()
            return True
        if plan.fault is Fault.DELAY:
            pieces = 10
            step = max(1, -(-len(wire) // pieces))
            for at in range(0, len(wire), step):
                await asyncio.sleep(plan.delay_s / pieces)
                writer.write(wire[at : at + step])
                await writer.drain()
            return True
        writer.write(wire)
        await writer.drain()
        return True
