"""One writer per project: a lease this backend holds in its own Label Studio view, renewed by its pushes.

Two backends with their own ``MODEL_DIR`` on one project would delete each other's predictions (each takes the
other's ``sae-vN`` rows for its own earlier ones) and overwrite each other's marks. Label Studio has no lock and
no compare-and-set, so the claim is a lease in the data of the backend's view ("Most uncertain first"): which
install wrote last, and when. A push writes only while no other install holds a claim younger than the lease; it
renews its own once half the lease has passed, and reads a claim it wrote back, so of two backends claiming at
once the one that wrote first yields (at worst both write one version, and the first to read the other's fresh
claim stops). A backend stopped for longer than the lease, or whose ``MODEL_DIR`` was lost, is taken over.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from connectors.label_studio import VIEW_MARK, LabelStudioClient

WRITER_KEY = "sae_backend_writer"
INSTALL_FILE = "install-id"


def install_id(model_dir: Path | str) -> str:
    """This ``MODEL_DIR``'s name in claims: made once, kept across restarts and upgrades (backed up with it)."""
    path = Path(model_dir) / INSTALL_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{INSTALL_FILE}.{os.getpid()}")
    tmp.write_text(uuid.uuid4().hex[:12])
    tmp.replace(path)
    return path.read_text().strip()


@dataclass(frozen=True)
class Claim:
    install: str
    at: float

    @classmethod
    def read(cls, client: LabelStudioClient, project_id: int) -> Claim | None:
        """The claim on this backend's view (the one ``ensure_view`` keeps: the lowest id), if any."""
        ours = sorted((v for v in client.list_views(project_id) if (v.get("data") or {}).get(VIEW_MARK)),
                      key=lambda v: int(v["id"]))
        raw = (ours[0].get("data") or {}).get(WRITER_KEY) if ours else None
        try:
            return cls(str(raw["install"]), float(raw["at"]))
        except (TypeError, KeyError, ValueError):
            return None  # none yet, or a value a person edited: no claim

    def as_dict(self) -> dict:
        return {"install": self.install, "at": self.at}


def claim_writer(client: LabelStudioClient, project_id: int, install: str, lease_seconds: float, now: float,
                 view: tuple[str, dict, list[str]]) -> Claim | None:
    """Claim (or renew) the project for ``install``'s writes: None when it may write, else the other install's
    live claim, and nothing was written. ``view`` is the view's title, filters and ordering, should it be new."""
    held = Claim.read(client, project_id)
    if held is not None and held.install != install and now - held.at < lease_seconds:
        return held
    if held is not None and held.install == install and now - held.at < lease_seconds / 2:
        return None
    client.ensure_view(project_id, *view, extra={WRITER_KEY: Claim(install, now).as_dict()})
    again = Claim.read(client, project_id)
    return again if again is not None and again.install != install else None
