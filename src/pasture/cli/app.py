"""The local web app command."""

from __future__ import annotations

import sys

from pasture.cli.options import HelpFormatter, int_at_least


def _run_app(args) -> int:
    from pasture.core.extras import require_extra

    require_extra("app", "pasture app", {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"})
    from pasture.app.server import serve

    serve(
        args.runs,
        host=args.host,
        port=args.port,
        token=not args.no_token,
        allow_hosts=tuple(args.allow_host),
        say=lambda line: print(line, flush=True),
        warn=lambda message: print(f"warning: {message}", file=sys.stderr, flush=True),
    )
    return 0


def add_commands(commands) -> None:
    """app."""
    app = commands.add_parser(
        "app",
        help="a local web app: teach, test, runs",
        formatter_class=HelpFormatter,
        description="Teach a classifier from photos dropped in a browser, test it on new ones, open runs, download "
        "their ONNX export. Serves 127.0.0.1 (this machine only) unless --host says otherwise, and "
        "prints a link with a token made for this launch: only a browser that opened that link can use "
        'the app, and no other web site can drive it. Needs the extra: pip install -e ".[app]"',
    )
    app.set_defaults(command_handler=_run_app)  # the command's handler, beside its parser
    app.add_argument("--runs", default="runs", metavar="DIR", help="the folder of run folders it lists and writes")
    app.add_argument("--port", type=int_at_least(1), default=7860, help="the port it listens on")
    app.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address it listens on; 0.0.0.0 makes it reachable from other machines (the token still "
        "guards it, but the traffic is not encrypted: prefer an SSH tunnel)",
    )
    app.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the browser will use to reach it (behind a proxy, say); repeatable",
    )
    app.add_argument(
        "--no-token",
        action="store_true",
        help="no launch token: any program or user on this machine can use the app (Host and Origin checks stay)",
    )
