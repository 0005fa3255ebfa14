"""Settings: the names Label Studio users know, and one clear line for anything invalid."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.cli import main
from service.settings import Settings, settings_error_line


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://ls:8080")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-token")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("PUSH_MODE", "queue")
    monkeypatch.setenv("DATA_ALLOWED_HOSTS", "images.example.com, cdn.example.com:8443")
    s = Settings()
    assert s.label_studio_url == "http://ls:8080" and s.api_key() == "secret-token"
    assert s.push_mode == "queue" and s.model_dir == tmp_path
    assert s.data_allowed_hosts == ["images.example.com", "cdn.example.com:8443"]
    assert "secret-token" not in repr(s)


def test_sae_settings_travel_as_one_plain_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAE_CHANNELS", "16, 32,64")
    monkeypatch.setenv("SAE_WARM_STEPS", "150")
    monkeypatch.setenv("SAE_FLIP", "true")
    sae = Settings().sae_settings()
    assert sae.channels == (16, 32, 64) and sae.warm_steps == 150 and sae.lam == 0.9 and sae.flip is True
    assert Settings(sae_flip=False).sae_settings().flip is False
    semi = Settings(sae_self_training=0.3, sae_self_training_threshold=0.8, sae_consistency=1.0, sae_flip=True,
                    sae_semi_supervised_from=500).sae_settings()
    assert (semi.self_training, semi.self_training_threshold, semi.consistency, semi.semi_supervised_from) == (
        0.3, 0.8, 1.0, 500)
    assert Settings().sae_settings().self_training == 0.0, "off unless asked for"
    assert Settings(sae_test_time_flip=True).sae_settings().test_time_flip
    assert not Settings().sae_settings().test_time_flip
    assert Settings(sae_mixup=0.5).sae_settings().mixup == 0.5 and Settings().sae_settings().mixup == 0.0
    with pytest.raises(ValidationError):
        Settings(sae_mixup=-1)
    assert Settings(sae_ema_decay=0.95).sae_settings().ema_decay == 0.95 and Settings().sae_settings().ema_decay == 0
    for bad in (1.0, -0.1):
        with pytest.raises(ValidationError, match="sae_ema_decay"):
            Settings(sae_ema_decay=bad)


def test_the_head_must_cover_the_marks() -> None:
    with pytest.raises(ValueError, match="PUSH_HEAD"):
        Settings(push_head=10, push_top_k=50)


@pytest.mark.parametrize(("env", "named"), [
    ({"PUSH_MODE": "email"}, "PUSH_MODE"),
    ({"RETRAIN_MIN_NEW_LABELS": "0"}, "RETRAIN_MIN_NEW_LABELS"),
    ({"RETRAIN_CRON": "every day"}, "RETRAIN_CRON"),
    ({"SAE_LAMBDA": "1.5"}, "SAE_LAMBDA"),
    ({"SAE_MAX_SHIFT": "-1"}, "SAE_MAX_SHIFT"),
    ({"BASIC_AUTH_USER": "ann"}, "BASIC_AUTH_PASS"),
    ({"BASIC_AUTH_USER": "ann", "BASIC_AUTH_PASS": "pässword"}, "BASIC_AUTH_PASS"),
    ({"LABEL_STUDIO_API_KEY": "a-key"}, "LABEL_STUDIO_URL"),
    ({"QUERY_STRATEGY": "loudest"}, "QUERY_STRATEGY"),
    ({"QUERY_STRATEGY": "typicality-margin:until"}, "QUERY_STRATEGY"),
    ({"QUERY_STRATEGY": "margin:until=3"}, "QUERY_STRATEGY"),
    ({"SAE_CHANNELS": "16,0"}, "SAE_CHANNELS"),
    ({"IMAGE_SIZE": "600"}, "IMAGE_SIZE"),
    ({"SAE_WARM_STEPS": "0"}, "SAE_WARM_STEPS"),
    ({"SAE_SELF_TRAINING_THRESHOLD": "1.5"}, "SAE_SELF_TRAINING_THRESHOLD"),
    ({"SAE_SEMI_SUPERVISED_FROM": "-1"}, "SAE_SEMI_SUPERVISED_FROM"),
    ({"SAE_CONSISTENCY": "-0.5"}, "SAE_CONSISTENCY"),
    ({"SAE_CONSISTENCY": "1"}, "SAE_CONSISTENCY"),
    ({"LABEL_STUDIO_URL": "localhost:8080"}, "LABEL_STUDIO_URL"),
    ({"BACKEND_URL": "sae-backend:9090"}, "BACKEND_URL"),
    ({"DEVICE": "cuda:abc"}, "DEVICE"),
])
def test_invalid_settings_give_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict,
                                                            named: str) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(Exception) as e:
        Settings()
    line = settings_error_line(e.value)
    assert "\n" not in line and named in line


@pytest.mark.parametrize(("content", "message"), [
    (None, "CLASS_DISTANCES"), ("{not json", "cannot read"), ("[[0, 1], [1, 0]]", "must hold a JSON object")])
def test_a_class_distance_file_that_cannot_serve_any_project_fails_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                                          content: str | None, message: str) -> None:
    path = tmp_path / "distances.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("CLASS_DISTANCES", str(path))
    with pytest.raises(Exception) as e:
        Settings()
    line = settings_error_line(e.value)
    assert "\n" not in line and message in line and "CLASS_DISTANCES" in line.upper()


def test_a_readable_class_distance_file_is_kept_as_its_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    path = tmp_path / "distances.json"
    path.write_text('{"cat": {"dog": 1, "bird": 2}, "dog": {"bird": 2}}')
    monkeypatch.setenv("CLASS_DISTANCES", str(path))
    assert Settings().class_distances == path and Settings(class_distances=None).class_distances is None


def test_serve_refuses_to_start_on_invalid_settings(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("PUSH_TOP_K", "-3")
    assert main(["serve", "--port", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PUSH_TOP_K" in err[0]


def test_model_dir_is_made_absolute_so_remote_jobs_resolve_it_alike(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(model_dir="model_store").model_dir == tmp_path.resolve() / "model_store"


def test_query_strategy_takes_a_strategy_with_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERY_STRATEGY", "typicality-margin:until=500")
    assert Settings().query_strategy == "typicality-margin:until=500"


@pytest.mark.parametrize(("value", "side"), [("4", 8), ("256", 128), ("28", 28)])
def test_an_image_side_outside_8_to_128_is_taken_at_the_nearest_and_said(monkeypatch: pytest.MonkeyPatch, caplog,
                                                                          value: str, side: int) -> None:
    """4-512 was once documented: such a deployment still starts, and its log says which side it gets."""
    monkeypatch.setenv("IMAGE_SIZE", value)
    assert Settings().image_size == side
    assert (f"IMAGE_SIZE={value} is outside 8-128" in caplog.text) == (value != "28")
