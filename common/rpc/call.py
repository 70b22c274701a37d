"""A small grpcurl: call any method of a gRPC server, learning its schema by reflection.

    python -m common.rpc.call providers                       # what ZooKeeper lists
    python -m common.rpc.call list  127.0.0.1:50051           # services, by reflection
    python -m common.rpc.call describe 127.0.0.1:50051 tasklab.v1.TaskService
    python -m common.rpc.call call 127.0.0.1:50051 tasklab.v1.TaskService/Submit \\
        '{"taskType": "SHELL", "payload": "echo hi"}'
    python -m common.rpc.call health 127.0.0.1:50051          # exit 0 if SERVING
    python -m common.rpc.call submit 'echo hi'                # through the proxy (ZooKeeper)
    python -m common.rpc.call watch TASK_ID                   # likewise, failing over

It knows nothing of tasklab's messages: request and response types come from the server's
reflection service, JSON is converted with protobuf's json_format (proto3 JSON: camelCase
names), so it works against any server with reflection on, as grpcurl does. An error prints
its status code, message and rich details, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status


def _pool(channel: grpc.Channel) -> tuple[ProtoReflectionDescriptorDatabase, object]:
    db = ProtoReflectionDescriptorDatabase(channel)
    return db, descriptor_pool.DescriptorPool(db)


def call(address: str, method: str, body: str, timeout: float) -> int:
    channel = grpc.insecure_channel(address)
    _, pool = _pool(channel)
    service_name, _, method_name = method.rpartition("/")
    service = pool.FindServiceByName(service_name)
    desc = service.methods_by_name[method_name]
    request_cls = message_factory.GetMessageClass(desc.input_type)
    response_cls = message_factory.GetMessageClass(desc.output_type)
    request = json_format.Parse(body or "{}", request_cls())
    path = f"/{service.full_name}/{desc.name}"
    kwargs = {
        "request_serializer": request_cls.SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    try:
        if desc.server_streaming:
            for answer in channel.unary_stream(path, **kwargs)(request, timeout=timeout):
                print(json_format.MessageToJson(answer, indent=None))
        else:
            answer = channel.unary_unary(path, **kwargs)(request, timeout=timeout)
            print(json_format.MessageToJson(answer, indent=2))
    except grpc.RpcError as exc:
        out = {"code": exc.code().name, "message": exc.details()}
        status = rpc_status.from_call(exc)
        if status is not None and status.details:
            out["details"] = [json_format.MessageToDict(_unpacked(d)) for d in status.details]
        print(json.dumps(out, indent=2), file=sys.stderr)
        return 1
    return 0


def _unpacked(detail):
    from google.rpc import error_details_pb2  # noqa: F401 - registers the detail types

    kind = detail.type_url.rsplit("/", 1)[-1]
    desc = descriptor_pool.Default().FindMessageTypeByName(kind)
    msg = message_factory.GetMessageClass(desc)()
    detail.Unpack(msg)
    return msg


def _through_zookeeper(args: argparse.Namespace) -> int:
    """The subcommands that find providers in ZooKeeper (TASKLAB_ZK_HOSTS, _ZK_CHROOT)."""
    from common.config import get_settings
    from common.coordination.zk import close_zk, get_zk
    from common.rpc.gen import task_service_pb2 as pb
    from common.rpc.proxy import TaskServiceProxy
    from common.rpc.registry import TASK_SERVICE

    settings = get_settings()
    zk = get_zk(settings)
    try:
        if args.cmd == "providers":
            for child in sorted(zk.get_children(TASK_SERVICE)):
                data, _ = zk.get(f"{TASK_SERVICE}/{child}")
                print(child, data.decode())
            return 0
        proxy = TaskServiceProxy(zk).start()
        try:
            if args.cmd == "submit":
                answer = proxy.submit(pb.SubmitRequest(task_type=pb.SHELL, payload=args.payload))
                print(answer.task.task_id, f"(via {proxy.last_provider})")
                return 0
            for event in proxy.watch(args.task_id, timeout=args.timeout):
                kind = event.WhichOneof("event")
                if kind == "transition":
                    what = pb.TaskStatus.Name(event.transition.state)
                elif kind == "log":
                    what = event.log.line
                else:
                    what = pb.TaskStatus.Name(event.final.status)
                print(f"{kind:<10} {event.sequence:>4}  {what}  (via {proxy.last_provider})")
            return 0
        except grpc.RpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        finally:
            proxy.close()
    finally:
        close_zk(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.rpc.call", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("providers", help="the TaskService providers registered in ZooKeeper")
    p = sub.add_parser("list", help="the services a server offers")
    p.add_argument("address")
    p = sub.add_parser("describe", help="a service or message, as .proto text")
    p.add_argument("address")
    p.add_argument("symbol")
    p = sub.add_parser("call", help="call SERVICE/METHOD with a JSON request")
    p.add_argument("address")
    p.add_argument("method")
    p.add_argument("body", nargs="?", default="{}")
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("submit", help="submit a SHELL task through the proxy")
    p.add_argument("payload")
    p = sub.add_parser("watch", help="watch a task through the proxy, failing over")
    p.add_argument("task_id")
    p.add_argument("--timeout", type=float, default=300.0)
    p = sub.add_parser("health", help="grpc.health.v1 Check; exit 0 if SERVING")
    p.add_argument("address")
    p.add_argument("service", nargs="?", default="")
    args = parser.parse_args(argv)

    if args.cmd in ("providers", "submit", "watch"):
        return _through_zookeeper(args)
    if args.cmd == "call":
        return call(args.address, args.method, args.body, args.timeout)
    channel = grpc.insecure_channel(args.address)
    if args.cmd == "health":
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=3
            )
        except grpc.RpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        print(name)
        return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1
    db, pool = _pool(channel)
    if args.cmd == "list":
        for name in sorted(db.get_services()):
            print(name)
        return 0
    file = db.FindFileContainingSymbol(args.symbol)
    print(f"// {file.name}")
    for service in file.service:
        if args.symbol in (f"{file.package}.{service.name}", service.name):
            print(f"service {service.name} {{")
            for m in service.method:
                stream = "stream " if m.server_streaming else ""
                print(
                    f"  rpc {m.name}({m.input_type.lstrip('.')}) "
                    f"returns ({stream}{m.output_type.lstrip('.')});"
                )
            print("}")
            return 0
    desc = pool.FindMessageTypeByName(args.symbol)
    print(f"message {desc.name} {{")
    for f in desc.fields:
        print(f"  {f.message_type.full_name if f.message_type else f.type} {f.name} = {f.number};")
    print("}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
