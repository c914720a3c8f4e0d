"""The runner's arguments, and its start: capture output, listen, load the model, serve."""

from __future__ import annotations

import argparse
import os
import socketserver
import sys
import threading
import traceback
from http.server import ThreadingHTTPServer

from cdsw_tui.serving.frames import EVENT_LOAD_FAILED, EXIT_IMPORT_FAILED, STREAM_EVENT
from cdsw_tui.serving.runner.loaders import (
    forward_to_gateway,
    install_cdsw_module,
    load_function,
    load_r_function,
)
from cdsw_tui.serving.runner.output import Output, become_subreaper
from cdsw_tui.serving.runner.replica import Replica
from cdsw_tui.serving.runner.servers import (
    TcpFrameServer,
    UnixFrameServer,
    make_frame_handler,
    make_http_handler,
    read_key,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="runner", description="The replica runner of cdsw-tui.")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--function", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--socket", help="listen on this Unix socket")
    parser.add_argument("--socket-mode", default="600", help="octal mode of the socket")
    parser.add_argument("--listen", type=int, help="frames on 0.0.0.0:PORT, challenged")
    parser.add_argument("--key-file", help="the channel key of --listen (hex)")
    parser.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT instead (benchmarks)")
    parser.add_argument("--port-file")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--kernel", default="python3", choices=["python3", "r"])
    args = parser.parse_args(argv)

    output = Output()
    output.capture()
    become_subreaper()
    if args.memory_mb > 0:
        import resource

        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    replica = Replica(args.name, output, args.memory_mb)
    if args.socket:
        server: socketserver.BaseServer = UnixFrameServer(
            os.path.abspath(args.socket), make_frame_handler(replica), int(args.socket_mode, 8)
        )
        where = args.socket
    elif args.listen is not None:
        if not args.key_file:
            parser.error("--listen needs --key-file: no replica is callable without the key")
        server = TcpFrameServer(
            ("0.0.0.0", args.listen), make_frame_handler(replica, read_key(args.key_file))
        )
        where = f"port {server.server_address[1]} (challenged)"
    else:
        server = ThreadingHTTPServer(("127.0.0.1", args.port or 0), make_http_handler(replica))
        server.daemon_threads = True
        where = f"127.0.0.1:{server.server_address[1]}"
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(server.server_address[1]))
            os.replace(tmp, args.port_file)
    os.chdir(args.dir)
    install_cdsw_module(output)
    forward_to_gateway()
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
    ).start()
    print(f"replica {args.name} loading {args.file}:{args.function}", flush=True)
    try:
        loader = load_r_function if args.kernel == "r" else load_function
        replica.fn = loader(args.dir, args.file, args.function)
    except BaseException as exc:  # any import failure ends the replica, explained
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        print(
            f"replica {args.name} failed to load the model: {reason}", file=sys.stderr, flush=True
        )
        if output is not None:
            output.record(STREAM_EVENT, {"event": EVENT_LOAD_FAILED, "reason": reason[:2000]})
        output.finish()  # the traceback into the log
        os._exit(EXIT_IMPORT_FAILED)
    print(f"replica {args.name} ready on {where}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
