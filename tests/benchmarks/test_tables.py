"""The README's result tables are derived from the raw files, and the helpers compute what they say."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
tables = importlib.util.module_from_spec(spec)
sys.modules["tables"] = tables  # dataclasses look their module up while the class is built
spec.loader.exec_module(tables)


def test_readme_tables_match_the_raw_files() -> None:
    assert tables.main(["--check"]) == 0, "run python benchmarks/tables.py --write"


def test_a_readme_cell_re_derived_by_hand() -> None:
    """One cell computed here straight from the raw JSON, without the script's helpers."""
    errs = []
    for s in (0, 1, 2):
        d = json.loads((ROOT / f"benchmarks/results/cpu-fm10-10k-s{s}/curve.json").read_text())
        run = next(r for r in d["runs"] if (r["model"], r["strategy"]) == ("sae", "margin"))
        errs.append(next(p["test_error"] for p in run["curve"] if p["labeled"] == 1000))
    cell = f"{100 * np.mean(errs):.1f} ± {100 * np.std(errs, ddof=1):.1f} %"
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.split("<!-- tables:subset -->")[1].splitlines() if ln.startswith("| sae+margin |"))
    assert line.rstrip(" |").endswith(cell) or line.rstrip(" |").endswith(f"**{cell}**")


def _runs(label: str, errors: dict[int, list[float]], budgets=(100, 200, 300)) -> tables.Row:
    runs = tuple({"model": "m", "strategy": "s", "seed": seed,
                  "curve": [{"labeled": n, "test_error": e} for n, e in zip(budgets, errs, strict=True)]}
                 for seed, errs in errors.items())
    return tables.Row(label, runs, ("raw.json",))


def test_mean_and_sample_sd_and_best_in_bold() -> None:
    a = _runs("a", {0: [0.30, 0.20, 0.10], 1: [0.32, 0.22, 0.12], 2: [0.34, 0.24, 0.14]})
    b = _runs("b", {0: [0.20, 0.30, 0.30], 1: [0.20, 0.30, 0.30], 2: [0.20, 0.30, 0.30]})
    text = tables.curve_table("t", [a, b], (100, 200, 300))
    assert "| a | 32.0 ± 2.0 % | **22.0 ± 2.0 %** | **12.0 ± 2.0 %** |" in text
    assert "| b | **20.0 ± 0.0 %** | 30.0 ± 0.0 % | 30.0 ± 0.0 % |" in text
    assert "Raw: `raw.json`." in text


def test_rows_with_fewer_than_three_seeds_are_left_out_and_named() -> None:
    a = _runs("a", {0: [0.3, 0.2, 0.1], 1: [0.3, 0.2, 0.1], 2: [0.3, 0.2, 0.1]})
    one = _runs("one seed", {0: [0.1, 0.1, 0.1]})
    text = tables.curve_table("t", [a, one], (100, 200, 300))
    assert "| one seed |" not in text
    assert "Left out, fewer than 3 seeds: one seed (1 seed)." in text


def test_paired_difference_is_per_seed() -> None:
    a = _runs("a", {0: [0.30, 0.2, 0.1], 1: [0.20, 0.2, 0.1], 2: [0.10, 0.2, 0.1]})
    b = _runs("b", {0: [0.31, 0.3, 0.1], 1: [0.21, 0.3, 0.1], 2: [0.11, 0.3, 0.1]})
    text = tables.paired_table("p", [("a − b", a, b)], (100, 200, 300))
    # seed against seed the gap is exactly one point at 100 labels, although the means' spread is ten
    assert "| a − b | 0,1,2 | -1.0 ± 0.0 | -10.0 ± 0.0 | +0.0 ± 0.0 |" in text


def test_labels_to_reach_uses_the_seed_mean() -> None:
    a = _runs("a", {0: [0.30, 0.20, 0.10], 1: [0.30, 0.16, 0.10], 2: [0.30, 0.21, 0.10]})
    assert tables.labels_to_reach(a, 0.20) == 200
    assert tables.labels_to_reach(a, 0.19) == 200, "mean 19 %, although one seed is at 21 %"
    assert tables.labels_to_reach(a, 0.185) == 300
    assert tables.labels_to_reach(a, 0.05) is None


def test_render_replaces_only_marked_blocks(monkeypatch) -> None:
    monkeypatch.setattr(tables, "SECTIONS", {"x": lambda: "NEW"})
    text = "keep\n<!-- tables:x -->\nold | 1 %\n<!-- /tables:x -->\nkeep too"
    assert tables.render(text) == "keep\n<!-- tables:x -->\nNEW\n<!-- /tables:x -->\nkeep too"


def test_a_repeated_seed_in_the_raw_files_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    run = {"model": "sae", "strategy": "margin", "seed": 0, "curve": []}
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"settings": {}, "runs": [run]}))
    with pytest.raises(ValueError, match="seed repeated"):
        tables.row("x", ["*.json"], "sae", "margin")


def test_no_typed_percentages_in_the_generated_sections() -> None:
    """Every percentage between the markers is one the script writes (the check above), none outside a table."""
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"<!-- tables:([\w-]+) -->\n(.*?)<!-- /tables:\1 -->", readme, re.S):
        assert block[1] == tables.SECTIONS[block[0]]() + "\n"


