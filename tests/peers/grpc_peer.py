#!/usr/bin/python3
"""gRPC peers for xlb's end-to-end tests (Debian python3-grpcio), with no
generated code: generic handlers whose messages are raw bytes.

server --port P --name NAME
    Serves the service `xlbtest.Echo` on 127.0.0.1:P (plain HTTP/2) and
    prints "ready" once listening:
      Echo(bytes) -> b"NAME:" + bytes; trailing metadata x-trailer: yes
      Fail(bytes) -> no message; status PERMISSION_DENIED, details
                     "denied by NAME", trailing metadata x-trailer: yes and
                     x-reason: test
      Count(b"N") -> N messages b"item-0" … b"item-{N-1}"; trailing
                     metadata x-stream-trailer: done
      CountThenFail(b"N") -> N messages, then status ABORTED, details
                     "stopped after N", trailing metadata x-trailer: yes
      Chat(stream) -> each message back as b"NAME:" + message, in order;
                     trailing metadata x-chat-count: <messages seen>

client --target HOST:PORT
    Calls each method once (Echo also with 1 MiB) and prints one JSON line:
    per call the messages' lengths/values, the status code name, the
    details and the trailing metadata.
"""
import argparse
import json
import sys
from concurrent import futures

import grpc

SERVICE = "xlbtest.Echo"


def serve(port, name):
    nb = name.encode()

    def echo(req, ctx):
        ctx.set_trailing_metadata((("x-trailer", "yes"),))
        return nb + b":" + req

    def fail(req, ctx):
        ctx.set_trailing_metadata((("x-trailer", "yes"), ("x-reason", "test")))
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, f"denied by {name}")

    def count(req, ctx):
        for i in range(int(req)):
            yield b"item-%d" % i
        ctx.set_trailing_metadata((("x-stream-trailer", "done"),))

    def count_then_fail(req, ctx):
        n = int(req)
        for i in range(n):
            yield b"item-%d" % i
        ctx.set_trailing_metadata((("x-trailer", "yes"),))
        ctx.abort(grpc.StatusCode.ABORTED, f"stopped after {n}")

    def chat(reqs, ctx):
        seen = 0
        for r in reqs:
            seen += 1
            yield nb + b":" + r
        ctx.set_trailing_metadata((("x-chat-count", str(seen)),))

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "CountThenFail": grpc.unary_stream_rpc_method_handler(count_then_fail),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 16 << 20),
                 ("grpc.max_send_message_length", 16 << 20)],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        print(f"cannot bind 127.0.0.1:{port}", file=sys.stderr)
        return 1
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()
    return 0


def md(pairs):
    return [[k, v if isinstance(v, str) else v.decode("latin-1")] for k, v in (pairs or ())]


def text(b):
    return b.decode("latin-1")


def client(target):
    channel = grpc.insecure_channel(target, options=[
        ("grpc.enable_http_proxy", 0),
        ("grpc.max_receive_message_length", 16 << 20),
        ("grpc.max_send_message_length", 16 << 20),
    ])
    grpc.channel_ready_future(channel).result(timeout=10)
    out = {}
    timeout = 20

    def unary(method, payload):
        call = channel.unary_unary(f"/{SERVICE}/{method}")
        try:
            resp, c = call.with_call(payload, timeout=timeout)
            return {"message": text(resp) if len(resp) < 256 else None, "length": len(resp),
                    "code": c.code().name, "details": c.details(),
                    "trailing": md(c.trailing_metadata()), "raw": resp}
        except grpc.RpcError as e:
            return {"message": None, "length": None, "code": e.code().name,
                    "details": e.details(), "trailing": md(e.trailing_metadata()), "raw": None}

    def stream_result(it):
        msgs = []
        try:
            for m in it:
                msgs.append(text(m))
        except grpc.RpcError:
            pass
        return {"messages": msgs, "code": it.code().name, "details": it.details(),
                "trailing": md(it.trailing_metadata())}

    out["echo"] = unary("Echo", b"ping")
    out["echo"].pop("raw")
    big = bytes(i % 251 for i in range(1 << 20))
    r = unary("Echo", big)
    resp = r.pop("raw")
    r["intact"] = resp is not None and resp.endswith(big)
    r["prefix"] = text(resp[:len(resp) - len(big)]) if r["intact"] else None
    out["echo_big"] = r
    out["fail"] = unary("Fail", b"x")
    out["fail"].pop("raw")
    out["count"] = stream_result(
        channel.unary_stream(f"/{SERVICE}/Count")(b"50", timeout=timeout))
    out["count_then_fail"] = stream_result(
        channel.unary_stream(f"/{SERVICE}/CountThenFail")(b"5", timeout=timeout))
    chat_in = [b"m%d" % i for i in range(30)]
    out["chat"] = stream_result(
        channel.stream_stream(f"/{SERVICE}/Chat")(iter(chat_in), timeout=timeout))
    channel.close()
    print(json.dumps(out), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    a = p.parse_args()
    if a.cmd == "server":
        return serve(a.port, a.name)
    return client(a.target)


if __name__ == "__main__":
    sys.exit(main())
