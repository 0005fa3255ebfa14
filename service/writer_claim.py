"""One writer per project: a lease this backend holds in its own Label Studio view, renewed by its pushes and polls.

Two backends with their own ``MODEL_DIR`` on one project would delete each other's predictions (each takes the
other's ``sae-vN`` rows for its own earlier ones) and overwrite each other's marks. Label Studio has no lock and
no compare-and-set, so the claim is a lease in the data of the backend's view ("Most uncertain first"): which
install wrote last, and when. A push writes only while no other install holds a claim younger than the lease; every
push writes its claim, the holder's polls renew it once half the lease has passed, and an install reads a claim it
wrote back, so of two backends claiming
at once the one that wrote first yields (at worst both write one version, and the first to read the other's fresh
claim stops). A backend that stops polling for longer than the lease, or whose ``MODEL_DIR`` was lost, is taken
over; the claim it finds on its return is still its own if nobody took it meanwhile, and then it goes on as the
holder (``Writer.left_alone``).

Label Studio's Data Manager page saves a tab's data without keys it does not know, so a person who edits the tab
erases the claim. Every install reads the claim at its polls and goes by the one it last read; the holder writes
its own again at its next poll. A push that takes the project over (from another install, or after a lease without
holding it) is told so before it writes its claim (``Writer.taken``), since what others wrote (rows, marks) may not
be what its own records say.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from connectors.label_studio import LabelStudioClient, marked_views
from service.pool_store import replacing

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
    with replacing(path, f".{os.getpid()}.tmp") as fh:  # lost in a power cut, a new name would take over its own
        fh.write(uuid.uuid4().hex[:12].encode())
    return path.read_text().strip()


def _direct(fn: Callable, *args, **kwargs) -> object:
    """A Label Studio request run once, as a poll runs it (a push passes its retrying stepper instead)."""
    return fn(*args, **kwargs)


@dataclass(frozen=True)
class Claim:
    install: str
    at: float

    @classmethod
    def read(cls, client: LabelStudioClient, project_id: int) -> Claim | None:
        """The claim on this backend's view (the one ``ensure_view`` keeps: the lowest id), if any."""
        ours = marked_views(client.list_views(project_id))
        raw = (ours[0].get("data") or {}).get(WRITER_KEY) if ours else None
        try:
            return cls(str(raw["install"]), float(raw["at"]))
        except (TypeError, KeyError, ValueError):
            return None  # none yet, or a value a person edited: no claim

    def as_dict(self) -> dict:
        return {"install": self.install, "at": self.at}


@dataclass(frozen=True)
class Writer:
    """Who pushes: this install, the last claim it read in Label Studio (any install's; None: never read one), and
    what to call the moment it takes the project over (to record that what it knows of the project is stale)."""

    install: str
    seen: Claim | None = None
    taken: Callable[[], None] | None = None

    def live_other(self, claim: Claim | None, lease_seconds: float, now: float) -> bool:
        """Another install's claim within the lease (a claim dated more than a lease ahead counts as none)."""
        return claim is not None and claim.install != self.install and -lease_seconds < now - claim.at < lease_seconds

    def held_lately(self, claim: Claim | None, lease_seconds: float, now: float) -> bool:
        """This install's own claim, within the lease: it still held the project then."""
        return claim is not None and claim.install == self.install and 0 <= now - claim.at < lease_seconds

    def left_alone(self, claim: Claim | None) -> bool:
        """Label Studio holds this install's own claim exactly as it last read it, however old: nobody claimed the
        project since (every writer claims first), and what this install recorded is as new as that claim. A
        backend stopped overnight goes on as the holder; one restored from an older backup of ``MODEL_DIR``
        recorded an older claim, and takes over."""
        return claim is not None and claim.install == self.install and claim == self.seen


@dataclass(frozen=True)
class Turn:
    """A claim's outcome: ``other`` holds the project (nothing was written), or this install may write, and
    ``took_over`` says it did not hold the project within the lease (``replaced``: the other install's claim it
    replaced, if one was there), so what it knows of the project may be stale. ``seen``: the claim Label Studio holds
    now, as far as this install knows."""

    seen: Claim | None
    other: Claim | None = None
    took_over: bool = False
    replaced: Claim | None = None


def claim_writer(client: LabelStudioClient, project_id: int, writer: Writer, lease_seconds: float, now: float,
                 view: tuple[str, dict, list[str]], call: Callable = _direct) -> Turn:
    """A push's claim (or renewal) of the project for ``writer``; ``view`` is the view's title, filters and ordering,
    should it be new; ``call`` runs each Label Studio request (a push retries them one by one, so a retry after the
    claim was written still knows what it replaced).

    Every push writes its claim, fresh or not: what an install records after a push is then exactly as new as the
    claim Label Studio holds, which is what ``Writer.left_alone`` relies on (a backup of ``MODEL_DIR`` taken before a
    later push finds a newer claim of its own on restore, and takes over)."""
    held = call(Claim.read, client, project_id)
    if writer.live_other(held, lease_seconds, now):
        return Turn(held, other=held)
    if held is None and writer.live_other(writer.seen, lease_seconds, now):  # erased by an edit of the tab
        return Turn(writer.seen, other=writer.seen)
    before = held if held is not None else writer.seen
    took_over = not (writer.held_lately(before, lease_seconds, now) or writer.left_alone(held))
    if took_over and writer.taken is not None:  # before anything is written: a push cut short still knows
        writer.taken()
    now_held = _write(client, project_id, writer.install, now, view, call)
    if now_held is not None and now_held.install != writer.install:
        return Turn(now_held, other=now_held)
    replaced = before if before is not None and before.install != writer.install else None
    return Turn(Claim(writer.install, now), took_over=took_over, replaced=replaced)


def keep_claim(client: LabelStudioClient, project_id: int, writer: Writer, lease_seconds: float, now: float,
               view: tuple[str, dict, list[str]]) -> Claim | None:
    """Between pushes (at every poll, of every install): the claim Label Studio holds now, as far as this install
    knows. The holder renews its claim once half the lease has passed, and writes it again where an edit of the tab
    erased it, if it held the project within the lease; nobody else writes here: taking over is a push's, which
    knows what to forget."""
    held = Claim.read(client, project_id)
    if held is None:
        if not writer.held_lately(writer.seen, lease_seconds, now):
            return writer.seen  # erased: the claim last read stands (another's, or none yet)
    elif not (writer.held_lately(held, lease_seconds, now) or writer.left_alone(held)) \
            or writer.held_lately(held, lease_seconds / 2, now):
        return held  # another's; its own from over a lease ago, changed since (a push takes it anew); or still fresh
    return _write(client, project_id, writer.install, now, view)


def _write(client: LabelStudioClient, project_id: int, install: str, now: float, view: tuple[str, dict, list[str]],
           call: Callable = _direct) -> Claim | None:
    """Write ``install``'s claim and read back what holds: of two written at once, the later one."""
    call(client.ensure_view, project_id, *view, extra={WRITER_KEY: Claim(install, now).as_dict()})
    return call(Claim.read, client, project_id)