def test_the_chosen_lever_is_compared_with_baselines_trained_alike() -> None:
    base = [tables.Row(label, (), ()) for _, label, _, _ in tables.BASELINES]
    by = {r.label: r for r in base}
    lever = {name: tables.Row(label, (), ()) for name, label, _, _ in tables.LEVERS}
    assert tables.matched_baselines(lever["epochs"], base) == (
        by["classifier+margin, 10 / 5 epochs"], by["classifier+random, 10 / 5 epochs"])
    assert tables.matched_baselines(lever["noshift"], base) == (
        by["classifier+margin, no shifts"], by["classifier+random, no shifts"])
    assert tables.matched_baselines(lever["wide"], base) == (
        by["classifier+margin, conv 32/64/128"], by["classifier+random, conv 32/64/128"])
    assert tables.matched_baselines(lever["wide-bn"], base) == (
        by["classifier+margin, conv 32/64/128, batch-normalised"],
        by["classifier+random, conv 32/64/128, batch-normalised"])
    for name in ("flip-selftrain500", "flip-consistency500", "flip-semi500"):
        assert tables.BUILDS_ON[name] == "wide-flip"
        assert tables.matched_baselines(lever[name], base) == (
            by["classifier+margin, conv 32/64/128, shifts and flips"],
            by["classifier+random, conv 32/64/128, shifts and flips"])
    for name in ("flip-semi300", "flip-semi500-st1", "flip-semi500-again", "flip-semi500-latent16",
                 "flip-semi500-lam099", "flip-semi500-lam0999", "flip-semi500-lam099-latent16",
                 "flip-semi500-lam099-warm5", "flip-semi500-lam099-warm10",
                 "flip-semi500-lam099-warm5-cluster", "flip-semi500-lam099-warm5-lpb32",
                 "flip-semi500-lam099-warm5-st08", "flip-semi500-lam099-warm5-lpb128"):  # one machine
        assert tables.matched_baselines(lever[name], base) == (
            by["classifier+margin, conv 32/64/128, shifts and flips (run again, on another machine)"],
            by["classifier+random, conv 32/64/128, shifts and flips (run again, on another machine)"])
    assert tables.matched_baselines(lever["flip-semi500-lam099-mixup"], base) == (
        by["classifier+margin, conv 32/64/128, shifts and flips, mixup (weight 1)"],
        by["classifier+random, conv 32/64/128, shifts and flips, mixup (weight 1)"]), "mixup on both sides"
    assert tables.matched_baselines(lever["flip-semi500-lam099-warm5-first10"], base) == (
        by["classifier+margin, conv 32/64/128, shifts and flips, 10 / 5 epochs"],
        by["classifier+random, conv 32/64/128, shifts and flips, 10 / 5 epochs"]), "a longer first training on both"
    assert tables.matched_baselines(lever["flip-semi500-tta"], base) == (
        by["classifier+margin, conv 32/64/128, shifts and flips, test-time flips"],
        by["classifier+random, conv 32/64/128, shifts and flips, test-time flips"])
    assert tables.matched_baselines(lever["typical"], base) == (
        by["classifier+margin, shifts ≤ 2 px"], by["classifier+random, shifts ≤ 2 px"])
    assert tables.matched_baselines(lever["epochs"], base[:2]) == (base[0], base[1]), "missing: the first two"


def test_the_seasons_target_is_a_paired_lead_at_every_budget() -> None:
    budgets = tables.ROUNDS
    lead = _runs("sae", {s: [0.10] * len(budgets) for s in range(3)}, budgets)
    behind_at_100 = _runs("classifier+margin", {s: [0.09] + [0.12] * (len(budgets) - 1) for s in range(3)}, budgets)
    text = tables._targets_seasons(lead, behind_at_100, behind_at_100, None)
    assert "-1.0, " + ", ".join(["+2.0"] * 9) + " points" in text and "not met at 100)" in text
    ahead = _runs("classifier+margin", {s: [0.12] * len(budgets) for s in range(3)}, budgets)
    assert tables._targets_seasons(lead, ahead, ahead, None).endswith("(target: ahead at every budget: met).")
    assert "incomplete" in tables._targets_seasons(lead, _runs("x", {0: [0.1] * len(budgets)}, budgets), ahead, None)


def test_a_lever_is_also_set_against_the_setting_it_adds_to() -> None:
    budgets = tables.FM_BUDGETS

    def val_rows(label: str, err: float) -> tables.Row:
        runs = tuple({"model": "sae", "strategy": "margin", "seed": seed,
                      "curve": [{"labeled": n, "val_error": err + 0.001 * seed * i} for i, n in enumerate(budgets)]}
                     for seed in range(3))
        return tables.Row(label, runs, ("raw.json",))

    label = {name: lab for name, lab, _, _ in tables.LEVERS}
    assert tables.BUILDS_ON["wide-bn"] == "wide"
    rows = [val_rows(label["shift2"], 0.20), val_rows(label["wide"], 0.15), val_rows(label["wide-bn"], 0.16)]
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in tables._lever_effects(rows).splitlines()}
    helps = "| yes (mean + 1 sd below 0) |"
    assert lines[label["wide"]].endswith(f"| -5.0 ± 0.0 {helps}  |"), "wide adds to typical, which is absent"
    assert lines[label["wide-bn"]].endswith(f"| -4.0 ± 0.0 {helps} +1.0 ± 0.0 against {label['wide']} |")


