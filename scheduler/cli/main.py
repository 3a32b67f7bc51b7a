"""`corral`: parse the command line, run one subcommand, turn failures into messages."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from scheduler.cli import certs, commands, delete, get, install, up, verbs
from scheduler.cli.client import ApiError, Client, ConnectionFailed, UnexpectedAnswer
from scheduler.cli.errors import CommandError
from scheduler.cli.settings import DEFAULT_SERVER, SettingsError, resolve, ssl_context

Command = Callable[[Client, argparse.Namespace], int]

DESCRIPTION = "corral controls a corral cluster through the scheduler's HTTP API."

EPILOG = f"""\
examples:
  corral get pods -A -o wide        every pod, with its node
  corral apply -f web.yaml          create or update what a manifest describes
  corral rollout status deploy/web  follow a deployment's rollout
  corral describe pod web           details and container states of one pod
  corral delete pods -l app=web     stop and remove the pods labelled app=web
  corral drain node-3               cordon a node and move its pods away
  corral status                     cluster summary

The server is --server, else $CORRAL_SERVER, else `server` in the config file
($CORRAL_CONFIG, default ~/.config/corral/config.toml), else {DEFAULT_SERVER}.
The bearer token is found the same way: --token, $CORRAL_TOKEN, `token`.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _seconds(value: str) -> float:
    """`--timeout`: a number of seconds above 0."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: must be more than 0 seconds")
    return seconds


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
        type=_seconds,
        default=argparse.SUPPRESS,
        help="give up on each request after this long (default: 30; waiting for "
        "objects has --wait-timeout)",
    )
    group.add_argument(
        "--ca-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="CA certificate to verify an https server with (default: $CORRAL_CA_FILE, "
        "config `ca_file`, the system's CAs)",
    )
    return parent


def _namespace(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    parser.add_argument(
        "-n", "--namespace", metavar="NS", help="namespace to act in (default: default)"
    )
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def _selectors(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-l",
        "--selector",
        metavar="SELECTOR",
        help="label selector: app=web,tier!=db,env in (a,b),!legacy",
    )
    parser.add_argument(
        "--field-selector",
        metavar="SELECTOR",
        help="field selector: metadata.name=web, spec.nodeName=NODE, status.phase=Running",
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
        get.get,
        "List objects of some kinds, or show some by name.",
        "examples:\n  corral get pods\n  corral get pods -A -l app=web -o wide\n"
        "  corral get pod web -o yaml\n  corral get pods web api\n"
        "  corral get deploy/web pod/api\n  corral get pods,deployments -n web\n"
        "  corral get pods --sort-by=.metadata.creationTimestamp\n"
        "  corral get deployments -w\n  corral get all -n web",
    )
    p.add_argument(
        "resource",
        metavar="RESOURCE",
        help="pods, nodes, events, namespaces, deployments, jobs, controllerrevisions or all "
        "(kubectl's short names too: po, no, ev, ns, deploy); several joined by commas; "
        "or TYPE/NAME",
    )
    p.add_argument("names", metavar="NAME", nargs="*", help="show only these (or more TYPE/NAME)")
    _namespace(p, all_namespaces=True)
    _selectors(p)
    p.add_argument(
        "-o",
        "--output",
        choices=["wide", "json", "yaml", "name"],
        help="output format (default: a table)",
    )
    p.add_argument(
        "--sort-by",
        metavar="JSONPATH",
        help="order by this field: {.metadata.name}, .metadata.creationTimestamp, "
        ".status.containerStatuses[0].restartCount",
    )

    p = add(
        "apply",
        commands.apply,
        "Create or update the objects in manifest files (YAML or JSON).",
        "Each object is created (`created`), left alone when it matches (`unchanged`), or\n"
        "updated (`configured`): labels and annotations of every kind, and the spec of\n"
        "deployments and jobs. Pod specs are immutable (delete and apply again), as are a\n"
        "job's template and a deployment's selector. Every manifest is checked before\n"
        "anything is sent. --wait then follows each object until it is ready.",
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
        delete.delete,
        "Delete objects and wait until they are gone.",
        "examples:\n  corral delete pod web\n  corral delete pods -l app=web\n"
        "  corral delete pods --all -A\n  corral delete pod web --now\n"
        "  corral delete pod web --force          # at once, without the node's word\n"
        "  corral delete -f web.yaml --wait=false\n  corral delete node node-3\n"
        "  corral delete deployment web --cascade=orphan\n  corral delete namespace test",
    )
    p.add_argument(
        "resource",
        metavar="RESOURCE",
        nargs="?",
        help="pod, node, deployment, job, namespace; several joined by commas; or TYPE/NAME",
    )
    p.add_argument("names", metavar="NAME", nargs="*", help="what to delete")
    p.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        action="append",
        help="delete the objects of this manifest (repeatable; - for stdin)",
    )
    _namespace(p, all_namespaces=True)
    _selectors(p)
    delete.add_arguments(p)

    p = add(
        "describe",
        commands.describe,
        "Show an object in detail, with its events.",
        "examples:\n  corral describe pod web\n  corral describe deploy/web\n"
        "  corral describe node node-3",
    )
    p.add_argument(
        "resource",
        metavar="RESOURCE",
        help="pod, node, deployment, job, namespace; or TYPE/NAME",
    )
    p.add_argument("name", metavar="NAME", nargs="?")
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
    p.add_argument("pod", metavar="POD", help="a pod, or deploy/NAME or job/NAME: one of its pods")
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

    p = add(
        "install",
        lambda client, args: install.install(args),
        "Install corral-agent or corral-scheduler on this machine as a systemd service.",
        "examples:\n  corral install scheduler --set tls_cert=/etc/corral/pki/scheduler.crt "
        "--set tls_key=/etc/corral/pki/scheduler.key\n"
        "  corral install agent --server https://10.0.0.1:7070 --token JOIN_TOKEN "
        "--ca-file /etc/corral/pki/ca.crt\n\n"
        "--token is the scheduler's join token (its STATE_DIR/join-token), not an API token.\n"
        "Every config option can be set with --set OPTION=VALUE; README has the whole path.",
    )
    q = add(
        "uninstall",
        lambda client, args: install.uninstall(args),
        "Remove the systemd service of corral-agent or corral-scheduler.",
    )
    install.add_arguments(p, q)

    p = add("status", commands.status, "Summarize the cluster: nodes, pods, capacity, errors.")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="output format (default: text)")

    certs.add_parser(sub, [conn])
    verbs.extend_parser(sub, add)  # rollout, scale, top, completion; get -w, apply --wait
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the command; every expected failure becomes a message and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        settings = resolve(
            getattr(args, "server", None),
            getattr(args, "token", None),
            os.environ,
            getattr(args, "ca_file", None),
        )
        client = Client(
            settings.server,
            settings.token,
            timeout=getattr(args, "timeout", 30.0),
            ssl_context=ssl_context(settings),
        )
        code: int = args.run(client, args)
        return code
    except ApiError as error:
        commands.err(commands.api_error_text(error))
    except (ConnectionFailed, UnexpectedAnswer) as error:
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
