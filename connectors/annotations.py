"""Turn a task's Label Studio annotations into one training label.

Rules, chosen so that a label is reproducible from the task JSON alone:

* cancelled (skipped) annotations and annotations without a result for our ``<Choices>`` are ignored;
* an annotation naming a class the config does not know (or several classes) is ignored and
  reported in ``problem``, so a renamed class shows up instead of silently shrinking the data;
* if any remaining annotation is marked ground truth, only ground-truth annotations vote;
* majority vote over the rest; a tie goes to the class of the most recently updated annotation
  (``updated_at``, then ``created_at``, then ``id``).

Odd input (missing keys, ``None`` values, wrong types) never raises: it is treated as absent.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from connectors.label_config import LabelConfig


@dataclass
class ResolvedLabel:
    class_index: int | None
    problem: str | None


def _timestamp(value: Any) -> float:
    if not isinstance(value, str) or not value:
        return -math.inf
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return -math.inf
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return -math.inf
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return -math.inf
    return -math.inf


def _recency(annotation: dict) -> tuple[float, float, float]:
    return (_timestamp(annotation.get("updated_at")), _timestamp(annotation.get("created_at")),
            _number(annotation.get("id")))


def _choices(annotation: dict) -> dict[str, list[str]]:
    """Per choices control this annotation answered with (in order of appearance), the distinct class names chosen."""
    results = annotation.get("result")
    out: dict[str, list[str]] = {}
    for item in results if isinstance(results, list) else []:
        if not isinstance(item, dict) or item.get("type") != "choices" or not isinstance(item.get("from_name"), str):
            continue
        names = out.setdefault(item["from_name"], [])
        value = item.get("value")
        chosen = value.get("choices") if isinstance(value, dict) else None
        for name in chosen if isinstance(chosen, list) else []:
            if isinstance(name, str) and name not in names:
                names.append(name)
    return out


def resolve_label(annotations: list[dict], config: LabelConfig) -> ResolvedLabel:
    """Resolve a task's annotations to a class index (see the module docstring for the rules)."""
    index_of = {name: i for i, name in enumerate(config.classes)}
    problems: list[str] = []
    votes: list[tuple[int, tuple[float, float, float], bool]] = []
    for annotation in annotations if isinstance(annotations, list) else []:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        answered = _choices(annotation)
        names = answered.get(config.from_name, [])
        who = f"annotation {annotation.get('id')}" if annotation.get("id") is not None else "an annotation"
        if not names:
            others = [control for control in answered if control != config.from_name]
            if others:  # a control renamed in the label config since: Label Studio keeps such annotations as made
                problems.append(f"{who} chose with control {', '.join(map(repr, others))}, not the label config's "
                                f"{config.from_name!r}; ignored")
            continue
        if len(names) > 1:
            problems.append(f"{who} chose several classes {names}; ignored")
            continue
        if names[0] not in index_of:
            problems.append(f"{who} chose unknown class {names[0]!r} (known: {', '.join(config.classes)}); ignored")
            continue
        votes.append((index_of[names[0]], _recency(annotation), bool(annotation.get("ground_truth"))))

    problem = "; ".join(problems) or None
    if not votes:
        return ResolvedLabel(None, problem)
    if any(gt for _, _, gt in votes):
        votes = [v for v in votes if v[2]]
    counts = Counter(index for index, _, _ in votes)
    top = max(counts.values())
    tied = {index for index, n in counts.items() if n == top}
    latest = max((v for v in votes if v[0] in tied), key=lambda v: v[1])
    return ResolvedLabel(latest[0], problem)
