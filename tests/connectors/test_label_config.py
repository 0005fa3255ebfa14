"""Label config parsing against the config Label Studio 1.23.2 really sent, and the configs we refuse."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from connectors.label_config import LabelConfig, LabelConfigError, parse_label_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "label-studio-1.23.2-requests.jsonl"


def _requests() -> list[dict]:
    return [json.loads(line) for line in FIXTURES.read_text().splitlines() if line.strip()]


def _first(path: str, action: str | None = None) -> dict:
    for r in _requests():
        if r.get("path") == path and (action is None or r["body"].get("action") == action):
            return r
    raise AssertionError(f"no recorded {path} {action or ''}")


def test_recorded_setup_schema() -> None:
    cfg = parse_label_config(_first("/setup")["body"]["schema"])
    assert cfg == LabelConfig(from_name="choice", to_name="image", data_key="image", kind="image",
                              classes=["cat", "dog", "bird"])


def test_agrees_with_label_studios_own_parse() -> None:
    project = _first("/webhook", "START_TRAINING")["body"]["project"]
    cfg = parse_label_config(project["label_config"])
    parsed = project["parsed_label_config"][cfg.from_name]
    assert parsed["type"] == "Choices"
    assert parsed["to_name"] == [cfg.to_name]
    assert parsed["labels"] == cfg.classes
    assert parsed["inputs"][0]["value"] == cfg.data_key


def test_result_matches_what_label_studio_accepted() -> None:
    recorded = _first("/predict")
    cfg = parse_label_config(recorded["body"]["label_config"])
    answered = recorded["response"]["results"][0]["result"]
    chosen = answered[0]["value"]["choices"][0]
    assert cfg.result(chosen) == [{k: v for k, v in item.items() if k != "score"} for item in answered]


def test_predict_tasks_carry_the_data_key() -> None:
    recorded = _first("/predict")
    cfg = parse_label_config(recorded["body"]["label_config"])
    assert all(cfg.data_key in task["data"] for task in recorded["body"]["tasks"])


def test_frozen() -> None:
    cfg = parse_label_config(_first("/setup")["body"]["schema"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kind = "vector"  # type: ignore[misc]


@pytest.mark.parametrize("tag", ["Text", "HyperText"])
def test_vector_kind(tag: str) -> None:
    xml = f"""<View><{tag} name="vec" value="$vector"/>
      <Choices name="label" toName="vec"><Choice value="a"/><Choice value="b"/></Choices></View>"""
    cfg = parse_label_config(xml)
    assert (cfg.kind, cfg.data_key, cfg.to_name, cfg.from_name) == ("vector", "vector", "vec", "label")


@pytest.mark.parametrize("choice_attr", ["", 'choice="single"', 'choice="single-radio"'])
def test_single_choice_modes(choice_attr: str) -> None:
    xml = f"""<View><Image name="img" value="$url"/>
      <Choices name="c" toName="img" {choice_attr}><Choice value="x"/><Choice value="y"/></Choices></View>"""
    assert parse_label_config(xml).classes == ["x", "y"]


def test_alias_is_the_class_name_because_results_carry_it() -> None:
    xml = """<View><Image name="img" value="$url"/>
      <Choices name="c" toName="img"><Choice value="Cat" alias="c"/><Choice value="Dog"/></Choices></View>"""
    cfg = parse_label_config(xml)
    assert cfg.classes == ["c", "Dog"]
    assert cfg.result("c")[0]["value"] == {"choices": ["c"]}


def test_nested_layout_and_lowercase_tags() -> None:
    xml = """<View><View style="x"><image name="img" value="$pic"/></View>
      <Header value="Pick one"/>
      <View><choices name="c" toName="img"><choice value="a"/><choice value="b"/></choices></View></View>"""
    cfg = parse_label_config(xml)
    assert (cfg.kind, cfg.data_key, cfg.classes) == ("image", "pic", ["a", "b"])


@pytest.mark.parametrize(("xml", "reason"), [
    ("<View><Image name='i' value='$x'/>", "not valid XML"),
    ("", "empty"),
    ("<View><Image name='i' value='$x'/></View>", "no <Choices>"),
    ("""<View><Image name='i' value='$x'/>
        <Choices name='first' toName='i'><Choice value='a'/><Choice value='b'/></Choices>
        <Choices name='second' toName='i'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "'first', 'second'"),
    ("""<View><Image name='i' value='$x'/>
        <Choices name='c' toName='i' choice='multiple'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "choice='multiple'"),
    ("""<View><Image name='i' value='$x'/>
        <Choices name='c' toName='missing'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "no tag is named 'missing'"),
    ("""<View><Image name='i' value='$x'/><Choices name='c'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "no toName"),
    ("<View><Image name='i' value='$x'/><Choices name='c' toName='i'></Choices></View>", "no <Choice> values"),
    ("<View><Image name='i' value='$x'/><Choices name='c' toName='i' value='$opts'/></View>", "from task data"),
    ("""<View><Image name='i' value='$x'/>
        <Choices name='c' toName='i'><Choice value='a'/><Choice value='b'/><Choice value='a'/></Choices></View>""",
     "repeats class names: 'a'"),
    ("""<View><Image name='i' value='$x'/>
        <Choices name='c' toName='i'><Choice value='a'/><Choice alias='a' value='A'/></Choices></View>""",
     "repeats"),
    ("""<View><Image name='i' value='$x'/><Choices name='c' toName='i'><Choice value='a'/><Choice/></Choices></View>""",
     "has no value"),
    ("""<View><Image name='i' value='$x'/><Choices name='c' toName='i'><Choice value='a'/></Choices></View>""",
     "at least two"),
    ("""<View><Image name='i' value='http://x/a.png'/>
        <Choices name='c' toName='i'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "must name a task data field"),
    ("""<View><Image name='i' valueList='$imgs'/>
        <Choices name='c' toName='i'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "valueList"),
    ("""<View><Audio name='a' value='$audio'/>
        <Choices name='c' toName='a'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "not supported"),
    ("""<View><Image name='i' value='$x'/><Text name='t' value='$t'/>
        <Choices name='c' toName='i,t'><Choice value='a'/><Choice value='b'/></Choices></View>""",
     "several objects"),
    ("""<!DOCTYPE v [<!ENTITY e "x">]><View><Image name='i' value='$x'/>
        <Choices name='c' toName='i'><Choice value='&e;'/><Choice value='b'/></Choices></View>""",
     "DOCTYPE"),
])
def test_refused_configs_say_why(xml: str, reason: str) -> None:
    with pytest.raises(LabelConfigError) as err:
        parse_label_config(xml)
    assert reason in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(("xml", "named"), [
    ('<View><Image name="i" value="$img"/><RectangleLabels name="b" toName="i"><Label value="x"/></RectangleLabels>'
     '<Choices name="c" toName="i" perRegion="true"><Choice value="a"/><Choice value="b"/></Choices></View>',
     "perRegion"),
    ('<View><Repeater on="$images"><Image name="i_{{idx}}" value="$images[{{idx}}].url"/>'
     '<Choices name="c_{{idx}}" toName="i_{{idx}}"><Choice value="a"/><Choice value="b"/></Choices></Repeater></View>',
     "Repeater"),
])
def test_configs_that_look_like_one_classification_but_are_not_are_refused(xml: str, named: str) -> None:
    with pytest.raises(LabelConfigError, match=named):
        parse_label_config(xml)


def test_names_are_kept_as_written_as_label_studio_keeps_them() -> None:
    """Label Studio names a result by the raw attribute ("c "): a stripped name would match no annotation."""
    cfg = parse_label_config('<View><Image name="image " value="$image"/><Choices name="c " toName="image ">'
                             '<Choice value="a"/><Choice value="b"/></Choices></View>')
    assert (cfg.from_name, cfg.to_name) == ("c ", "image ")
    with pytest.raises(LabelConfigError, match="no name"):
        parse_label_config('<View><Image name="i" value="$image"/><Choices name=" " toName="i">'
                           '<Choice value="a"/></Choices></View>')
