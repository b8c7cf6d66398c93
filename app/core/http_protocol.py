"""uvicorn's h11 protocol with read timeouts: a slow or stalled client cannot hold a connection open.

uvicorn has a keep-alive timeout (idle between requests) and a header size bound
(``h11_max_incomplete_event_size``) but no read timeout: a client that opens a connection and trickles its
headers one byte at a time, or stops in the middle of a body, holds it for ever (issue #15 measured 7 such
connections open after 60 s). This subclass adds the two timers nginx calls ``client_header_timeout`` and
``client_body_timeout``, from the settings object:

- headers: a request's line and headers must be complete within ``GATEKEEPER_HTTP_HEADER_TIMEOUT_S`` of the
  connection opening or of the previous response (a total, not per read: a trickle does not extend it);
- body: while the application waits for more of the body, the client may stay silent at most
  ``GATEKEEPER_HTTP_BODY_TIMEOUT_S`` (per read, as nginx; a slow link that keeps sending is served). Time
  when uvicorn itself stopped reading (flow control: the application is busy) does not count.

Either closes the connection after a ``408 Request Timeout``; the application sees a client disconnect.
Keep-alive and the header size bound come from the same settings. Run it with
``uvicorn --http app.core.http_protocol:GuardedH11Protocol`` (``gatekeeper serve`` does).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.core.config import get_settings

log = logging.getLogger(__name__)
PROTOCOL = "app.core.http_protocol:GuardedH11Protocol"
TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout_s = settings.http_header_timeout_s
        self.body_timeout_s = settings.http_body_timeout_s
        self.timeout_keep_alive = settings.http_keep_alive_s  # type: ignore[assignment]
        self.conn = h11.Connection(h11.SERVER, settings.http_max_header_bytes)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._served = False  # a response went out on this connection (then an idle wait is keep-alive's)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        self._served = True
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        """Arm the timer of the phase the client is in: headers (IDLE), body (SEND_BODY), or none."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._cancel(body=True)
            self._arm_header_timer()
        elif state is h11.SEND_BODY:
            self._cancel(header=True)
            self._cancel(body=True)
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_timeout)
        else:
            self._cancel_timers()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:  # a total: a trickle of bytes never pushes it back
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel(self, *, header: bool = False, body: bool = False) -> None:
        if header and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if body and self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel(header=True, body=True)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a pipelined request waits for the response before it: not the client's delay
        if self._served and not self.conn.trailing_data[0]:
            return  # idle between requests, no byte of the next one: uvicorn's keep-alive timer closes it
        self._close("request headers not complete", self.header_timeout_s)

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY:
            return
        # uvicorn stopped reading (the application is behind, not the client), or the client rightly waits for
        # the "100 Continue" that uvicorn sends when the application first asks for the body
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_timeout)
            return
        # an application that answered without reading the whole body: no second response, just close
        answered = self.cycle is not None and self.cycle.response_started
        self._close("request body stalled", self.body_timeout_s, reply=not answered)

    def _close(self, why: str, after_s: float, reply: bool = True) -> None:
        if self.transport.is_closing():
            return
        log.warning("closing a connection: %s after %.1f s", why, after_s)
        if reply:
            body = f"{why} within {after_s:g} s\n".encode()
            self.transport.write(TIMEOUT_REPLY + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        self.transport.close()
