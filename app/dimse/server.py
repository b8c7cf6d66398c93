"""The DICOM C-ECHO / C-STORE receiver (pynetdicom): a thin adapter over app/services/dimse.py.

One thread per association (pynetdicom's threaded server). An association is refused (A-ASSOCIATE-RJ,
calling AE title not recognised) unless its calling AE title, from its address, is on the allow-list;
a wrong called AE title is refused as well. Each C-STORE is answered only after its instance is
durable or refused. Logs carry AE titles, addresses and counts, never a UID or a value of a data set.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from app.core.config import Settings
from app.dicom.parse import ENCAPSULATED_SYNTAXES
from app.services import dimse
from app.services.storage import InstanceStore

log = logging.getLogger(__name__)
# What the parser reads (never deflate: it would be inflated unbounded); uncompressed first, so a sender
# that offers several keeps the cheap one.
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", *sorted(ENCAPSULATED_SYNTAXES)]
MAX_PDU = 1 << 20  # larger PDUs than pynetdicom's 16 KiB default: fewer round trips per slice


@dataclass
class _Association:
    actor: str
    statuses: Counter[int] = field(default_factory=Counter)
    series: set[str] = field(default_factory=set)


class Receiver:
    """The running receiver; ``start()`` listens in background threads, ``stop()`` closes it."""

    def __init__(self, settings: Settings, store: InstanceStore, host: str | None = None, port: int | None = None):
        self.settings = settings
        self.store = store
        self.host = host or settings.dimse_host
        port = port if port is not None else settings.dimse_port
        if port is None:
            raise dimse.AllowListError("GATEKEEPER_DIMSE_PORT is not set")
        self.port = port
        self.ae_title = dimse.check_ae_title(settings.dimse_ae_title, "GATEKEEPER_DIMSE_AE_TITLE")
        self.rules = dimse.parse_allowed_peers(settings.dimse_allowed_peers)
        self._associations: dict[int, _Association] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def _ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = self.settings.dimse_max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.settings.dimse_timeout_s
        ae.maximum_pdu_size = MAX_PDU
        for context in StoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, TRANSFER_SYNTAXES[:2])
        return ae

    def start(self) -> None:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per C-STORE otherwise
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        self._server = self._ae().start_server((self.host, self.port), block=False, evt_handlers=handlers)
        log.info("DIMSE receiver %s listening on %s:%d (%d allowed peer(s))", self.ae_title, self.host, self.port,
                 len(self.rules))  # fmt: skip

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ------------------------------------------------------------------ handlers (pynetdicom threads)

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()  # type: ignore[union-attr]
        address = assoc.requestor.address
        if not dimse.peer_allowed(self.rules, ae_title=calling, address=address):
            log.warning("DIMSE association refused: calling AE %r from %s is not on the allow-list", calling, address)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected-permanent, service user, calling AE not recognised
            assoc.kill()  # as pynetdicom's own refusals: waits until the A-ASSOCIATE-RJ is sent
            return
        with self._lock:
            self._associations[id(assoc)] = _Association(actor=f"dimse:{calling}")

    def _state(self, event: evt.Event) -> _Association | None:
        with self._lock:
            return self._associations.get(id(event.assoc))

    def _on_echo(self, event: evt.Event) -> int:
        return dimse.SUCCESS

    def _on_store(self, event: evt.Event) -> int | Dataset:
        state = self._state(event)
        if state is None:  # cannot happen: a refused association never gets here
            return 0x0124  # refused: not authorised
        request = cast(C_STORE, event.request)
        try:
            result = dimse.store_dataset(
                store=self.store, settings=self.settings, sop_class_uid=str(request.AffectedSOPClassUID or ""),
                sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
                transfer_syntax_uid=str(event.context.transfer_syntax), dataset=request.DataSet.getbuffer(),  # type: ignore[union-attr]
                actor=state.actor,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - answer the sender; the type only, never the message
            log.error("DIMSE C-STORE failed: %s", type(exc).__name__)
            result = dimse.StoreResult(0x0110, "processing failure")
        state.statuses[result.status] += 1
        if result.status == dimse.SUCCESS and result.series_uid:
            state.series.add(result.series_uid)
        if result.status == dimse.SUCCESS and not result.comment:
            return dimse.SUCCESS
        reply = Dataset()
        reply.Status = result.status
        reply.ErrorComment = result.comment[:64]
        return reply

    def _on_released(self, event: evt.Event) -> None:
        state = self._state(event)
        if state is None or not self.settings.dimse_complete_on_release or not state.series:
            return
        try:
            done = dimse.complete_series(series_uids=state.series, actor=state.actor)
        except Exception as exc:  # noqa: BLE001 - the stable age completes them later
            log.warning("DIMSE release: completing series failed (%s); the stable age will", type(exc).__name__)
            return
        log.info("DIMSE release from %s completed %d series", state.actor, done)

    def _on_closed(self, event: evt.Event) -> None:
        with self._lock:
            state = self._associations.pop(id(event.assoc), None)
        if state is not None and state.statuses:
            counts = ", ".join(f"0x{status:04X}: {n}" for status, n in sorted(state.statuses.items()))
            log.info("DIMSE association from %s closed; statuses %s", state.actor, counts)
