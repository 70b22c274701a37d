"""A real OTLP/gRPC endpoint the test runs itself: the collector's TraceService, keeping spans.

The roles export to it exactly as to an OpenTelemetry Collector or Jaeger (the same protobuf
service, `opentelemetry.proto.collector.trace.v1.TraceService/Export`); the test reads what
arrived. As the webhook receiver of test_alerting.py stands for Alertmanager's receivers.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    instance: str  # its service.instance.id
    name: str
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_id: str  # 16 hex, "" for a trace's root
    start: int  # ns since the epoch
    end: int
    links: tuple[str, ...]  # trace ids of the linked spans
    attributes: dict[str, object]


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OTLPReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.endpoint = ""

    def Export(self, request, context):  # noqa: N802 - the protobuf service's method name
        got = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    got.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            instance=str(resource.get("service.instance.id", "")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            start=span.start_time_unix_nano,
                            end=span.end_time_unix_nano,
                            links=tuple(link.trace_id.hex() for link in span.links),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self._spans.extend(got)
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> OTLPReceiver:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1).wait(5)

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]


def render_tree(spans: list[ReceivedSpan]) -> str:
    """One trace as an indented tree: span, service, offset from the root's start and duration
    (ms); children in start order. A span whose parent did not arrive is shown at the top."""
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        children.setdefault(s.parent_id if s.parent_id in by_id else "", []).append(s)
    t0 = min((s.start for s in spans), default=0)
    lines: list[str] = []

    def walk(span: ReceivedSpan, depth: int) -> None:
        label = "  " * depth + span.name
        lines.append(
            f"{label:<34} {span.service:<18} +{(span.start - t0) / 1e6:7.1f} ms "
            f"{(span.end - span.start) / 1e6:7.1f} ms"
        )
        for child in sorted(children.get(span.span_id, []), key=lambda c: c.start):
            walk(child, depth + 1)

    for root in sorted(children.get("", []), key=lambda c: c.start):
        walk(root, 0)
    return "\n".join(lines)
