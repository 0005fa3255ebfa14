"""Read a Label Studio labeling config and find the one single-choice classification it describes.

The backend supports exactly one shape of project: a single ``<Choices>`` control (single choice)
attached to one object tag that holds the item to classify. Everything else is refused up front
with a reason the user can act on, instead of failing later while training.

Which object tags are accepted (the kinds of :mod:`connectors.item_codec` name them):

* ``<Image value="$key">`` gives ``kind="image"``: ``task["data"][key]`` is an image reference.
* any other object tag with ``value="$key"`` (``<Text>``, ``<HyperText>``, ...) gives
  ``kind="vector"``: ``task["data"][key]`` must hold a list of numbers (or a JSON string of one).
  Media tags whose data cannot be a vector (audio, video, PDF, time series, paragraphs...) are
  refused rather than silently misread, unless a kind reads them.

Class names are what Label Studio writes into results: a ``<Choice>``'s ``alias`` when set,
otherwise its ``value``. Tag names match case-insensitively, as in Label Studio.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from connectors.item_codec import FALLBACK_KIND, KINDS, kind_of_tag

SINGLE_CHOICE_MODES = {"single", "single-radio"}
MEDIA_TAGS = {"audio", "audioplus", "video", "timeseries", "pdf", "paragraphs", "list", "ranker"}
CONTROL_TAGS = {
    "choices", "labels", "rectanglelabels", "polygonlabels", "keypointlabels", "brushlabels",
    "ellipselabels", "hypertextlabels", "paragraphlabels", "timeserieslabels", "videorectangle",
    "rectangle", "polygon", "keypoint", "brush", "ellipse", "textarea", "rating", "number",
    "datetime", "taxonomy", "pairwise", "relations", "relation", "magicwand", "bitmasklabels",
}


class LabelConfigError(ValueError):
    """The labeling config is not one this backend can train on; the message says why."""


@dataclass(frozen=True)
class LabelConfig:
    from_name: str
    to_name: str
    data_key: str
    kind: str
    classes: list[str] = field(default_factory=list)

    def result(self, class_name: str) -> list[dict]:
        """The ``result`` list of a Label Studio prediction choosing ``class_name``."""
        return [{
            "from_name": self.from_name,
            "to_name": self.to_name,
            "type": "choices",
            "value": {"choices": [class_name]},
        }]

    def prediction(self, class_names: list[str], index: int) -> list[dict]:
        """The result for class ``index`` of a model trained on ``class_names``, by name, not by position.

        A config edited since (choices reordered or removed) must not turn a model's index into
        another class; a class the config no longer has gets no result rather than a wrong one.
        """
        name = class_names[int(index)]
        return self.result(name) if name in self.classes else []


def _tag(el: ET.Element) -> str:
    return el.tag.lower() if isinstance(el.tag, str) else ""


def parse_label_config(xml: str) -> LabelConfig:
    """Parse a labeling config into a :class:`LabelConfig`, or raise :class:`LabelConfigError`."""
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("the labeling config is empty")
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        raise LabelConfigError("the labeling config must not contain a DOCTYPE or entity declarations")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise LabelConfigError(f"the labeling config is not valid XML: {e}") from None

    elements = list(root.iter())
    choices = [el for el in elements if _tag(el) == "choices"]
    if not choices:
        raise LabelConfigError("the labeling config has no <Choices> control; this backend only does classification")
    if len(choices) > 1:
        names = ", ".join(repr(el.get("name", "?")) for el in choices)
        raise LabelConfigError(f"the labeling config has {len(choices)} <Choices> controls ({names}); "
                               "this backend supports exactly one")
    control = choices[0]
    from_name = control.get("name") or ""  # as written: Label Studio names annotations by the raw attribute
    if not from_name.strip():
        raise LabelConfigError("the <Choices> control has no name")
    if (control.get("perRegion") or "").strip().lower() == "true":
        raise LabelConfigError(f"<Choices name={from_name!r}> is perRegion: it labels regions, and this backend "
                               "classifies whole items")
    mode = (control.get("choice") or "single").strip().lower()
    if mode not in SINGLE_CHOICE_MODES:
        raise LabelConfigError(f"<Choices name={from_name!r}> uses choice={mode!r}; "
                               "only single choice (choice=\"single\" or \"single-radio\") is supported")

    to_name = control.get("toName") or ""
    if not to_name.strip():
        raise LabelConfigError(f"<Choices name={from_name!r}> has no toName")
    if "," in to_name:
        raise LabelConfigError(f"<Choices name={from_name!r}> points to several objects ({to_name!r}); "
                               "exactly one is supported")
    targets = [el for el in elements if el is not control and el.get("name") == to_name
               and _tag(el) not in CONTROL_TAGS]
    if not targets:
        raise LabelConfigError(f"<Choices name={from_name!r}> has toName={to_name!r} but no tag is named {to_name!r}")
    if len(targets) > 1:
        raise LabelConfigError(f"{len(targets)} tags are named {to_name!r}; toName must point to exactly one")
    kind, data_key = _object_kind(targets[0], to_name)
    if "{{" in from_name or "{{" in to_name or "{{" in data_key:
        raise LabelConfigError(f"<Choices name={from_name!r}> sits in a <Repeater> ({{{{...}}}} names); "
                               "one item per task is supported")

    classes = _classes(control, from_name)
    return LabelConfig(from_name=from_name, to_name=to_name, data_key=data_key, kind=kind, classes=classes)


def _object_kind(target: ET.Element, to_name: str) -> tuple[str, str]:
    tag = _tag(target)
    shown = f"<{target.tag} name={to_name!r}>"
    kind = kind_of_tag(tag)
    if kind is None and tag in MEDIA_TAGS:
        raise LabelConfigError(f"{shown} is not supported: the data must be "
                               f"{' or '.join(k.what for k in KINDS.values())}")
    value = (target.get("value") or "").strip()
    if not value:
        if target.get("valueList"):
            raise LabelConfigError(f"{shown} uses valueList (several items per task); one item per task is supported")
        raise LabelConfigError(f"{shown} has no value=\"$key\" naming the task data field")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(f"{shown} has value={value!r}; it must name a task data field like \"$image\"")
    return kind or FALLBACK_KIND, value[1:]


def _classes(control: ET.Element, from_name: str) -> list[str]:
    items = [el for el in control.iter() if _tag(el) == "choice"]
    if not items:
        if control.get("value"):
            raise LabelConfigError(f"<Choices name={from_name!r}> takes its choices from task data "
                                   f"({control.get('value')!r}); fixed <Choice> values are required")
        raise LabelConfigError(f"<Choices name={from_name!r}> has no <Choice> values")
    classes: list[str] = []
    for el in items:
        name = el.get("alias") or el.get("value")
        if not name or not name.strip():
            raise LabelConfigError(f"a <Choice> in <Choices name={from_name!r}> has no value")
        classes.append(name)
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise LabelConfigError(f"<Choices name={from_name!r}> repeats class names: {', '.join(map(repr, duplicates))}")
    if len(classes) < 2:
        raise LabelConfigError(f"<Choices name={from_name!r}> has only one class ({classes[0]!r}); "
                               "at least two are needed")
    return classes