def test_the_chosen_lever_s_rerun_meets_baselines_from_its_own_machine() -> None:
    budgets = tables.FM_BUDGETS
    label = {name: lab for name, lab, _, _ in tables.LEVERS}
    three = {s: [0.2] * len(budgets) for s in range(3)}
    levers = [_runs(label[name], three, budgets) for name in ("flip-semi500", "flip-semi500-again")]
    base = [_runs(lab, three, budgets) for _, lab, _, _ in tables.BASELINES]
    by = {r.label: r for r in base}
    rerun, cm, cr = tables.replicate(levers[0], levers, base)
    assert rerun is levers[1]
    assert (cm, cr) == (by["classifier+margin, conv 32/64/128, shifts and flips (run again, on another machine)"],
                        by["classifier+random, conv 32/64/128, shifts and flips (run again, on another machine)"])
    assert tables.replicate(levers[1], levers, base) is None, "the rerun has no rerun of its own"
    two_seeds = [_runs(label["flip-semi500-again"], {0: three[0], 1: three[1]}, budgets)]
    assert tables.replicate(levers[0], levers[:1] + two_seeds, base) is None, "an incomplete rerun is not read"


def test_extra_seeds_join_the_chosen_setting_and_its_baselines_together(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    curve = [{"labeled": n, "test_error": 0.2} for n in tables.FM_BUDGETS]

    def write(folder: str, name: str, pairs: list[tuple[str, str]], seeds: range) -> None:
        path = tmp_path / folder / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": m, "strategy": s, "seed": seed, "curve": curve} for m, s in pairs for seed in seeds]
        path.write_text(json.dumps({"settings": {}, "runs": runs}))

    baselines = [("classifier", "margin"), ("classifier", "random")]
    write(tables.PROTOCOL, "flip-semi500-lam099", [("sae", "margin")], range(3))
    write(tables.PROTOCOL, "baselines-wide-flip-again", baselines, range(3))
    levers = tables._protocol_rows(tables.LEVERS)
    best = next(r for r in levers if r.runs)
    cm, cr = tables.matched_baselines(best, tables._protocol_rows(tables.BASELINES))
    write("more", "flip-semi500-lam099", [("sae", "margin")], range(3, 5))
    assert tables.more_seeds(best, cm, cr, "more") is None, "the baselines have no seeds 3-4 yet"
    write("more", "baselines-wide-flip-again", baselines, range(3, 5))
    five = tables.more_seeds(best, cm, cr, "more")
    assert [r.seeds for r in five] == [[0, 1, 2, 3, 4]] * 3
    assert [(r.label, r.runs[0]["model"], r.runs[0]["strategy"]) for r in five] == [
        (best.label, "sae", "margin"), (cm.label, "classifier", "margin"), (cr.label, "classifier", "random")]
    assert tables.more_seeds(best, cm, cr, None) is None


def _adding_to(root: str) -> set[str]:
    """``root`` and every lever that adds to it, directly or through another lever."""
    names = {root}
    while grown := {lever for lever, parent in tables.BUILDS_ON.items() if parent in names} - names:
        names |= grown
    return names


def test_a_rerun_on_a_larger_validation_set_is_checked_against_the_first_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    budgets = tables.FM_BUDGETS
    label = {name: lab for name, lab, _, _ in tables.LEVERS}
    assert "Not run yet" in tables.section_protocol_val20k(["big"], "small")

    def write(folder: str, name: str, val: float, test: float) -> None:
        path = tmp_path / folder / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": "sae", "strategy": "margin", "seed": seed, "curve": [
            {"labeled": n, "test_error": test + 0.01 * seed, "val_error": val + 0.001 * seed * i}
            for i, n in enumerate(budgets)]} for seed in range(3)]
        path.write_text(json.dumps({"settings": {}, "runs": runs}))

    chosen, lever = tables.CHOSEN_2K, "flip-semi500-lam099-warm5-st08"
    write("small", chosen, 0.11, 0.13)
    write("small", lever, 0.12, 0.13)
    write("big", lever, 0.10, 0.13)
    assert "Not run yet" in tables.section_protocol_val20k(["big"], "small"), "no 20k run of the 2k choice"
    write("big", chosen, 0.12, 0.14)
    text = tables.section_protocol_val20k(["big", "other"], "small")
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines() if "of 18" in ln}
    assert rows[label[chosen]].startswith(f"| {label[chosen]} | 0 of 18 |"), "its test readings all differ"
    assert rows[label[lever]].endswith("| 18 of 18 | +1.0 ± 0.0 | -2.0 ± 0.0 | 14.0 ± 1.0 % |")
    assert rows[label[chosen]].endswith("|  |  | 15.0 ± 1.0 % |"), "the control is not set against itself"
    assert f"so far (2 of {len(_adding_to(chosen) - tables.TWO_K_ONLY)} rerun)" in text
    assert text.endswith(f"**{label[lever]}**.")
    only_20k = "flip-semi500-lam099-warm5-lr2e3"
    write("big", only_20k, 0.125, 0.13)
    assert f"| {label[only_20k]} | not run on the 2k set |  | +0.5 ± 0.0 |" in \
        tables.section_protocol_val20k(["big"], "small"), \
        "a lever first tried on the 20k set has no 2k run to reproduce or be read on"
    (tmp_path / "big" / only_20k / "curve.json").unlink()
    write("other", chosen, 0.10, 0.13)
    write("other", lever, 0.11, 0.13)
    big, other = tables.section_protocol_val20k(["big", "other"], "small").split("`other` (processor")
    assert big.strip().endswith(f"**{label[lever]}**.") and other.endswith(f"**{label[chosen]}**."), \
        "each machine's levers are read against its own control"
    a = tables.Row("a", ({"seed": 0, "curve": [{"labeled": 100, "test_error": 0.2},
                                                {"labeled": 200, "test_error": 0.1}]},), ())
    b = tables.Row("b", ({"seed": 0, "curve": [{"labeled": 100, "test_error": 0.2}]},), ())
    assert tables.reproduced(a, b) == (1, 2)
    parent, grandchild = next((p, g) for g, p in tables.BUILDS_ON.items() if tables.BUILDS_ON.get(p) == chosen)
    write("third", chosen, 0.12, 0.14)
    write("third", parent, 0.10, 0.14)
    write("third", grandchild, 0.105, 0.14)
    text = tables.section_protocol_val20k(["third"], "small")
    assert f"| {label[grandchild]} | not run on the 2k set |  | -1.5 ± 0.0 |" in text, "read against the control"
    assert (f"{label[grandchild]}, against the setting it adds to ({label[parent]}), paired on 20k validation: "
            "+0.5 ± 0.0 points.") in text
    assert text.count("against the setting it adds to") == 1, "levers on the control itself are read in the table"


