"""`nsinspect completion bash|zsh`: shell completion for commands, flags and pod names.

The script asks the CLI itself for what to offer: `nsinspect __complete WORDS...` prints the
subcommands, a subcommand's flags, or (for a POD argument) the pod names of the namespace
given with -n, from the current kubeconfig context.
"""

from __future__ import annotations

import argparse
import itertools
import sys

from ..context import Context

BASH = r"""# bash completion for nsinspect (and kubectl-nsinspect); load with: source <(nsinspect completion bash)
_nsinspect() {
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" \
                 -- "${COMP_WORDS[COMP_CWORD]}"))
}
complete -F _nsinspect nsinspect kubectl-nsinspect
"""

ZSH = r"""#compdef nsinspect kubectl-nsinspect
# zsh completion for nsinspect; load with: source <(nsinspect completion zsh)
_nsinspect() {
    local -a choices
    choices=("${(@f)$("${words[1]}" __complete "${(@)words[2,CURRENT-1]}" "" 2>/dev/null)}")
    compadd -a choices
}
compdef _nsinspect nsinspect kubectl-nsinspect
"""


def run_completion(ctx: Context, args: argparse.Namespace) -> int:
    sys.stdout.write(BASH if args.shell == "bash" else ZSH)
    return 0


def candidates(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """What may come next after `words` (the last one is being typed)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = dict(sub.choices)
    done = words[:-1]
    if not done:
        return sorted(commands)
    command = commands.get(done[0])
    if command is None:
        return []
    flags = sorted(s for a in command._actions for s in a.option_strings)
    if words[-1].startswith("-"):
        return flags
    takes_pod = any(a.dest == "pod" for a in command._actions)
    previous = done[-1] if len(done) > 1 else ""
    if takes_pod and not previous.startswith("-") and not any(
            not w.startswith("-") for w in done[1:] if w not in _flag_values(done)):
        return pod_names(_namespace(done))
    return flags


def _flag_values(words: list[str]) -> set[str]:
    return {w for prev, w in itertools.pairwise(words) if prev.startswith("-") and "=" not in prev}


def _namespace(words: list[str]) -> str | None:
    for flag, value in itertools.pairwise(words):
        if flag in ("-n", "--namespace"):
            return value
    return None


def pod_names(namespace: str | None) -> list[str]:
    try:
        from .. import kube  # noqa: PLC0415 - the kubernetes client is slow to import

        k = kube.connect(None, None)
        return sorted(p.metadata.name for p in k.core.list_namespaced_pod(namespace or k.namespace,
                                                                           _request_timeout=3).items)
    except Exception:
        return []


def run_complete(parser: argparse.ArgumentParser, words: list[str]) -> int:
    """`nsinspect __complete WORDS...`: what the scripts offer, one per line."""
    print("\n".join(candidates(parser, words or [""])))
    return 0
