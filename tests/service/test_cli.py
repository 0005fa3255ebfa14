"""The command line refuses bad options in one line, before anything starts."""

from __future__ import annotations

import pytest

from service.cli import main


@pytest.mark.parametrize(("args", "message"), [
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--tasks", "10"], "--tasks 10 is too few"),
    (["--tasks", "-5"], "--tasks -5 is too few"),
    (["--rounds", "2", "--per-round", "20", "--tasks", "70"], "--tasks 70 is too few"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--warm-epochs", "-3"], "--warm-epochs must be >= 1"),
])
def test_demo_refuses_options_it_cannot_run_before_starting_label_studio(args, message, capsys, monkeypatch) -> None:
    import service.demo

    monkeypatch.setattr(service.demo, "run_demo", lambda s: pytest.fail("the demo must not start"))
    assert main(["demo", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_demo_runs_with_just_enough_tasks(monkeypatch) -> None:
    import service.demo

    seen = []
    monkeypatch.setattr(service.demo, "run_demo", seen.append)
    assert main(["demo", "--rounds", "2", "--per-round", "20", "--tasks", "75"]) == 0  # 75 - 15 = 60 = 3 x 20
    assert seen[0].tasks == 75


def test_serve_refuses_an_unknown_log_level(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["serve", "--log-level", "trace"])
    assert e.value.code == 2 and "--log-level" in capsys.readouterr().err


def test_the_demo_knows_each_item_s_task_by_its_file_name_whatever_the_import_order() -> None:
    from types import SimpleNamespace

    from service.demo import tasks_of_items

    tasks = [{"id": 30 + i, "data": {"image": f"/data/upload/4/ab12cd-item{i:06d}.png"}} for i in (2, 0, 1)]
    client = SimpleNamespace(iter_tasks=lambda pid, fields: iter(tasks))
    assert tasks_of_items(client, 4, 3) == [30, 31, 32]
    with pytest.raises(RuntimeError, match="item 3"):
        tasks_of_items(client, 4, 4)