def test_a_machine_reads_the_targets_against_its_own_baselines(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)

    def write(folder: str, name: str, pairs: list[tuple[str, str, float]], val: float = 0.1) -> None:
        path = tmp_path / folder / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": m, "strategy": s, "seed": seed, "curve": [
            {"labeled": n, "test_error": err - 0.0001 * n + 0.01 * seed, "val_error": val}
            for n in tables.ROUNDS]} for m, s, err in pairs for seed in range(3)]
        path.write_text(json.dumps({"settings": {}, "runs": runs}))

    chosen = tables.CHOSEN_2K
    base = tables.MATCHED_BASELINES[chosen]
    write("small", chosen, [("sae", "margin", 0.22)])
    write("big", chosen, [("sae", "margin", 0.22)])
    write("small", base, [("classifier", "margin", 0.245), ("classifier", "random", 0.285)])
    assert "trained on this machine" not in tables.section_protocol_val20k(["big"], "small"), \
        "baselines from another folder (machine) are not read here"
    write("big", base, [("classifier", "margin", 0.245), ("classifier", "random", 0.285)])
    text = tables.section_protocol_val20k(["big"], "small")
    assert "The standing (2k) setting against classifier baselines trained on this machine" in text
    assert f"equal to earlier runs of the same baselines: `small/{base}` 60 of 60 (processor: not recorded):" in text
    assert "* Error at 1,000 labels: 13.00 % (target ≤ 13 %: met)." in text
    assert "classifier+random's 1,000-label error (19.5 %): 400 (target ≤ 250: not met)" in text
    assert "(target ≥ 2 at every budget: met)." in text
    assert "The 20k set's chosen" not in text, "levers still to rerun: only the standing choice is read"
    m = tables.machine("big")
    assert not m.done and m.standing() == [m.control] and m.control.files == (f"big/{chosen}/curve.json",)
    assert [r.files for r in m.baselines(m.control)] == [(f"big/{base}/curve.json",)] * 2, "this machine's own"
    levers = {name: strategy for name, _, _, strategy in tables.LEVERS
              if name in _adding_to(chosen) - {chosen} - tables.TWO_K_ONLY}
    for name, strategy in levers.items():
        write("big", name, [("sae", strategy, 0.23)], val=0.11)
    assert tables.TWO_K_ONLY and _adding_to(chosen) >= tables.TWO_K_ONLY
    assert tables.machine("big").done, "a lever read on the 2k protocol only is not one a machine reruns"
    assert "The 20k set's chosen" not in tables.section_protocol_val20k(["big"], "small"), \
        "the standing choice stays lowest: it is the one read"
    alike = next(name for name in levers if tables.MATCHED_BASELINES.get(name) == base)
    write("big", alike, [("sae", levers[alike], 0.225)], val=0.09)
    text = tables.section_protocol_val20k(["big"], "small")
    assert text.count("against classifier baselines trained on this machine") == 2, \
        "a 20k choice that differs is read beside the standing one, not instead of it"
    standing, new = text.split("The 20k set's chosen setting")
    assert "* Error at 1,000 labels: 13.00 %" in standing and "* Error at 1,000 labels: 13.50 %" in new


