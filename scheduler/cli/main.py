"""`corral`: parse the command line, run one subcommand, turn failures into messages."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from scheduler.cli import commands, up
from scheduler.cli.client import ApiError, Client, ConnectionFailed
from scheduler.cli.errors import CommandError
from scheduler.cli.settings import DEFAULT_SERVER, SettingsError, resolve

Command = Callable[[Client, argparse.Namespace], int]

DESCRIPTION = "corral controls a corral cluster through the scheduler's HTTP API."

EPILOG = f"""\
examples:
  corral get pods -A -o wide        every pod, with its node
  corral apply -f web.yaml          create the pods in a manifest
  corral describe pod web           details and container states of one pod
  corral delete pod web             stop and remove a pod
  corral drain node-3               cordon a node and move its pods away
  corral status                     cluster summary

The server is --server, else $CORRAL_SERVER, else `server` in the config file
($CORRAL_CONFIG, default ~/.config/corral/config.toml), else {DEFAULT_SERVER}.
The bearer token is found the same way: --token, $CORRAL_TOKEN, `token`.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _connection_options() -> argparse.ArgumentParser:
    """--server/--token/--timeout, accepted before or after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--server",
        "-s",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"scheduler API address (default: $CORRAL_SERVER, config, {DEFAULT_SERVER})",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=argparse.SUPPRESS,
        help="bearer token for the API (default: $CORRAL_TOKEN, config)",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=argparse.SUPPRESS,
        help="give up on a request after this long (default: 30)",
    )
    return parent


def _namespace(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    parser.add_argument(
        "-n", "--namespace", metavar="NS", help="namespace of the pods (default: default)"
    )
    if all_namespaces:
        parser.add_argument(
            "-A", "--all-namespaces", action="store_true", help="pods in every namespace"
        )


def build_parser() -> argparse.ArgumentParser:
    conn = _connection_options()
    parser = argparse.ArgumentParser(
        prog="corral",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_Formatter,
        parents=[conn],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, run: Command, help_text: str, epilog: str = "") -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            parents=[conn],
            formatter_class=_Formatter,
        )
        p.set_defaults(run=run)
        return p

    p = add(
        "get",
        commands.get,
        "List pods or nodes, or show one.",
        "examples:\n  corral get pods\n  corral get pods -A -l app=web -o wide\n"
        "  corral get pod web -o yaml\n  corral get nodes -o wide",
    )
    p.add_argument(
        "resource", metavar="RESOURCE", help="pods, nodes or events (also pod, po, node, no, ev)"
    )
    p.add_argument("name", metavar="NAME", nargs="?", help="show only this one")
    _namespace(p, all_namespaces=True)
    p.add_argument(
        "-l",
        "--selector",
        metavar="SELECTOR",
        help="label selector: app=web,tier!=db,env in (a,b),!legacy",
    )
    p.add_argument(
        "--field-selector",
        metavar="SELECTOR",
        help="field selector: spec.nodeName=NODE or status.phase=Running",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["wide", "json", "yaml", "name"],
        help="output format (default: a table)",
    )

    p = add(
        "apply",
        commands.apply,
        "Create the pods in manifest files (YAML or JSON).",
        "A pod that already exists is left alone when its spec is the same (`unchanged`),\n"
        "gets new labels and annotations when only those differ (`configured`), and is\n"
        "reported when its spec differs: pod specs are immutable, delete and apply again.\n"
        "Every manifest is checked before anything is sent.",
    )
    p.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        action="append",
        required=True,
        help="manifest file, directory of manifests, or - for stdin (repeatable)",
    )
    _namespace(p)

    p = add(
        "delete",
        commands.delete,
        "Delete pods or nodes, by name or by manifest.",
        "examples:\n  corral delete pod web\n  corral delete pod web --grace-period 0\n"
        "  corral delete -f web.yaml\n  corral delete node node-3",
    )
    p.add_argument("resource", metavar="RESOURCE", nargs="?", help="pod or node")
    p.add_argument("names", metavar="NAME", nargs="*", help="what to delete")
    p.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        action="append",
        help="delete the pods in this manifest (repeatable; - for stdin)",
    )
    _namespace(p)
    p.add_argument(
        "--grace-period",
        metavar="SECONDS",
        type=int,
        help="seconds the pod gets to stop (0: at once); default: the pod's own",
    )
    p.add_argument(
        "--ignore-not-found", action="store_true", help="do not fail on what does not exist"
    )

    p = add("describe", commands.describe, "Show a pod or node in detail.")
    p.add_argument("resource", metavar="RESOURCE", help="pod or node")
    p.add_argument("name", metavar="NAME")
    _namespace(p)

    for name, help_text in (
        ("cordon", "Mark a node unschedulable: new pods are not placed on it."),
        ("uncordon", "Mark a node schedulable again."),
    ):
        p = add(name, commands.cordon, help_text)
        p.add_argument("node", metavar="NODE")
    p = add(
        "drain",
        commands.drain,
        "Cordon a node, then move every pod that has not finished to other nodes.",
    )
    p.add_argument("node", metavar="NODE")

    p = add(
        "logs",
        commands.logs,
        "Print the log of a pod's container.",
        "examples:\n  corral logs web\n  corral logs web -c sidecar -f\n"
        "  corral logs web --tail 20",
    )
    p.add_argument("pod", metavar="POD")
    p.add_argument("-c", "--container", metavar="NAME", help="container (needed if several)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", metavar="N", type=int, help="only the last N lines")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with its time")
    p.add_argument(
        "-p", "--previous", action="store_true", help="the log of the previous (restarted) run"
    )
    _namespace(p)

    p = add(
        "token",
        commands.token,
        "Create, list or revoke API tokens (admin only).",
        "examples:\n  corral token create --role viewer --description grafana\n"
        "  corral token list\n  corral token revoke 3f2a9c01",
    )
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("id", nargs="?", metavar="ID", help="the token to revoke")
    p.add_argument("--role", choices=["admin", "viewer"], default="viewer", help="(create)")
    p.add_argument("--description", help="what the token is for (create)")

    p = add(
        "up",
        lambda client, args: up.up(args),
        "Run a local cluster: a scheduler and this machine as a node, until Ctrl-C.",
        "Needs root. State and logs go to --state-dir; Ctrl-C stops the pods and both daemons.",
    )
    p.add_argument("--state-dir", default=".corral", help="state and logs (default: ./.corral)")
    p.add_argument("--listen", default="127.0.0.1:7070", help="API address (default: %(default)s)")

    p = add("status", commands.status, "Summarize the cluster: nodes, pods, capacity, errors.")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="output format (default: text)")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the command; every expected failure becomes a message and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        settings = resolve(getattr(args, "server", None), getattr(args, "token", None), os.environ)
        client = Client(settings.server, settings.token, timeout=getattr(args, "timeout", 30.0))
        code: int = args.run(client, args)
        return code
    except ApiError as error:
        commands.err(commands.api_error_text(error))
    except ConnectionFailed as error:
        commands.err(f"error: {error}")
    except (CommandError, SettingsError) as error:
        commands.err(f"error: {error}")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`corral`)."""
    try:
        return run(argv)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `corral get pods | head`: the reader left; say nothing, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
