"""What `corral get` and `corral delete` read from a command line, without a server: kinds,
names and TYPE/NAME refs, kubectl's refusals, `--sort-by` order, delete's grace period,
and the completion of every flag."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from scheduler.cli import completion, jsonpath, selection
from scheduler.cli.delete import grace_period
from scheduler.cli.errors import CommandError
from scheduler.cli.kinds import DEPLOYMENTS, JOBS, NODES, PODS
from scheduler.cli.main import build_parser
from scheduler.cli.selection import Target


def test_targets_in_kubectls_forms() -> None:
    """Kinds with names, comma-joined kinds, TYPE/NAME refs and `all`."""
    assert selection.parse(["pods"]) == [Target(PODS)]
    assert selection.parse(["po", "web", "api"]) == [Target(PODS, ("web", "api"))]
    assert selection.parse(["pods,deploy", "web"]) == [
        Target(PODS, ("web",)),
        Target(DEPLOYMENTS, ("web",)),
    ]
    assert selection.parse(["deploy/web", "pod/a", "deployments.apps/api"]) == [
        Target(DEPLOYMENTS, ("web", "api")),
        Target(PODS, ("a",)),
    ]
    assert selection.parse(["all"]) == [Target(PODS), Target(DEPLOYMENTS), Target(JOBS)]
    assert selection.parse(["pods,all,nodes"]) == [
        Target(PODS),
        Target(DEPLOYMENTS),
        Target(JOBS),
        Target(NODES),
    ]


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["pods", "pod/web"], "no need to specify a resource type as a separate argument"),
        (["widgets"], 'doesn\'t have a resource type "widgets"'),
        (["pods,"], 'resource type ""'),
        (["pod/"], "a name is needed after the '/'"),
    ],
)
def test_targets_refused(words: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        selection.parse(words)


def flags(**given: object) -> argparse.Namespace:
    defaults: dict[str, object] = {
        "selector": None,
        "field_selector": None,
        "all": False,
        "all_namespaces": False,
        "namespace": None,
    }
    return argparse.Namespace(**(defaults | given))


def test_names_refused_with_selectors_or_across_namespaces() -> None:
    """kubectl's words: a name with a selector (or --all), a namespaced name with -A."""
    named = [Target(PODS, ("web",))]
    for given in ({"selector": "app=web"}, {"field_selector": "x=y"}, {"all": True}):
        with pytest.raises(CommandError, match="name cannot be provided when a selector"):
            selection.check_names(named, flags(**given))
    with pytest.raises(CommandError, match="cannot be retrieved by name across all namespaces"):
        selection.check_names(named, flags(all_namespaces=True))
    selection.check_names([Target(NODES, ("node-1",))], flags(all_namespaces=True))
    selection.check_names([Target(PODS)], flags(selector="app=web", all_namespaces=True))


@pytest.mark.parametrize(
    "expression", ["{.metadata.name}", ".metadata.name", "metadata.name", "{metadata.name}"]
)
def test_sort_by_takes_kubectls_spellings(expression: str) -> None:
    assert jsonpath.parse(expression) == ("metadata", "name")


def test_sort_by_paths_with_indexes_and_refusals() -> None:
    assert jsonpath.parse("{.status.containerStatuses[0].restartCount}") == (
        "status",
        "containerStatuses",
        0,
        "restartCount",
    )
    for bad in ("{.items[*].x}", "{.a}{.b}", "a..b", "", "{}"):
        with pytest.raises(CommandError, match="--sort-by"):
            jsonpath.parse(bad)


def pod(name: str, **fields: object) -> dict[str, object]:
    return {"metadata": {"name": name, **fields}}


def names(objects: list[dict[str, object]]) -> list[str]:
    return [o["metadata"]["name"] for o in objects]  # type: ignore[index]


def test_sort_order_as_kubectls() -> None:
    """Numbers by value, strings naturally, quantities by amount, missing first, stable."""
    by_rank = [pod("a", rank=10), pod("b", rank=9), pod("c"), pod("d", rank=9.5)]
    assert names(jsonpath.sort_objects(by_rank, ".metadata.rank")) == ["c", "b", "d", "a"]
    natural = [pod("web-10"), pod("web-9"), pod("api"), pod("web-9a")]
    assert names(jsonpath.sort_objects(natural, "{.metadata.name}")) == [
        "api",
        "web-9",
        "web-9a",
        "web-10",
    ]
    amounts = [pod("a", cpu="1"), pod("b", cpu="250m"), pod("c", cpu="1500m")]
    assert names(jsonpath.sort_objects(amounts, ".metadata.cpu")) == ["b", "a", "c"]
    stamps = [pod("a", t="2024-05-01T10:00:00Z"), pod("b", t="2024-04-30T23:59:59Z")]
    assert names(jsonpath.sort_objects(stamps, ".metadata.t")) == ["b", "a"]
    ties = [pod("z", rank=1), pod("a", rank=1)]
    assert names(jsonpath.sort_objects(ties, ".metadata.rank")) == ["z", "a"]


def test_sort_by_a_field_no_object_has() -> None:
    """A typo is an error once there is an order to get wrong, as in kubectl."""
    with pytest.raises(CommandError, match=r"couldn't find any field with path \"\{\.spec\.x\}\""):
        jsonpath.sort_objects([pod("a"), pod("b")], "spec.x")
    assert names(jsonpath.sort_objects([pod("a")], "spec.x")) == ["a"]


@pytest.mark.parametrize(
    ("given", "now", "force", "sent"),
    [
        (None, False, False, None),  # the pod's own
        (-1, False, False, None),  # kubectl's spelling of the same
        (5, False, False, 5),
        (0, False, False, 1),  # kubectl: 0 without --force is 1 second
        (None, True, False, 1),  # --now
        (None, False, True, 0),  # --force alone: at once
        (0, False, True, 0),
    ],
)
def test_grace_period_by_kubectls_rules(
    given: int | None, now: bool, force: bool, sent: int | None
) -> None:
    assert grace_period(given, now=now, force=force) == sent


def test_grace_period_contradictions() -> None:
    with pytest.raises(CommandError, match="--now and --grace-period cannot be specified"):
        grace_period(3, now=True, force=False)
    with pytest.raises(CommandError, match="--force and --grace-period greater than 0"):
        grace_period(3, now=False, force=True)
    with pytest.raises(CommandError, match="--force and --grace-period greater than 0"):
        grace_period(None, now=True, force=True)


def test_completion_offers_every_flag_of_each_command() -> None:
    """`corral CMD -<TAB>` offers exactly the flags CMD's parser takes (new ones included)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    by_command = completion.flags_by_command(build_parser())
    assert {"--all", "--now", "--force", "--wait", "--wait-timeout", "-l", "-A"} <= set(
        by_command["delete"]
    )
    assert {"--sort-by", "--field-selector", "-w"} <= set(by_command["get"])
    lines = [completion.script("bash", by_command)]
    for command in by_command:
        lines.append(
            f"COMP_WORDS=(corral {command} -); COMP_CWORD=2; _corral; "
            f'echo "{command}:${{COMPREPLY[*]}}"'
        )
    shown = subprocess.run(
        [bash], input="\n".join(lines), capture_output=True, text=True, check=True
    ).stdout
    offered = dict(line.split(":", 1) for line in shown.splitlines())
    for command, options in by_command.items():
        assert sorted(offered[command].split()) == sorted(options), command
