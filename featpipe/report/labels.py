"""Run labels a person reads: short, unique within a report, never a path.

A label is made of what distinguishes a run among the runs of the report: the base's short name, its weights
(random init, another weights file), the image size, the pooling, the head (or ``fine-tune E+F`` for the
end-to-end path), and, only where that is still not enough, the dataset, the seed and finally a number. What all
runs share is left out of the labels and said once (`shared_facts`). Keys and full paths stay in the run details
and in summary.json / summary.csv.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import PurePath

MAX_LENGTH = 48
_HEX = re.compile(r"[0-9a-f]{12,}")
_KERAS = re.compile(r"keras:(\w+)(?:\((.*)\))?$")
_SYMBOLS = {"alpha": "α", "depth_multiplier": "dm"}


def short_backbone(spec) -> str:
    """``keras:MobileNet(alpha=0.25)`` -> ``MobileNet α0.25``; ``/home/u/m/base-d474d63db627feef.keras:features``
    -> ``base-d474d6….keras:features``; a hub preset -> its name. Never a directory."""
    text = str(spec or "?")
    match = _KERAS.match(text.replace(" ", ""))
    if match:
        name, args = match.groups()
        parts = []
        for arg in filter(None, (args or "").split(",")):
            key, _, value = arg.partition("=")
            parts.append(f"{_SYMBOLS[key]}{value}" if key in _SYMBOLS else f"{key}={value}")
        return " ".join([name, *parts])
    name = PurePath(text.rstrip("/\\").replace("\\", "/")).name or text
    return _HEX.sub(lambda m: m.group(0)[:6] + "…", name)


def _weights(info: dict) -> str:
    if info.get("pretrained") is False:
        return "random init"
    weights = str(info.get("weights") or "")
    if weights in ("", "default", "imagenet", "file"):  # a base's own weights
        return ""
    return f"weights {short_backbone(weights)}"


def _size(info: dict) -> str:
    size = info.get("image_size") or []
    if len(size) == 2 and size[0] == size[1]:
        return f"{size[0]}px"
    return "×".join(map(str, size)) + "px" if size else ""


def _head(info: dict) -> str:
    if info.get("path") == "end-to-end":
        params = info.get("params") or {}
        epochs, fine = params.get("epochs"), params.get("fine_tune_epochs")
        return f"fine-tune {epochs}+{fine}" if epochs is not None and fine is not None else "fine-tune"
    return str(info.get("head") or "?")


def _dataset(info: dict) -> str:
    root = str((info.get("dataset") or {}).get("root") or "")
    return f"data {PurePath(root).name}" if root else ""


# (component, how it reads); the order of a label.
COMPONENTS = (
    ("backbone", lambda i: short_backbone(i.get("backbone"))),
    ("weights", _weights),
    ("image size", _size),
    ("pooling", lambda i: f"{i.get('pooling')} pool" if i.get("pooling") else ""),
    ("head", _head),
)
# Added, in this order, only to labels that still collide.
TIE_BREAKERS = (("dataset", _dataset), ("seed", lambda i: f"seed {i.get('seed')}"))


def make_labels(infos: list[dict]) -> list[str]:
    """One label per run.json, in the same order: unique, path-free, at most MAX_LENGTH characters."""
    values = [{key: describe(info) for key, describe in COMPONENTS} for info in infos]
    for v, name in zip(values, _backbone_names(infos)):
        v["backbone"] = name
    varying = {key for key, _ in COMPONENTS if len({v[key] for v in values}) > 1}
    keep = [key for key, _ in COMPONENTS if key in varying or key == "head" or (key == "backbone" and len(infos) == 1)]
    labels = [_join(v, keep) for v in values]
    for key, describe in TIE_BREAKERS:
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        for members in groups.values():
            if len({describe(infos[i]) for i in members}) > 1:  # only what tells these runs apart
                for i in members:
                    values[i][key] = describe(infos[i])
        labels = [_join(v, [*keep, *(k for k, _ in TIE_BREAKERS if k in v)]) for v in values]
    # Still the same (copies of one run in two places): number them.
    seen: Counter = Counter()
    counts = Counter(labels)
    numbered = []
    for label in labels:
        if counts[label] > 1:
            seen[label] += 1
            label = _fit(label, MAX_LENGTH - 4) + f" #{seen[label]}"
        numbered.append(label)
    return numbered


def _backbone_names(infos: list[dict]) -> list[str]:
    """short_backbone, with the folder's name added where two model files share a file name, then a digest."""
    specs = [str(info.get("backbone")) for info in infos]
    names = {spec: short_backbone(spec) for spec in specs}
    for resolve in (lambda spec: PurePath(spec.replace("\\", "/")).parent.name,
                    lambda spec: hashlib.sha256(spec.encode()).hexdigest()[:6]):
        clash = Counter(names.values())
        groups = {spec for spec in names if clash[names[spec]] > 1}
        for spec in groups:
            names[spec] = f"{names[spec]} ({resolve(spec)})" if resolve(spec) else names[spec]
    return [names[spec] for spec in specs]


def shared_facts(infos: list[dict]) -> list[str]:
    """What every run has in common and no label repeats: ["backbone base.keras:features", "image size 32px"]."""
    facts = []
    for key, describe in COMPONENTS[:-1]:
        found = {describe(info) for info in infos}
        if len(found) == 1 and (value := found.pop()):
            facts.append(f"{key} {value}" if key not in ("weights", "pooling") else value)
    return facts


def _join(values: dict, keys: list[str]) -> str:
    backbone = values["backbone"] if "backbone" in keys else ""
    rest = " · ".join(values[k] for k in keys if k != "backbone" and values.get(k))
    if not backbone:
        return _fit(rest, MAX_LENGTH)
    room = MAX_LENGTH - len(rest) - 3
    return _fit(f"{_fit(backbone, max(room, 12))} · {rest}", MAX_LENGTH)


def _fit(text: str, limit: int) -> str:
    """At most `limit` characters, cut in the middle (the ends of a name say most)."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]
