"""The live-loop tables: the GPU estimate swaps only the model's work out of a measured CPU round."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("loop_tables", ROOT / "benchmarks" / "loop_tables.py")
loop_tables = importlib.util.module_from_spec(spec)
sys.modules["loop_tables"] = loop_tables
spec.loader.exec_module(loop_tables)


def _round(view: float, train: float, score: float, until_view: float) -> dict:
    return {"annotation_to_view_s": view, "training_s": train, "scoring_s": score,
            "push_until_view_s": until_view, "push_s": until_view + 9.0, "push_steps_s": {"bulk_mark": 9.0}}


GPU = {"warm_retrain": {"seconds": 1.0}, "encode_pool": {"seconds": 0.25}, "svm_and_ranking": {"seconds": 0.25},
       "device_name": "GPU", "settings": {"steps": 60}}


def test_gpu_estimate_replaces_training_and_scoring_by_the_gpu_model_work() -> None:
    data = {"rows": [{"tasks": 1000, "rounds": [_round(40.0, 15.0, 10.0, 6.0), _round(30.0, 10.0, 10.0, 6.0),
                                                  _round(50.0, 20.0, 10.0, 6.0)]}]}
    row = loop_tables.gpu_composite_table(data, GPU).splitlines()[2].split("|")
    assert row[2].strip() == "40.0 s" and row[3].strip() == "15.0 s" and row[5].strip() == "6.0 s"
    assert row[6].strip() == "9.0 s", "the rest: view less training, scoring and the push until the view"
    assert row[8].strip() == "16.5 s (16.5, 11.5, 21.5)", "view - training - scoring + 1.5 s of GPU work"


def test_rounds_without_the_split_give_no_estimate() -> None:
    data = {"rows": [{"tasks": 1000, "rounds": [{**_round(40.0, 15.0, 10.0, 6.0), "scoring_s": None}]}]}
    assert loop_tables.gpu_composite_table(data, GPU) == ""


def test_the_view_column_uses_the_push_time_until_the_view_when_recorded() -> None:
    old = {"push_s": 20.0, "push_steps_s": {"bulk_mark": 12.0}}
    assert loop_tables._until_view(old) == 8.0
    assert loop_tables._until_view({**old, "push_until_view_s": 5.0}) == 5.0


def test_the_view_table_shows_the_mark_patches_when_recorded() -> None:
    rounds = [{**_round(40.0, 15.0, 10.0, 6.0), "annotation_to_head_s": 49.0, "marks_written": n} for n in (30, 40, 50)]
    cell = loop_tables.view_table({"rows": [{"tasks": 1000, "warm_steps": 60, "rounds": rounds}]}).splitlines()[2]
    assert cell.split("|")[-2].strip() == "9.0 s (40 PATCHes)"
    old = [{k: v for k, v in r.items() if k != "marks_written"} for r in rounds]
    assert loop_tables.view_table({"rows": [{"tasks": 1000, "warm_steps": 60, "rounds": old}]}).endswith("| 9.0 s |")


def test_write_costs_are_medians_over_the_versions_pushed() -> None:
    row = {"setting": "defaults", "tasks": 60000, "head": 500, "import_head_s": [3.0, 1.0, 2.0],
           "set_model_version_s": [0.2, 0.4, 0.3], "delete_version_s": [1.0, 3.0], "meta_patch_ms_median": 111.8}
    line = loop_tables.write_costs_table({"rows": [row]}).splitlines()[2]
    assert line == "| defaults | 60,000 | 2.00 s (500) | 0.30 s | 2.00 s | not measured | 112 ms | not measured | " \
                   "not measured | not measured |"
    reread = {"meta_reread_ms_median": 21.4, "meta_reread_tasks": 10, "claim_read_ms_median": 12.6,
              "claim_write_ms_median": 80.4, "head_read_s_median": 0.456}
    line = loop_tables.write_costs_table({"rows": [{**row, **reread}]}).splitlines()[2]
    assert line == "| defaults | 60,000 | 2.00 s (500) | 0.30 s | 2.00 s | 21 ms (10 tasks) | 112 ms | 13 ms | " \
                   "80 ms | 0.46 s |"


def test_the_soak_slope_is_read_on_the_second_half_of_the_rounds() -> None:
    rounds = [{"version": f"sae-v{i + 2}", "labeled": 50 + 6 * i, "rss_mb": 500.0 + (50.0 if i < 5 else 0.5 * i),
               "threads": 10, "open_fds": 9, "versions_kept": min(i + 1, 5), "model_dir_bytes": 2_000_000,
               "mirror_json_bytes": 10_000 + 100 * i, "ls_db_bytes": 1_500_000 + 4096 * i, "prediction_rows": 100,
               "seconds": 4.0} for i in range(10)]
    table = loop_tables.soak_table({"rounds": rounds}, points=3)
    lines = table.splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:5]] == ["sae-v2", "sae-v6", "sae-v11"]
    assert "resident memory +50.0 MB" in lines[-1], "0.5 MB a version after the start-up jump, not the jump"
    assert "Label Studio DB +0.41 MB" in lines[-1]
    assert "| `mirror.json` |" in lines[0], "a run from before mirror.db measured the JSON file"
    renamed = [{**{k: v for k, v in r.items() if k != "mirror_json_bytes"}, "mirror_db_bytes": 20_000} for r in rounds]
    table = loop_tables.soak_table({"rounds": renamed}, points=3).splitlines()
    assert "| `mirror.db` |" in table[0] and "| 20 kB |" in table[2]
    assert "writer claim" not in "\n".join(table), "a run from before the claim recorded no views"
    claimed = [{**r, "views": 1 + (i == 7), "took_over": i == 0} for i, r in enumerate(rounds)]
    last = loop_tables.soak_table({"rounds": claimed, "settings": {"lease": 60.0}}, points=3).splitlines()[-1]
    assert last == ("The writer claim (`WRITER_LEASE_SECONDS` 60): the project's views 1 to 2 over the rounds; "
                    "pushes that took the project over 1 of 10.")


def test_the_poll_reads_table_gives_each_way_its_own_medians() -> None:
    rounds = [{"read": how, "poll_s": s, "task_pages": p, "labeled_tasks_read": n, "mirror_matches_label_studio": ok}
              for how, s, p, n, ok in [("changed", 1.0, 3, 12, True), ("all", 9.0, 40, 1000, True),
                                       ("changed", 3.0, 5, 30, False), ("all", 11.0, 42, 1010, True)]]
    table = loop_tables.poll_reads_table({"rows": [{"tasks": 2000, "labeled": 1000, "rounds": rounds}]}).splitlines()
    assert table[2] == "| 2,000 | 1,000 | the tasks saved since the last poll | 21 | 4 | 2.00 s | 2 | 1 of 2 |"
    assert table[3] == "| 2,000 | 1,000 | every labeled task (before) | 1,005 | 41 | 10.00 s | 2 | 2 of 2 |"


def test_the_mirror_saves_table_reads_medians_from_the_raw_repeats() -> None:
    row = {"labeled": 100_000, "db_bytes": 37_000_000, "json_bytes": 32_000_000, "changed_s": [0.03, 0.01, 0.02],
           "changed_rows": [12, 12, 12], "unchanged_s": [0.5, 0.001, 0.002], "json_changed_s": [0.9, 0.8, 1.0],
           "json_unchanged_s": [0.7, 0.7, 0.7], "load_s": [1.7, 1.8, 1.9], "json_load_s": [1.2, 1.3, 1.25],
           "first_save_s": 1.2}
    lines = loop_tables.mirror_saves_table({"rows": [row]}).splitlines()
    assert lines[2] == "| 100,000 | `mirror.db`, what changed (now) | 0.020 s | 0.002 s | 12 | 1.80 s | 37 MB |"
    assert lines[3] == "| 100,000 | `mirror.json`, the whole file (before) | 0.900 s | 0.700 s | all | 1.25 s | 32 MB |"


def _tables(text: str) -> list[str]:
    """Each markdown table in ``text``, its lines stripped of indentation."""
    blocks, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            current.append(line.strip())
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


def test_the_queue_s_part_is_the_queue_push_less_the_view_push_of_the_same_version() -> None:
    rounds = [{"version": v, "view_s": view, "queue_s": queue, "queue_rows": 40, "queue_tasks": 5050}
              for v, view, queue in ((1, 20.0, 25.0), (2, 8.0, 10.5), (3, 9.0, 10.0))]
    data = {"rows": [{"tasks": 60000, "head": 500, "top_k": 50, "queue_seed": 5000, "rounds": rounds,
                      "queue_shows_the_ranking": False, "queue_first": 20}]}
    table = loop_tables.queue_push_table(data)
    assert table.splitlines()[3] == "| 2 | 8.0 s | 10.5 s | +2.5 s | 40 | 5,050 |"
    assert "from the second version on: median +1.8 s" in table and "ranking's order: no." in table


def test_the_new_tasks_table_shows_medians_now_and_before_per_pool() -> None:
    row = {"pool": 5000000, "batch": 100, "append_ms": 0.7, "append_before_ms": 28.35, "find_now_ms": 0.2,
           "find_before_ms": 359.25,
           "merge_now_ms": 0.6, "merge_before_ms": 138.25, "batch_now_ms": 29.15, "batch_before_ms": 525.85,
           "quiet_now_ms": 0.0, "quiet_before_ms": 356.8}
    cells = loop_tables.new_tasks_table({"rows": [row]}).splitlines()[2].split("|")
    assert cells[1].strip() == "5,000,000" and cells[3].strip() == "0.7 / 28.4 ms"
    assert cells[4].strip() == "0.2 / 359.2 ms"
    assert cells[6].strip() == "29.1 / 525.9 ms" and cells[7].strip() == "0.0 / 356.8 ms"


def test_the_pool_gaps_table_sets_the_read_through_against_gathering_and_compacting() -> None:
    row = {"pool": 1000000, "pool_mb": 747.7, "deleted_share": 0.0001, "stretch_s": 1.26, "stretch_peak_mb": 1.04,
           "gather_s": 2.51, "gather_peak_mb": 747.6, "compact_s": 6.04}
    cells = loop_tables.pool_gaps_table({"rows": [row]}).splitlines()[2].split("|")
    assert cells[1].strip() == "1,000,000 (748 MB)" and cells[2].strip() == "0.01 %"
    assert cells[3].strip() == "1.3 s, 1 MB" and cells[4].strip() == "2.5 s, 748 MB"
    assert cells[5].strip() == "6.0 s + the read"


def test_every_readme_table_of_a_kind_this_script_prints_is_one_it_prints(capsys) -> None:
    """The live-loop, soak and speed tables are pasted by hand: a table edited or left behind fails here."""
    loop_tables.main()
    printed = _tables(capsys.readouterr().out)
    headers = {b.splitlines()[0] for b in printed}
    pasted = [b for b in _tables((ROOT / "README.md").read_text()) if b.splitlines()[0] in headers]
    assert len(pasted) >= 15
    stale = [b.splitlines()[0][:60] + " ..." for b in pasted if b not in printed]
    assert stale == [], "run python benchmarks/loop_tables.py and paste the tables again"
