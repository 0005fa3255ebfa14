"""Service settings from the environment and an optional ``.env`` (pydantic-settings).

Names follow what Label Studio ML backend users already know (``LABEL_STUDIO_URL``,
``LABEL_STUDIO_API_KEY``, ``MODEL_DIR``, ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


@dataclass(frozen=True)
class SAESettings:
    """The autoencoder settings a training job carries: plain data, the service's ``SAE_*`` settings.

    A field here with its ``sae_<field>`` setting below is all a new one needs: those the autoencoder
    takes as they are (:data:`~model.sae_classifier.PASSED_SAE_PARAMS`) reach every training.
    """

    epochs: int = 30
    warm_epochs: int = 10
    latent_dim: int = 10
    lam: float = 0.9
    max_shift: int = 0
    warm_steps: int | None = None
    channels: tuple[int, ...] = (32, 64, 128)
    flip: bool = False
    self_training: float = 0.0
    self_training_threshold: float = 0.9
    consistency: float = 0.0
    semi_supervised_from: int = 0
    test_time_flip: bool = False
    mixup: float = 0.0
    ema_decay: float = 0.0
    calibration_holdout: float = 0.0


_SAE_SETTING = {"lam": "sae_lambda"}  # SAESettings fields whose setting is not SAE_<FIELD>


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False, env_ignore_empty=True)

    label_studio_url: str | None = None
    label_studio_api_key: SecretStr | None = None
    model_dir: Path = Path("model_store")
    basic_auth_user: str | None = None
    basic_auth_pass: SecretStr | None = None

    retrain_min_new_labels: int = Field(10, ge=1)
    retrain_debounce_seconds: float = Field(5.0, ge=0)
    retrain_max_delay_seconds: float = Field(120.0, ge=0)
    poll_interval_seconds: float = Field(60.0, gt=0)
    retrain_cron: str | None = None
    push_top_k: int = Field(50, ge=0)
    push_head: int = Field(500, ge=0)
    query_strategy: str = "margin"
    cold_start: Literal["typicality", "none"] = "typicality"
    reconcile_full_scan_seconds: float = Field(86400.0, gt=0)
    stop_set_size: int = Field(2000, ge=10)
    stop_kappa: float = Field(0.99, gt=0, le=1)
    push_mode: Literal["view", "queue"] = "view"
    backend_url: str | None = None
    data_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    device: str = "auto"
    training_backend: Literal["local", "ray"] = "local"
    training_concurrency: int = Field(1, ge=1, le=64)
    ray_address: str | None = None
    ray_num_cpus: float = Field(1.0, ge=0)
    ray_num_gpus: float = Field(0.0, ge=0)
    ray_max_retries: int = Field(2, ge=0)
    ray_score_shard_size: int = Field(100_000, ge=1)
    ray_wait_for_resources_seconds: float = Field(600.0, gt=0)

    sae_epochs: int = Field(30, ge=1)
    sae_warm_epochs: int = Field(10, ge=1)
    sae_latent_dim: int = Field(10, ge=1)
    sae_lambda: float = Field(0.9, ge=0, le=1)
    sae_max_shift: int = Field(0, ge=0, le=64)
    sae_flip: bool = False
    sae_self_training: float = Field(0.0, ge=0)
    sae_self_training_threshold: float = Field(0.9, ge=0, le=1)
    sae_consistency: float = Field(0.0, ge=0)
    sae_semi_supervised_from: int = Field(0, ge=0)
    sae_test_time_flip: bool = False
    sae_mixup: float = Field(0.0, ge=0)
    sae_ema_decay: float = Field(0.0, ge=0, lt=1)
    sae_calibration_holdout: float = Field(0.0, ge=0, lt=1)
    sae_warm_steps: int | None = Field(None, ge=1)
    sae_channels: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [32, 64, 128])
    class_distances: FilePath | None = None
    image_size: int | None = Field(None, ge=4, le=512)
    image_bit_depth: int | None = Field(None, ge=9, le=16)
    fetch_timeout_seconds: float = Field(10.0, gt=0)
    fetch_max_bytes: int = Field(20_000_000, gt=0)
    push_retries: int = Field(6, ge=1)
    writer_lease_seconds: float = Field(3600.0, ge=0)
    keep_versions: int = Field(10, ge=1)

    @field_validator("data_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return [h.strip() for h in v.split(",") if h.strip()]
        return v

    @field_validator("sae_channels", mode="before")
    @classmethod
    def _split_channels(cls, v: object) -> object:
        if isinstance(v, str):
            return [int(c) for c in v.split(",") if c.strip()]
        return v

    @field_validator("sae_channels")
    @classmethod
    def _channels(cls, v: list[int]) -> list[int]:
        if not v or any(c < 1 for c in v):
            raise ValueError("SAE_CHANNELS must be comma-separated positive integers, e.g. 16,32,64")
        return v

    @field_validator("image_size")
    @classmethod
    def _image_side(cls, v: int | None) -> int | None:
        """Sides from 8 to 128 are used; the range once documented (4-512) still starts, at the nearest side."""
        if v is not None and not 8 <= v <= 128:
            side = min(max(v, 8), 128)
            logging.getLogger("sae_backend").warning("IMAGE_SIZE=%s is outside 8-128: images become %s pixels square",
                                                     v, side)
            return side
        return v

    @field_validator("model_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        """Jobs carry paths under it to Ray workers, which resolve a relative one against their own directory."""
        return v.expanduser().resolve()

    @field_validator("class_distances")
    @classmethod
    def _distances_file(cls, v: Path | None) -> Path | None:
        """A file that is not a JSON object fails at start; whether it names a project's classes, at its training."""
        if v is not None:
            try:
                raw = json.loads(v.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"CLASS_DISTANCES: cannot read {v} as JSON: {e}") from None
            if not isinstance(raw, dict):
                raise ValueError("CLASS_DISTANCES must hold a JSON object: {class: {class: distance}} or "
                                 "{\"classes\": [...], \"distances\": [[...]]}")
        return v

    def basic_auth_header(self) -> dict[str, str]:
        """What Label Studio must send along to reach this backend when basic auth is on (none otherwise)."""
        if not self.basic_auth_user or self.basic_auth_pass is None:
            return {}
        token = base64.b64encode(f"{self.basic_auth_user}:{self.basic_auth_pass.get_secret_value()}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def sae_settings(self) -> SAESettings:
        """The autoencoder settings a training job carries: each ``SAESettings`` field from its ``SAE_*`` setting."""
        value = {f.name: getattr(self, _SAE_SETTING.get(f.name, "sae_" + f.name)) for f in fields(SAESettings)}
        return SAESettings(**{**value, "channels": tuple(value["channels"])})

    @field_validator("query_strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        from model.acquisition import get_strategy

        try:
            get_strategy(v)
        except (ValueError, TypeError) as e:
            raise ValueError(f"QUERY_STRATEGY: {e}") from None
        return v

    @model_validator(mode="after")
    def _consistency_needs_augmentation(self) -> Settings:
        if self.sae_consistency > 0 and self.sae_max_shift == 0 and not self.sae_flip:
            raise ValueError("SAE_CONSISTENCY compares two augmentations of a task: set SAE_MAX_SHIFT or SAE_FLIP too")
        return self

    @model_validator(mode="after")
    def _head_covers_marks(self) -> Settings:
        if self.push_head < self.push_top_k:
            raise ValueError("PUSH_HEAD must be at least PUSH_TOP_K (the marked tasks are the head's first)")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        """Only the form: with Ray the GPU may be on another machine than this one."""
        if v not in ("auto", "cpu", "mps", "cuda") and not re.fullmatch(r"cuda:\d+", v):
            raise ValueError(f"DEVICE must be auto, cpu, cuda, cuda:N or mps, not {v!r}")
        return v

    @field_validator("label_studio_url", "backend_url")
    @classmethod
    def _http_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        """A URL without its scheme would start, then fail every poll and every read of a task."""
        if v:
            u = urlsplit(v.strip())
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"{info.field_name.upper()} must be http(s)://host[:port][/path], not {v!r}")
        return (v or "").strip() or None

    @field_validator("retrain_cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v:
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(v)
        return v or None

    @model_validator(mode="after")
    def _auth_pair(self) -> Settings:
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise ValueError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.basic_auth_pass is not None and not (
                f"{self.basic_auth_user}{self.basic_auth_pass.get_secret_value()}".isascii()):
            raise ValueError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be ASCII: Label Studio sends them in latin-1 "
                             "and the backend reads ASCII, so no request could log in")
        if self.label_studio_api_key and not self.label_studio_url:
            raise ValueError("LABEL_STUDIO_API_KEY goes only to the server LABEL_STUDIO_URL names: set it too (without "
                             "it, the key would go to whatever hostname a /setup call names)")
        return self

    def api_key(self) -> str | None:
        return self.label_studio_api_key.get_secret_value() if self.label_studio_api_key else None


def settings_error_line(err: Exception) -> str:
    """One line naming each bad variable, for start-up failures."""
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors():
            name = ".".join(str(p) for p in e["loc"]).upper() or "settings"
            parts.append(f"{name}: {e['msg']}")
        return "invalid settings: " + "; ".join(parts)
    return f"invalid settings: {err}"
