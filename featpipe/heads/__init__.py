"""Interchangeable heads on cached features, by name.

A head is one small scikit-learn classifier class (see `featpipe.heads.base.Head`) plus one line in `HEADS`.
The registry holds import paths, not classes, so choosing a scikit-learn head never imports TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib

from featpipe.errors import FeatpipeError

HEADS = {
    "dense": "featpipe.heads.dense:DenseHead",
    "logreg": "featpipe.heads.linear:LogRegHead",
    "linear-svm": "featpipe.heads.linear:LinearSVMHead",
    "svm": "featpipe.heads.svm:SVMHead",
    "knn": "featpipe.heads.knn:KNNHead",
}


def head_class(name: str):
    """The Head subclass registered under `name`; a clear error (with a suggestion) for unknown names."""
    if name not in HEADS:
        hint = difflib.get_close_matches(name, HEADS, n=1)
        raise FeatpipeError(
            f"unknown head {name!r}; choose from {', '.join(HEADS)}" + (f" (did you mean {hint[0]}?)" if hint else "")
        )
    module, _, cls = HEADS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_head(name: str, params: dict | None = None, seed: int = 0, max_memory: int | None = None):
    """A new, unfitted head; `params` values may be typed or the strings of ``--param key=value``.

    Unlike the constructor (which stores what it is given, as scikit-learn asks), this checks every value
    now, so a bad ``--param`` fails before any work starts.
    """
    cls = head_class(name)
    params = params or {}
    unknown = sorted(set(params) - set(cls.PARAMS))
    if unknown:
        raise FeatpipeError(f"unknown parameter {unknown[0]!r} for head {name}; known: {', '.join(cls.PARAMS)}")
    typed = {key: cls.PARAMS[key].coerce(key, value) for key, value in params.items()}
    return cls(**typed, random_state=seed, max_memory=max_memory)


def load_head(directory):
    """A fitted head from the directory its `save` wrote."""
    from featpipe.heads.base import read_head_file

    saved = read_head_file(directory)
    return head_class(saved["head"]).load(directory)


def parse_param_options(options: list[str], heads: list[str]) -> dict[str, dict[str, str]]:
    """``--param`` strings -> {head: {key: value}}.

    ``key=value`` goes to every chosen head that has `key`; ``head.key=value`` to that head only.
    A key that no chosen head knows is an error, so a typo never silently does nothing. The same key given
    twice is an error too (give a grid's values in one option: C=0.1,1,10); ``head.key`` overrides ``key``
    for that head, whatever their order.
    """
    known = {name: head_class(name).PARAMS for name in heads}
    parsed: dict[str, dict[str, str]] = {name: {} for name in heads}
    seen: dict[str, str] = {}
    scoped: set[tuple[str, str]] = set()
    for option in options:
        key, sep, value = option.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise FeatpipeError(f"bad --param {option!r}: expected key=value (e.g. C=0.1,1,10)")
        scope, dot, bare = key.rpartition(".")
        targets = [scope] if dot else [name for name in heads if bare in known[name]]
        if dot and scope not in known:
            raise FeatpipeError(f"--param {option!r} names head {scope!r}, which is not being trained")
        if not targets or bare not in known[targets[0]]:
            where = scope or " / ".join(heads)
            choices = sorted({p for name in ([scope] if dot else heads) for p in known[name]})
            raise FeatpipeError(f"unknown parameter {bare!r} for {where}; known: {', '.join(choices)}")
        if key in seen:
            raise FeatpipeError(f"--param {key} given twice ({seen[key]!r} and {option!r}); give all its values "
                                f"in one option, e.g. {key}=0.1,1,10")
        seen[key] = option
        for name in targets:
            if dot or (name, bare) not in scoped:
                parsed[name][bare] = value
            if dot:
                scoped.add((name, bare))
    return parsed
