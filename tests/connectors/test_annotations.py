"""Turning annotations into a training label: recorded Label Studio payloads, votes, ties and junk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.annotations import ResolvedLabel, resolve_label
from connectors.label_config import parse_label_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "label-studio-1.23.2-requests.jsonl"


def _requests() -> list[dict]:
    return [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def config():
    setup = next(r for r in _requests() if r.get("path") == "/setup")
    return parse_label_config(setup["body"]["schema"])


def _ann(choice: str | None, *, id: int = 1, updated: str | None = None, created: str | None = None,
         cancelled: bool = False, from_name: str = "choice", ground_truth: bool = False) -> dict:
    result = [] if choice is None else [{"from_name": from_name, "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]
    return {"id": id, "result": result, "was_cancelled": cancelled, "ground_truth": ground_truth,
            "created_at": created, "updated_at": updated}


def test_recorded_webhook_annotations(config) -> None:
    hooks = [r["body"] for r in _requests()
             if r.get("path") == "/webhook" and r["body"].get("action", "").startswith("ANNOTATION_")]
    labels = [(h["action"], h["task"]["id"], resolve_label([h["annotation"]], config)) for h in hooks]
    assert labels == [("ANNOTATION_CREATED", 5, ResolvedLabel(1, None)),  # dog
                      ("ANNOTATION_UPDATED", 5, ResolvedLabel(2, None)),  # relabelled bird
                      ("ANNOTATION_CREATED", 6, ResolvedLabel(0, None))]  # cat


def test_recorded_legacy_train_payload(config) -> None:
    train = next(r for r in _requests() if r.get("path") == "/train")
    labels = {t["id"]: resolve_label(t["annotations"], config).class_index for t in train["body"]["annotations"]}
    assert labels == {1: 0, 2: 1, 6: 0}


def test_recorded_predict_tasks_have_no_label(config) -> None:
    predict = next(r for r in _requests() if r.get("path") == "/predict")
    for task in predict["body"]["tasks"]:
        assert resolve_label(task["annotations"], config) == ResolvedLabel(None, None)


def test_no_annotations(config) -> None:
    assert resolve_label([], config) == ResolvedLabel(None, None)


def test_cancelled_and_empty_are_skipped(config) -> None:
    anns = [_ann("cat", id=1, updated="2026-01-02T00:00:00Z", cancelled=True),
            _ann(None, id=2, updated="2026-01-03T00:00:00Z"),
            _ann("dog", id=3, updated="2026-01-01T00:00:00Z")]
    assert resolve_label(anns, config) == ResolvedLabel(1, None)


def test_only_cancelled_gives_no_label(config) -> None:
    assert resolve_label([_ann("cat", cancelled=True)], config) == ResolvedLabel(None, None)


def test_other_controls_and_types_do_not_count(config) -> None:
    other = _ann("bird", id=2, from_name="other", updated="2026-01-05T00:00:00Z")
    wrong_type = _ann("bird", id=3, updated="2026-01-05T00:00:00Z")
    wrong_type["result"][0]["type"] = "labels"
    anns = [_ann("cat", id=1, updated="2026-01-01T00:00:00Z"), other, wrong_type]
    label = resolve_label(anns, config)
    assert label.class_index == 0
    assert label.problem == "annotation 2 chose with control 'other', not the label config's 'choice'; ignored", \
        "the config has one <Choices>: another name is one renamed since, whose annotations would vanish unsaid"
    assert resolve_label(anns[:1] + anns[2:], config) == ResolvedLabel(0, None)


def test_majority_beats_recency(config) -> None:
    anns = [_ann("cat", id=1, updated="2026-01-01T00:00:00Z"), _ann("cat", id=2, updated="2026-01-02T00:00:00Z"),
            _ann("dog", id=3, updated="2026-06-01T00:00:00Z")]
    assert resolve_label(anns, config).class_index == 0


@pytest.mark.parametrize("order", [1, -1])
def test_tie_goes_to_most_recently_updated(config, order: int) -> None:
    anns = [_ann("cat", id=1, created="2026-01-01T00:00:00Z", updated="2026-03-01T10:00:00Z"),
            _ann("dog", id=2, created="2026-02-01T00:00:00Z", updated="2026-03-01T09:00:00Z")][::order]
    assert resolve_label(anns, config).class_index == 0


def test_tie_on_updated_falls_back_to_created_then_id(config) -> None:
    same = "2026-03-01T10:00:00.000000Z"
    by_created = [_ann("bird", id=9, created="2026-01-02T00:00:00Z", updated=same),
                  _ann("dog", id=1, created="2026-01-03T00:00:00Z", updated=same)]
    assert resolve_label(by_created, config).class_index == 1
    by_id = [_ann("bird", id=9, created=same, updated=same), _ann("dog", id=1, created=same, updated=same)]
    assert resolve_label(by_id, config).class_index == 2


def test_timestamps_compare_as_times_not_strings(config) -> None:
    anns = [_ann("cat", id=1, updated="2026-03-01T12:00:00+02:00"),  # 10:00 UTC
            _ann("dog", id=2, updated="2026-03-01T11:00:00Z")]
    assert resolve_label(anns, config).class_index == 1


def test_ground_truth_outranks_the_majority(config) -> None:
    anns = [_ann("cat", id=1), _ann("cat", id=2), _ann("bird", id=3, ground_truth=True)]
    assert resolve_label(anns, config).class_index == 2


def test_unknown_class_is_ignored_and_reported(config) -> None:
    anns = [_ann("horse", id=7, updated="2026-02-01T00:00:00Z"), _ann("dog", id=8, updated="2026-01-01T00:00:00Z")]
    label = resolve_label(anns, config)
    assert label.class_index == 1
    assert label.problem is not None and "horse" in label.problem and "7" in label.problem


def test_only_unknown_classes_give_no_label_with_a_reason(config) -> None:
    label = resolve_label([_ann("horse")], config)
    assert label.class_index is None
    assert label.problem is not None and "unknown class 'horse'" in label.problem


def test_several_choices_in_one_annotation_are_reported(config) -> None:
    ann = _ann("cat")
    ann["result"][0]["value"]["choices"] = ["cat", "dog"]
    label = resolve_label([ann], config)
    assert label.class_index is None and label.problem is not None and "several" in label.problem


@pytest.mark.parametrize("junk", [
    None, 5, "cat", {}, {"result": None}, {"result": "cat"}, {"result": [None, 3, "x"]},
    {"result": [{"from_name": "choice", "type": "choices"}]},
    {"result": [{"from_name": "choice", "type": "choices", "value": None}]},
    {"result": [{"from_name": "choice", "type": "choices", "value": {"choices": "cat"}}]},
    {"result": [{"from_name": "choice", "type": "choices", "value": {"choices": [None, 3]}}]},
    {"was_cancelled": None, "updated_at": 12, "created_at": "not a date", "id": None, "result": []},
])
def test_odd_input_never_raises(config, junk) -> None:
    assert resolve_label([junk], config) == ResolvedLabel(None, None)


def test_odd_metadata_still_votes(config) -> None:
    anns = [{"result": _ann("bird")["result"], "updated_at": "garbage", "id": "x"},
            {"result": _ann("bird")["result"], "updated_at": None, "created_at": 3},
            _ann("cat", id=None, updated="2026-01-01T00:00:00")]  # naive timestamp
    assert resolve_label(anns, config).class_index == 2
    assert resolve_label(None, config) == ResolvedLabel(None, None)  # type: ignore[arg-type]
