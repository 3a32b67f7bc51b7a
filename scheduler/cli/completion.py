"""`corral completion bash|zsh`: a shell completion script, printed to be sourced.

    source <(corral completion bash)       # or put it in ~/.bashrc
    source <(corral completion zsh)        # zsh, through its bash compatibility

Subcommands and each subcommand's flags are read from the parser itself, so that
every flag `corral` takes completes and none that it does not; resource types
come from `kinds`. Object names complete by asking the server (`corral get TYPE
-o name`), in the namespace given with -n on the same line.
"""

from __future__ import annotations

import argparse

from scheduler.cli.kinds import ALL

RESOURCES = " ".join([*(r.plural for r in ALL), "all"])
ROLLOUT = "status history undo restart pause resume"

BASH = r"""# corral bash completion (source <(corral completion bash))
_corral_names() {
    local kind="$1" ns=""
    local i
    for ((i = 1; i < ${#COMP_WORDS[@]}; i++)); do
        if [[ "${COMP_WORDS[i]}" == "-n" || "${COMP_WORDS[i]}" == "--namespace" ]]; then
            ns="--namespace=${COMP_WORDS[i+1]}"
        fi
    done
    corral get "$kind" $ns -o name 2>/dev/null | sed 's|^[^/]*/||'
}

_corral_refs() {  # _corral_refs deployment/ deployments: names with a TYPE/ prefix
    _corral_names "$2" | sed "s|^|$1|"
}

_corral_flags() {  # the flags of one subcommand
    case "$1" in
@FLAGS@
    esac
}

_corral() {
    local cur prev cmd
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd="${COMP_WORDS[1]}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "@COMMANDS@" -- "$cur"))
        return
    fi
    case "$prev" in
        -f|--filename) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -o|--output) COMPREPLY=($(compgen -W "wide json yaml name" -- "$cur")); return ;;
        -n|--namespace) COMPREPLY=($(compgen -W "$(_corral_names namespaces)" -- "$cur")); return ;;
        --cascade) COMPREPLY=($(compgen -W "background foreground orphan" -- "$cur")); return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_corral_flags "$cmd")" -- "$cur"))
        return
    fi
    case "$cmd" in
        get|describe|delete)
            if [[ $COMP_CWORD -eq 2 ]]; then
                COMPREPLY=($(compgen -W "@RESOURCES@" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "$(_corral_names "${COMP_WORDS[2]}")" -- "$cur"))
            fi ;;
        rollout)
            if [[ $COMP_CWORD -eq 2 ]]; then
                COMPREPLY=($(compgen -W "@ROLLOUT@" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "$(_corral_refs deployment/ deployments)" -- "$cur"))
            fi ;;
        scale)
            COMPREPLY=($(compgen -W "$(_corral_refs deployment/ deployments)" -- "$cur")) ;;
        logs)
            local words="$(_corral_names pods) $(_corral_refs deploy/ deployments)"
            COMPREPLY=($(compgen -W "$words" -- "$cur")) ;;
        top)
            COMPREPLY=($(compgen -W "nodes pods" -- "$cur")) ;;
        cordon|uncordon|drain)
            COMPREPLY=($(compgen -W "$(_corral_names nodes)" -- "$cur")) ;;
        completion)
            COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
    esac
}
complete -F _corral corral
"""

ZSH_PREAMBLE = """# corral zsh completion (source <(corral completion zsh))
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
"""


def flags_by_command(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each subcommand's option strings (`-n`, `--namespace`...), as its parser takes them."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = [flag for a in sub._actions for flag in a.option_strings]
    return found


def script(shell: str, flags: dict[str, list[str]]) -> str:
    """The completion script for `shell`, completing `flags` (see `flags_by_command`)."""
    cases = "\n".join(
        f'        {name}) echo "{" ".join(options)}" ;;' for name, options in flags.items()
    )
    body = (
        BASH.replace("@COMMANDS@", " ".join(flags))
        .replace("@RESOURCES@", RESOURCES)
        .replace("@ROLLOUT@", ROLLOUT)
        .replace("@FLAGS@", cases)
    )
    return ZSH_PREAMBLE + body if shell == "zsh" else body


def completion(client: object, args: argparse.Namespace) -> int:
    """Print the completion script for `args.shell`."""
    from scheduler.cli.main import build_parser  # main builds its parser from this module's

    print(script(args.shell, flags_by_command(build_parser())), end="")
    return 0
