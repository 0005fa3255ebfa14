"""The Label Studio process environment: the fixture's own settings, plus what an operator adds."""

from __future__ import annotations

from connectors.label_studio_server import LabelStudioServer


def test_extra_env_reaches_the_process_and_outside_label_studio_settings_do_not(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_PORT", "1")
    env = LabelStudioServer(tmp_path, env={"fflag_x": "true"})._env()
    assert env["fflag_x"] == "true"
    assert "LABEL_STUDIO_PORT" not in env and env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path.resolve())
    assert "fflag_x" not in LabelStudioServer(tmp_path)._env()