def test_seeds_3_4_join_a_machine_s_control_and_its_20k_choice(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    monkeypatch.setattr(tables, "MORE_SEEDS_20K", {"big": "more"})

    def write(folder: str, name: str, pairs: list[tuple[str, str, float]], val, seeds: range) -> None:
        path = tmp_path / folder / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": m, "strategy": s, "seed": seed, "curve": [
            {"labeled": n, "test_error": err - 0.0001 * n + 0.01 * seed, "val_error": val(seed)}
            for n in tables.FM_BUDGETS]} for m, s, err in pairs for seed in seeds]
        path.write_text(json.dumps({"settings": {}, "runs": runs}))

    chosen = tables.CHOSEN_2K
    base = tables.MATCHED_BASELINES[chosen]
    baselines = [("classifier", "margin", 0.245), ("classifier", "random", 0.285)]
    levers = {name: strategy for name, _, _, strategy in tables.LEVERS if name in _adding_to(chosen) - {chosen}}
    write("small", chosen, [("sae", "margin", 0.22)], lambda seed: 0.10, range(3))
    write("big", chosen, [("sae", "margin", 0.22)], lambda seed: 0.10, range(3))
    write("big", base, baselines, lambda seed: 0.2, range(3))
    for name, strategy in levers.items():
        write("big", name, [("sae", strategy, 0.23)], lambda seed: 0.11, range(3))
    alike = next(name for name in levers if tables.MATCHED_BASELINES.get(name) == base)
    write("big", alike, [("sae", levers[alike], 0.225)], lambda seed: 0.09, range(3))
    assert "Seeds 3 and 4" not in tables.section_protocol_val20k(["big"], "small")
    write("more", chosen, [("sae", "margin", 0.22)], lambda seed: 0.10, range(3, 5))
    text = tables.section_protocol_val20k(["big"], "small")
    assert "Seeds 3 and 4 added" in text and "| against the control" not in text, \
        "no lever has seeds 3-4 yet"
    assert "seeds 0-4, this machine" not in text, "no test reading before the baselines have seeds 3-4 too"
    write("more", alike, [("sae", levers[alike], 0.225)], lambda seed: 0.11, range(3, 5))
    write("more", base, baselines, lambda seed: 0.2, range(3, 5))
    text = tables.section_protocol_val20k(["big"], "small")
    label = {name: lab for name, lab, _, _ in tables.LEVERS}
    assert f"| {label[alike]} | -0.2 ± 1.1 | -1.0, -1.0, -1.0, +1.0, +1.0 | 3 of 5 |" in text
    other = next(name for name in levers if name != alike)
    write("more", other, [("sae", levers[other], 0.23)], lambda seed: 0.10, range(3, 5))
    text = tables.section_protocol_val20k(["big"], "small")
    assert f"| {label[other]} | +0.6 ± 0.5 | +1.0, +1.0, +1.0, +0.0, +0.0 | 0 of 5 |" in text, \
        "another lever given seeds 3-4 is read against the control too"
    assert text.count("classifier baselines, seeds 3 and 4 added to both") == 2, \
        "on test only the control and the 20k choice"
    assert f"Chosen on the 20k set (lowest mean validation error over 200-1,000 labels): **{label[alike]}**." in text, \
        "the choice stays on seeds 0-2"
    five = text.split("Seeds 3 and 4 added")[1]
    assert five.count("seeds 0-4, this machine (report only)") >= 2
    assert "* Error at 1,000 labels: 14.50 %" in five and "* Error at 1,000 labels: 14.00 %" in five, \
        "five-seed means of the 20k choice and the control"
    assert "* Error at 1,000 labels: 13.50 %" in text.split("Seeds 3 and 4 added")[0], "the three-seed reading stays"
    readings = tables._machine_readings("big", "the 2k choice")
    assert [(who, r.label, len(r.runs)) for who, (r, _, _) in readings] == [
        ("the 2k choice run again, seeds 0-2", label[chosen], 3),
        ("the 2k choice run again, seeds 0-4", label[chosen], 5),
        ("that machine's 20k choice, seeds 0-2", label[alike], 3),
        ("that machine's 20k choice, seeds 0-4", label[alike], 5)], "the summary's lines for this machine"
    parent, child = next((p, g) for g, p in tables.BUILDS_ON.items() if tables.BUILDS_ON.get(p) == chosen)
    for folder, seeds in (("big", range(3)), ("more", range(3, 5))):
        write(folder, parent, [("sae", "margin", 0.23)], lambda seed: 0.10, seeds)
        write(folder, child, [("sae", "margin", 0.23)], lambda seed: 0.10 - 0.001 * seed, seeds)
    assert (f"{label[child]}, against the setting it adds to ({label[parent]}), paired on 20k validation, seeds 0-4: "
            "-0.2 ± 0.2 points (+0.0, -0.1, -0.2, -0.3, -0.4).") in tables.section_protocol_val20k(["big"], "small")


def test_other_heads_are_read_against_the_model_s_own_svm_on_the_same_codes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert "Not run yet" in tables.section_latent_heads(["big"])
    heads = {"svm C=1": 0.12, "svm C=10": 0.11, "knn 10": 0.13}

    def write(name: str, own_val: float, probe: bool, test: float = 0.13) -> None:
        path = tmp_path / "big" / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": "sae", "strategy": "margin", "seed": seed, "curve": [
            {"labeled": n, "test_error": test + 0.01 * seed, "val_error": own_val + 0.001 * seed,
             **({"probe": {h: {"val_error": v + 0.001 * seed + (0.002 * seed if h == "knn 10" else 0),
                               "test_error": 0.2} for h, v in heads.items()}} if probe else {})}
            for n in tables.FM_BUDGETS]} for seed in range(3)]
        path.write_text(json.dumps({"settings": {}, "runs": runs}))

    write(tables.HEADS, 0.12, probe=True)
    write(tables.CHOSEN_2K, 0.12, probe=False)
    text = tables.section_latent_heads(["big"])
    assert "| svm C=10 | -1.0 ± 0.0 | yes |" in text
    assert "| knn 10 | +1.2 ± 0.2 | no |" in text
    assert "| svm C=1 | " not in text.split("vs svm C=1, points")[1], "the reference is not set against itself"
    assert "at 18 of 18 points; the training's test readings equal the control's" in text
    assert text.endswith("**svm C=10** (-1.0 points).")
    write(tables.HEADS.replace("-heads", ""), 0.12, probe=False)
    heads["svm C=1"] = 0.125
    write(tables.HEADS, 0.12, probe=True)
    assert "at 0 of 18 points" in tables.section_latent_heads(["big"]), "a probe that is not the model's own SVM shows"
    heads["svm C=1"] = 0.12
    write(tables.EMA_HEADS, 0.12, probe=True, test=0.11)
    write(tables.HEADS_OF[tables.EMA_HEADS], 0.12, probe=False, test=0.11)  # only its own control reads alike
    ema = tables.section_latent_heads(["big"]).split(f"`big/{tables.EMA_HEADS}`")[1]
    assert f"the training's test readings equal the control's (`big/{tables.HEADS_OF[tables.EMA_HEADS]}`) at 18 of 18" \
        in ema, "each heads run is checked against the setting it trains again"


