"""`corral certs init|issue`: a CA and certificates for TLS on the API and the agent link."""

from __future__ import annotations

import argparse
from pathlib import Path

from scheduler.cli.errors import CommandError

EPILOG = """\
examples:
  corral certs init --dir /etc/corral/pki
  corral certs issue scheduler --dir /etc/corral/pki --host sched.example.com --host 10.0.0.1
  corral certs issue ops-laptop --client --dir /etc/corral/pki

Then: corral-scheduler --tls-cert DIR/scheduler.crt --tls-key DIR/scheduler.key
      corral-agent --server https://sched.example.com:7070 --ca-file DIR/ca.crt
      corral --server https://sched.example.com:7070 --ca-file DIR/ca.crt get nodes
"""


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Register `corral certs` on the CLI's subcommand table."""
    p = sub.add_parser(
        "certs",
        help="Make a CA and TLS certificates for the scheduler, agents and clients.",
        description="Make a CA (init) and certificates signed by it (issue), as PEM files.",
        epilog=EPILOG,
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(run=lambda client, args: run(args))
    p.add_argument("action", choices=["init", "issue"])
    p.add_argument("name", nargs="?", metavar="NAME", help="(issue) the certificate's file name")
    p.add_argument("--dir", default="certs", help="where the CA and certificates are (./certs)")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="(issue) a DNS name or IP address the server is reached by (repeatable)",
    )
    p.add_argument("--client", action="store_true", help="(issue) a client certificate")
    p.add_argument("--days", type=int, default=825, help="(issue) validity in days (825)")
    p.add_argument("--force", action="store_true", help="replace files that exist")


def run(args: argparse.Namespace) -> int:
    # cryptography is only needed here: imported late so other commands start fast.
    from scheduler import certs

    directory = Path(args.dir)
    try:
        if args.action == "init":
            issued = certs.init_ca(directory, force=args.force)
            print(f"CA written: {issued.cert} (give this to agents and clients)")
            print(f"CA key written: {issued.key} (mode 0600; keep it off the nodes)")
            return 0
        if not args.name:
            raise CommandError("certs issue needs a NAME (the file name of the certificate)")
        if args.days < 1:
            raise CommandError("--days must be at least 1")
        issued = certs.issue(
            directory, args.name, args.host, client=args.client, days=args.days, force=args.force
        )
    except certs.CertError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write in {directory}: {exc.strerror}") from None
    kind = "client" if args.client else "server"
    print(f"{kind} certificate written: {issued.cert}")
    print(f"key written: {issued.key} (mode 0600)")
    return 0
