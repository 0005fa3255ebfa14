"""One writer per project: a lease this backend holds in its own Label Studio view, renewed by its pushes and polls.

Two backends with their own ``MODEL_DIR`` on one project would delete each other's predictions (each takes the
other's ``sae-vN`` rows for its own earlier ones) and overwrite each other's marks. Label Studio has no lock and
no compare-and-set, so the claim is a lease in the data of the backend's view ("Most uncertain first"): which
install wrote last, and when. A push writes only while no other install holds a claim younger than the lease; the
holder renews its own once half the lease has passed, and reads a claim it wrote back, so of two backends claiming
at once the one that wrote first yields (at worst both write one version, and the first to read the other's fresh
claim stops). A backend that stops polling for longer than the lease, or whose ``MODEL_DIR`` was lost, is taken
over.

Label Studio's Data Manager page saves a tab's data without keys it does not know, so a person who edits the tab
erases the claim. A backend that has yielded remembers the claim it last saw and keeps yielding to it for the
lease; the holder writes its claim again at its next poll. One that takes over from another install is told so
before it writes its claim (``Writer.taken``), since what the other wrote (rows, marks) is not what its own records
say.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connectors.label_studio import VIEW_MARK, LabelStudioClient

WRITER_KEY = "sae_backend_writer"
INSTALL_FILE = "install-id"


def install_id(model_dir: Path | str) -> str:
    """This ``MODEL_DIR``'s name in claims: made once, kept across restarts and upgrades (backed up with it)."""
    path = Path(model_dir) / INSTALL_FILE
    try:
        if known := path.read_text().strip():
            return known
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


@dataclass(frozen=True)
class Writer:
    """Who pushes: this install, the other install's claim it last yielded to (None: none), and what to call the
    moment it takes over from another install (to record that what it knows of the project is stale)."""

    install: str
    seen: Claim | None = None
    taken: Callable[[], None] | None = None


@dataclass(frozen=True)
class Turn:
    """A claim's outcome: ``other`` holds the project (nothing was written), or this install may write, and
    ``took_over`` says it replaced another install's claim."""

    other: Claim | None = None
    took_over: bool = False


def claim_writer(client: LabelStudioClient, project_id: int, writer: Writer, lease_seconds: float, now: float,
                 view: tuple[str, dict, list[str]], call: Callable = lambda fn, *a, **k: fn(*a, **k)) -> Turn:
    """Claim (or renew) the project for ``writer``; ``view`` is the view's title, filters and ordering, should
    it be new; ``call`` runs each Label Studio request (a push retries them one by one, so a retry after the claim
    was written still knows whose claim it replaced). A claim dated more than a lease ahead (a clock far off, or an
    edit) counts as none."""
    def live(c: Claim | None) -> bool:
        return c is not None and c.install != writer.install and -lease_seconds < now - c.at < lease_seconds

    held = call(Claim.read, client, project_id)
    if live(held):
        return Turn(other=held)
    if held is None and live(writer.seen):  # erased by an edit of the tab: the claim last seen still holds
        return Turn(other=writer.seen)
    if held is not None and held.install == writer.install and 0 <= now - held.at < lease_seconds / 2:
        return Turn()
    before = held if held is not None else writer.seen
    took_over = before is not None and before.install != writer.install
    if took_over and writer.taken is not None:  # before anything is written: a push cut short still knows
        writer.taken()
    call(client.ensure_view, project_id, *view, extra={WRITER_KEY: Claim(writer.install, now).as_dict()})
    again = call(Claim.read, client, project_id)
    if again is not None and again.install != writer.install:
        return Turn(other=again)
    return Turn(took_over=took_over)


def keep_claim(client: LabelStudioClient, project_id: int, writer: Writer, lease_seconds: float, now: float,
               view: tuple[str, dict, list[str]]) -> Claim | None:
    """Between pushes (at every poll): renew this install's claim once half the lease has passed, or write it again
    where an edit of the tab erased it, unless it yields to ``writer.seen``. Returns another install's live claim
    (nothing written), else None. Never takes over: that is a push's, which knows what to forget."""
    held = Claim.read(client, project_id)
    if held is not None and held.install != writer.install:
        return held if -lease_seconds < now - held.at < lease_seconds else None
    if writer.seen is not None and writer.seen.install != writer.install:
        return None  # it yields: the claim erased, or lapsed, is the next push's to take over
    if held is None or not 0 <= now - held.at < lease_seconds / 2:
        client.ensure_view(project_id, *view, extra={WRITER_KEY: Claim(writer.install, now).as_dict()})
    return None