def test_the_summary_reads_each_target_with_its_figure() -> None:
    def make(label: str, err: float, model: str = "sae", strategy: str = "margin") -> tables.Row:
        return tables.Row(label, tuple({"model": model, "strategy": strategy, "seed": seed, "curve": [
            {"labeled": n, "test_error": err - 0.0001 * n + 0.01 * seed} for n in tables.ROUNDS]}
            for seed in range(3)), ())

    cm, cr = make("cm", 0.245, "classifier"), make("cr", 0.285, "classifier", "random")
    assert tables._target_cells(make("sae", 0.22), cm, cr) == ["13.00 % (met)", "400 (not met)", "+2.50 at 200 (met)"]
    assert tables._target_cells(make("sae", 0.2301), cm, cr) == [
        "14.01 % (not met)", "500 (not met)", "+1.49 at 200 (not met)"]
    short = tables.Row("sae", tuple({**r, "curve": r["curve"][:3]} for r in make("sae", 0.22).runs), ())
    assert tables._target_cells(short, cm, cr) == ["incomplete", "not reached", "incomplete"]


def test_rounds_of_50_read_the_250_label_target_against_the_machine_s_own_bar(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    monkeypatch.setattr(tables, "MORE_SEEDS_20K", {"big": "more"})

    def write(folder: str, name: str, pairs: list, budgets, seeds: range) -> None:
        path = tmp_path / folder / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": m, "strategy": s, "seed": seed, "curve": [
            {"labeled": n, "test_error": test(n) + 0.01 * seed, "val_error": val(seed)} for n in budgets]}
            for m, s, test, val in pairs for seed in seeds]
        path.write_text(json.dumps({"settings": {}, "where": {"processor": "Test CPU"}, "runs": runs}))

    hundreds, fifties = range(100, 1001, 100), tables.ROUNDS_50_BUDGETS
    control = [("sae", "margin", lambda n: 0.26 - 0.0002 * n, lambda seed: 0.15)]
    base100 = [("classifier", "margin", lambda n: 0.28 - 0.0001 * n, lambda seed: 0.2),
               ("classifier", "random", lambda n: 0.29 - 0.0001 * n, lambda seed: 0.2)]
    r50 = [("sae", "margin", lambda n: 0.25 - 0.00025 * n, lambda seed: 0.14 + 0.001 * seed)]
    base50 = [("classifier", "margin", lambda n: 0.23 - 0.0001 * n, lambda seed: 0.2),
              ("classifier", "random", lambda n: 0.29 - 0.0001 * n, lambda seed: 0.2)]
    for folder, seeds in (("big", range(3)), ("more", range(3, 5))):
        write(folder, tables.CHOSEN_2K, control, hundreds, seeds)
        write(folder, tables.MATCHED_BASELINES[tables.CHOSEN_2K], base100, hundreds, seeds)
    assert tables.section_rounds50(["big"]).startswith("_Not run yet"), "nothing to read before rounds of 50 ran"
    write("big", tables.ROUNDS_50, r50, fifties, range(3))
    write("big", tables.ROUNDS_50_BASELINES, base50, fifties, range(3))
    text = tables.section_rounds50(["big"])
    assert text.startswith("`big` (processor: Test CPU):")
    assert "-0.9 ± 0.1 points (-1.0, -0.9, -0.8)" in text, "validation paired per seed over 200-500 labels"
    assert "(20.0 %, seeds 0-2): rounds of 50 250; rounds of 100 400 (target ≤ 250: met)" in text, \
        "the bar is classifier+random at 1,000 labels in rounds of 100"
    assert "not met; smallest +1.00 at 200" in text, "the lead is over classifier+margin in the same rounds"
    assert "seeds 0-4" not in text, "seeds 3-4 only once the rounds of 50 have them too"
    assert tables._target_cells_50(tables.rounds50("big")[0]) == [
        "not read (the rounds stop at 500)", "250 (met)",
        "+1.00 at 200, up to 500 labels only (not met to 500; not read beyond), against classifier+margin in "
        "rounds of 50",
    ], "the summary's cells"
    write("more", tables.ROUNDS_50, r50, fifties, range(3, 5))
    write("more", tables.ROUNDS_50_BASELINES, base50, fifties, range(3, 5))
    text = tables.section_rounds50(["big"])
    assert "(21.0 %, seeds 0-4)" in text and "-0.8 ± 0.2 points (-1.0, -0.9, -0.8, -0.7, -0.6)" in text

    name = tables.ROUNDS_50_2K.removesuffix("-r50")  # the same, beside the 2k protocol's own runs
    write(tables.PROTOCOL, name, control, hundreds, range(3))
    write(tables.PROTOCOL, tables.MATCHED_BASELINES[name], base100, hundreds, range(3))
    assert tables.rounds50_2k() == [], "nothing to read before its rounds of 50 ran"
    write(tables.PROTOCOL, tables.ROUNDS_50_2K, r50, fifties, range(3))
    write(tables.PROTOCOL, tables.ROUNDS_50_BASELINES, base50, fifties, range(3))
    text = tables.section_rounds50([])
    assert text.startswith(f"`{tables.PROTOCOL}`, the runs the targets are read on (processor: Test CPU):")
    assert "| validation error, 2k items, seeds 0-2 |" in text
    assert "(20.0 %, seeds 0-2): rounds of 50 250; rounds of 100 400 (target ≤ 250: met)" in text
    assert "seeds 0-4" not in text, "the 2k protocol's seeds 3-4 only once its rounds of 50 have them too"
    write(tables.MORE_SEEDS, name, control, hundreds, range(3, 5))
    write(tables.MORE_SEEDS, tables.MATCHED_BASELINES[name], base100, hundreds, range(3, 5))
    assert len(tables.rounds50_2k()) == 1, "the control's seeds 3-4 alone add no reading"
    write(tables.MORE_SEEDS, tables.ROUNDS_50_2K, r50, fifties, range(3, 5))
    write(tables.MORE_SEEDS, tables.ROUNDS_50_BASELINES, base50, fifties, range(3, 5))
    text = tables.section_rounds50([])
    assert "| validation error, 2k items, seeds 0-4 |" in text and "(21.0 %, seeds 0-4)" in text
    assert [x.sae.seeds for x in tables.rounds50_2k()] == [[0, 1, 2], [0, 1, 2, 3, 4]]


