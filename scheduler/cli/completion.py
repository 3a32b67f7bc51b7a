"""`corral completion bash|zsh`: a shell completion script, printed to be sourced.

    source <(corral completion bash)       # or put it in ~/.bashrc
    source <(corral completion zsh)        # zsh, through its bash compatibility

Subcommands, resource types and flags complete from the lists below; object
names complete by asking the server (`corral get TYPE -o name`), in the
namespace given with -n on the same line.
"""

from __future__ import annotations

import argparse

COMMANDS = (
    "get describe apply delete logs top rollout scale cordon uncordon drain status token "
    "completion up"
)
RESOURCES = "pods nodes events namespaces deployments jobs controllerrevisions all"
ROLLOUT = "status history undo restart pause resume"
FLAGS = (
    "-n --namespace -A --all-namespaces -l --selector -o --output -f --filename -w --watch "
    "--wait --wait-timeout -c --container -f --follow --tail --previous --replicas --cascade "
    "--to-revision --revision --sort-by --server --token"
)

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
        COMPREPLY=($(compgen -W "@FLAGS@" -- "$cur"))
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


def script(shell: str) -> str:
    body = (
        BASH.replace("@COMMANDS@", COMMANDS)
        .replace("@RESOURCES@", RESOURCES)
        .replace("@ROLLOUT@", ROLLOUT)
        .replace("@FLAGS@", FLAGS)
    )
    return ZSH_PREAMBLE + body if shell == "zsh" else body


def completion(client: object, args: argparse.Namespace) -> int:
    """Print the completion script for `args.shell`."""
    print(script(args.shell), end="")
    return 0