def test_the_summary_names_the_earlier_choice_once_a_later_lever_is_chosen(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)

    def write(name: str, pairs: list[tuple[str, str]], val: float) -> None:
        path = tmp_path / tables.PROTOCOL / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        curve = [{"labeled": n, "test_error": 0.2, "val_error": val} for n in tables.FM_BUDGETS]
        runs = [{"model": m, "strategy": s, "seed": seed, "curve": curve} for m, s in pairs for seed in range(3)]
        path.write_text(json.dumps({"settings": {}, "runs": runs}))

    label = {name: text for name, text, _, _ in tables.LEVERS}
    later = next(g for g, p in tables.BUILDS_ON.items() if p == tables.CHOSEN_2K)
    write("baselines-wide-flip-again", [("classifier", "margin"), ("classifier", "random")], 0.3)
    write(tables.CHOSEN_2K, [("sae", "margin")], 0.2)
    write(later, [("sae", "margin")], 0.21)
    lines = tables.section_summary().splitlines()[2:]
    assert [x.split(" | ")[0:3:2] for x in lines] == [["| **the targets**: the 2k choice, seeds 0-2",
                                                       label[tables.CHOSEN_2K]]]
    write(later, [("sae", "margin")], 0.19)
    lines = tables.section_summary().splitlines()[2:]
    assert [x.split(" | ")[0:3:2] for x in lines] == [
        ["| **the targets**: the 2k choice, seeds 0-2", label[later]],
        ["| the earlier 2k choice, seeds 0-2 (report only)", label[tables.CHOSEN_2K]]]


def test_screens_read_each_lever_against_the_control_paired_by_seed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    monkeypatch.setattr(tables, "PILOTS", [(("base", "base-more"), "nothing"), (("new",), "a lever"),
                                           (("one",), "one seed"), (("absent",), "not run")])
    assert tables.section_pilots() == "_No screens yet._"

    def write(name: str, val: dict[int, dict[int, float]]) -> None:
        path = tmp_path / tables.PILOT / name / "curve.json"
        path.parent.mkdir(parents=True)
        runs = [{"model": "sae", "strategy": "margin", "seed": seed,
                 "curve": [{"labeled": n, "test_error": 0.5, "val_error": v[seed]} for n, v in val.items()]}
                for seed in val[100]]
        path.write_text(json.dumps({"runs": runs}))

    write("base", {100: {5: 0.25}, 200: {5: 0.20}})
    write("base-more", {100: {6: 0.27, 7: 0.23}, 200: {6: 0.22, 7: 0.18}})
    write("new", {100: {5: 0.24, 6: 0.26, 7: 0.25}, 200: {5: 0.215, 6: 0.21, 7: 0.19}})
    write("one", {100: {5: 0.26}, 200: {5: 0.19}})
    lines = tables.section_pilots().splitlines()
    assert lines[2] == "| nothing | 5, 6, 7 | 25.0 ± 2.0 | 20.0 ± 2.0 |  |  |"
    assert lines[3] == "| a lever | 5, 6, 7 | 25.0 ± 1.0 | 20.5 ± 1.3 | +0.0 ± 1.7 | +0.5 ± 1.3 |", "paired by seed"
    assert lines[4] == "| one seed | 5 | 26.0 | 19.0 | +1.0 | -1.0 |", "one seed: no spread, only its shared seed"
    assert "not run" not in "\n".join(lines) and "`protocol-fm10-10k-pilot/base-more/curve.json`" in lines[-1]
    write("absent", {100: {0: 0.3}, 200: {0: 0.2}})
    with pytest.raises(ValueError, match="screens use only"):
        tables.section_pilots()


def test_the_choice_is_also_read_against_baselines_from_its_own_start(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tables, "RESULTS", tmp_path)

    def write(folder: str, name: str, pairs: list[tuple[str, str, float]], seeds: range) -> None:
        path = tmp_path / folder / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": m, "strategy": s, "seed": seed, "curve": [
            {"labeled": n, "test_error": err - 0.0001 * n, "val_error": 0.2} for n in tables.ROUNDS]}
            for m, s, err in pairs for seed in seeds]
        path.write_text(json.dumps({"settings": {}, "runs": runs}))

    random_start, typical_start = next(iter(tables.SAME_START.items()))
    name = tables.CHOSEN_2K
    assert tables.MATCHED_BASELINES[name] == random_start
    baselines = [("classifier", "margin", 0.25), ("classifier", "random", 0.28)]
    write(tables.PROTOCOL, name, [("sae", "margin", 0.22)], range(3))
    write(tables.PROTOCOL, random_start, baselines, range(3))
    best = tables.chosen_lever(tables._protocol_rows(tables.LEVERS))
    base = tables._protocol_rows(tables.BASELINES)
    assert tables.same_start(best, base) == [], "nothing to read before the baselines from the same start ran"
    write(tables.PROTOCOL, typical_start, [("classifier", "margin", 0.24), ("classifier", "random", 0.27)], range(3))
    base = tables._protocol_rows(tables.BASELINES)
    (three,) = tables.same_start(best, base)
    assert three[0] is best and [r.label for r in three[1:]] == [
        label for v, label, _, _ in tables.BASELINES if v == typical_start]
    assert "baselines from the same start, seeds 0-2" in tables.section_protocol()
    rows = [x for x in tables.section_summary().splitlines() if "baselines from its typicality start" in x]
    assert len(rows) == 1 and "+2.00 at 200" in rows[0], "the lead is read against the baselines from the same start"
    write(tables.MORE_SEEDS, name, [("sae", "margin", 0.22)], range(3, 5))
    write(tables.MORE_SEEDS, typical_start, [("classifier", "margin", 0.24), ("classifier", "random", 0.27)],
          range(3, 5))
    assert [x[0].seeds for x in tables.same_start(best, base)] == [[0, 1, 2], [0, 1, 2, 3, 4]]


def test_report_reads_labels_to_reach_where_every_seed_has_a_point_as_the_tables_do() -> None:
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    runs = [{"model": "sae", "strategy": "margin", "seed": 0, "curve": [{"labeled": 100, "test_error": 0.3},
                                                                        {"labeled": 200, "test_error": 0.1}]},
            {"model": "sae", "strategy": "margin", "seed": 1, "curve": [{"labeled": 100, "test_error": 0.3}]}]
    assert report.labels_to_reach(runs, "sae", "margin", 0.2) is None, "seed 1 has no 200-label point"
    runs[1]["curve"].append({"labeled": 200, "test_error": 0.2})
    assert report.labels_to_reach(runs, "sae", "margin", 0.2) == 200


def test_maps_are_chosen_on_validation_by_ece_among_those_no_worse_by_brier(tmp_path, monkeypatch) -> None:
    import types

    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert "Not run yet" in tables.section_calibration_maps("big")
    # (val ECE, val Brier) per map: logistic has the lowest ECE but a worse Brier, so beta is chosen on the held items
    held = {"isotonic": (0.09, 0.12), "logistic": (0.03, 0.13), "beta": (0.05, 0.11)}
    every = {"isotonic": (0.08, 0.12), "logistic": (0.09, 0.11), "beta": (0.10, 0.12)}

    def maps(table: dict, seed: int) -> dict:
        return {m: {s: {"ece": e + 0.001 * seed, "brier": b} for s in ("val", "test")} for m, (e, b) in table.items()}

    def map_readings(path: Path) -> dict:
        seed = int(path.stem.rsplit("-s", 1)[1])
        return {n: {"none": {s: {"ece": 0.2, "brier": 0.2} for s in ("val", "test")}, "held": maps(held, seed),
                    "every label": maps(every, 0)} for n in tables.FM_BUDGETS}

    monkeypatch.setitem(sys.modules, "calibration_maps", types.SimpleNamespace(
        FITTED_ON=("held", "every label"), map_readings=map_readings))

    def write(name: str, probe: bool, test: float = 0.13) -> None:
        path = tmp_path / "big" / name / "curve.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        runs = [{"model": "sae", "strategy": "margin", "seed": seed, "curve": [
            {"labeled": n, "test_error": test + 0.01 * seed, "val_error": 0.12,
             **({"probe": {"check": 0.0 if n > 100 else None, "n_held": n // 10 + seed}} if probe else {})}
            for n in tables.FM_BUDGETS]} for seed in range(3)]
        path.write_text(json.dumps({"settings": {}, "where": {"processor": "cpu X", "cpu_kernels": kernels},
                                    "runs": runs}))
        if probe:
            for seed in range(3):
                (path.parent / f"calibration-readings-s{seed}.npz").write_bytes(b"")

    kernels = "AVX2"
    write(tables.CALIBRATION_MAPS, probe=True)
    text = tables.section_calibration_maps("big")
    assert "| logistic, fitted on the held tenth | -6.0 ± 0.0 | +1.00 ± 0.00 | yes |" in text
    assert "| beta, fitted on the held tenth | -4.0 ± 0.0 | -1.00 ± 0.00 | yes |" in text
    assert "fitted on the held tenth: **beta**; fitted on every label: **isotonic**." in text
    assert "| raw confidence, no map | 20.0 ± 0.0 % |" in text and "| raw confidence, no map | 20.0 ± 0.0 |" in text
    assert "of the model's own kind on the held tenth equals the model's own at 15 of 15 points where" in text
    assert "per seed: 100 labels: 10, 11, 12; 200 labels: 20, 21, 22;" in text
    assert "`big/flip-semi500-lam099-warm5-ema95-calib10-maps/calibration-readings-s0.npz`" in text
    write(tables.CALIBRATION_HOLDOUT[1], probe=False)
    assert "the training's test readings equal the holdout run's" in tables.section_calibration_maps("big")
    assert "at 18 of 18." in tables.section_calibration_maps("big")
    write(tables.CALIBRATION_HOLDOUT[1], probe=False, test=0.15)
    assert "at 0 of 18." in tables.section_calibration_maps("big"), "a training that did not reproduce shows"
    assert "kernels" not in tables.section_calibration_maps("big")
    kernels = "AVX512"
    write(tables.CALIBRATION_HOLDOUT[1], probe=False, test=0.15)
    assert "that run's processor used AVX512 kernels, this one AVX2" in tables.section_calibration_maps("big")
