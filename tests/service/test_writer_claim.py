"""One writer per project: the claim in the backend's view (a real Label Studio in tests/integration)."""

from __future__ import annotations

from service.writer_claim import WRITER_KEY, Claim, Turn, Writer, claim_writer, install_id

VIEW = ("Most uncertain first", {}, ["tasks:predictions_score"])


class Views:
    """Label Studio's views of one project, as far as the claim reads and writes them."""

    def __init__(self, claim: dict | None = None, racer: dict | None = None) -> None:
        self.views = [{"id": 3, "data": {"title": "a team's tab"}}]
        if claim is not None:
            self.views.append({"id": 7, "data": {"sae_backend": True, WRITER_KEY: claim}})
        self.racer = racer  # another backend's claim, written just after this one's
        self.writes = 0

    def list_views(self, pid):
        return self.views

    def ensure_view(self, pid, title, filters, ordering, extra=None):
        self.writes += 1
        ours = [v for v in self.views if v["data"].get("sae_backend")]
        if not ours:
            ours = [{"id": 9, "data": {"sae_backend": True, "title": title}}]
            self.views.append(ours[0])
        ours[0]["data"].update(extra or {})
        if self.racer is not None:
            ours[0]["data"][WRITER_KEY] = self.racer
        return ours[0]["id"]


def test_an_install_keeps_its_id_and_another_model_dir_has_another(tmp_path) -> None:
    first = install_id(tmp_path / "a")
    assert first == install_id(tmp_path / "a") and len(first) == 12
    assert install_id(tmp_path / "b") != first


def test_a_new_install_id_is_on_disk_before_it_is_used(tmp_path, monkeypatch) -> None:
    """A power cut must not lose a name already written into a claim: the backend would take over its own."""
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    made = install_id(tmp_path)
    assert any(p.endswith(".tmp") for p in synced), "the id's content is synced before its rename"
    assert str(tmp_path) in synced, "and the rename itself"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["install-id"] and made


def outcome(turn: Turn) -> tuple:
    return turn.other, turn.took_over, turn.replaced


MINE = Writer("mine")


def test_the_first_claim_is_a_takeover_of_what_nobody_held() -> None:
    """A new install knows nothing of the project yet; one upgraded to claims reads its marks once."""
    views = Views()
    turn = claim_writer(views, 1, MINE, 3600, 1000.0, VIEW)
    assert outcome(turn) == (None, True, None) and turn.seen == Claim("mine", 1000.0)
    assert Claim.read(views, 1) == Claim("mine", 1000.0) and views.views[0]["data"] == {"title": "a team's tab"}


def test_another_install_s_live_claim_is_left_alone_and_nothing_is_written() -> None:
    views = Views({"install": "theirs", "at": 1000.0})
    assert outcome(claim_writer(views, 1, MINE, 3600, 1000.0 + 3599, VIEW)) == (Claim("theirs", 1000.0), False, None)
    assert views.writes == 0


def test_a_claim_older_than_the_lease_is_taken_over_and_says_from_whom() -> None:
    views = Views({"install": "theirs", "at": 1000.0})
    assert outcome(claim_writer(views, 1, MINE, 3600, 1000.0 + 3601, VIEW)) == (None, True, Claim("theirs", 1000.0))
    assert Claim.read(views, 1) == Claim("mine", 4601.0)


def test_every_push_writes_its_own_claim_and_is_no_takeover_within_the_lease() -> None:
    """Written at every push, the claim is as new as what the install recorded (see the backup test below)."""
    views = Views({"install": "mine", "at": 1000.0})
    assert outcome(claim_writer(views, 1, MINE, 3600, 1000.0 + 60, VIEW)) == (None, False, None)
    assert views.writes == 1 and Claim.read(views, 1) == Claim("mine", 1060.0)
    assert outcome(claim_writer(views, 1, MINE, 3600, 1000.0 + 1801, VIEW)) == (None, False, None)
    assert views.writes == 2 and Claim.read(views, 1) == Claim("mine", 2801.0)
    away = Views({"install": "mine", "at": 1000.0})
    assert outcome(claim_writer(away, 1, MINE, 3600, 1000.0 + 3601, VIEW)) == (None, True, None), \
        "away for a lease: someone may have held it meanwhile"


def test_its_own_claim_found_as_it_left_it_after_a_night_away_is_no_takeover() -> None:
    """Stopped overnight: nobody claimed since, so what it recorded (rows, marks) still holds; a takeover would read
    the whole project and PATCH the mark off every labeled task."""
    left = Claim("mine", 1000.0)
    views = Views(left.as_dict())
    assert outcome(claim_writer(views, 1, Writer("mine", left), 3600, 1000.0 + 9 * 3600, VIEW)) == (None, False, None)
    assert Claim.read(views, 1) == Claim("mine", 1000.0 + 9 * 3600), "renewed"
    backup = Views({"install": "mine", "at": 1000.0})  # a backup of MODEL_DIR taken then records this claim;
    claim_writer(backup, 1, Writer("mine", left), 3600, 1000.0 + 600, VIEW)  # a push ten minutes later writes its own
    assert outcome(claim_writer(backup, 1, Writer("mine", left), 3600, 9e4, VIEW)) == (None, True, None), \
        "restored the next day, the backup's records are older than the claim: a takeover"
    erased = Views()  # the claim may have been another's after its own: only Label Studio's own copy says
    assert outcome(claim_writer(erased, 1, Writer("mine", left), 3600, 9e4, VIEW)) == (None, True, None)


def test_of_two_claims_at_once_the_one_overwritten_yields() -> None:
    views = Views(racer={"install": "theirs", "at": 1000.5})
    assert claim_writer(views, 1, MINE, 3600, 1000.0, VIEW).other == Claim("theirs", 1000.5)


def test_a_claim_a_person_erased_still_holds_as_last_read() -> None:
    """The Data Manager page saves a tab's data without the keys it does not know."""
    theirs = Claim("theirs", 1000.0)
    assert claim_writer(Views(), 1, Writer("mine", theirs), 3600, 1000.0 + 60, VIEW).other == theirs
    assert outcome(claim_writer(Views(), 1, Writer("mine", theirs), 3600, 1000.0 + 3601, VIEW)) == (None, True, theirs)
    own = Writer("mine", Claim("mine", 1000.0))
    assert outcome(claim_writer(Views(), 1, own, 3600, 1000.0 + 60, VIEW)) == (None, False, None), "its own: no loss"


def test_a_claim_a_person_edited_into_nonsense_or_dated_far_ahead_counts_as_none() -> None:
    assert claim_writer(Views({"install": "theirs"}), 1, MINE, 3600, 1000.0, VIEW).other is None
    assert claim_writer(Views({"install": "theirs", "at": 1000.0 + 3000}), 1, MINE, 3600, 1000.0,
                        VIEW).other is not None, "a clock a little ahead still holds"
    assert outcome(claim_writer(Views({"install": "theirs", "at": 9e99}), 1, MINE, 3600, 1000.0, VIEW))[:2] \
        == (None, True)


def test_an_empty_install_file_is_made_again(tmp_path) -> None:
    (tmp_path / "install-id").write_text("\n")
    assert len(install_id(tmp_path)) == 12


def test_a_takeover_is_known_before_the_claim_is_written_and_through_a_retried_read() -> None:
    """The read-back fails once (Label Studio busy) and is retried: the claim replaced was still another's."""

    class BusyOnce(Views):
        reads = 0

        def list_views(self, pid):
            self.reads += 1
            if self.reads == 2:
                raise RuntimeError("database is locked")
            return super().list_views(pid)

    def retried(fn, *a, **k):
        try:
            return fn(*a, **k)
        except RuntimeError:
            return fn(*a, **k)

    views, events = BusyOnce({"install": "theirs", "at": 1000.0}), []
    writer = Writer("mine", taken=lambda: events.append(("taken", views.writes)))
    assert claim_writer(views, 1, writer, 3600, 9000.0, VIEW, call=retried).took_over
    assert events == [("taken", 0)], "told once, before its claim was written"


def test_between_pushes_the_holder_keeps_its_claim_and_nobody_takes_over() -> None:
    from service.writer_claim import keep_claim

    views = Views({"install": "mine", "at": 1000.0})
    assert keep_claim(views, 1, MINE, 3600, 2799.0, VIEW) == Claim("mine", 1000.0) and views.writes == 0
    assert keep_claim(views, 1, MINE, 3600, 2801.0, VIEW) == Claim("mine", 2801.0) and views.writes == 1
    away = Views({"install": "mine", "at": 1000.0})
    assert keep_claim(away, 1, MINE, 3600, 4601.0, VIEW) == Claim("mine", 1000.0) and away.writes == 0, \
        "away for a lease: a push takes it anew, knowing it may have missed something"
    erased = Views()
    assert keep_claim(erased, 1, Writer("mine", Claim("mine", 1000.0)), 3600, 1060.0, VIEW) == Claim("mine", 1060.0)
    assert erased.writes == 1, "an edit of the tab erased the claim it held: written again"
    theirs = Views({"install": "theirs", "at": 1000.0})
    assert keep_claim(theirs, 1, MINE, 3600, 1060.0, VIEW) == Claim("theirs", 1000.0)
    assert keep_claim(theirs, 1, MINE, 3600, 9000.0, VIEW) == Claim("theirs", 1000.0) and theirs.writes == 0
    back = Views({"install": "mine", "at": 1000.0})
    assert keep_claim(back, 1, Writer("mine", Claim("mine", 1000.0)), 3600, 9e4, VIEW) == Claim("mine", 9e4), \
        "back after a night, its claim as it left it: renewed at the first poll, before another takes it"
    for seen in (None, Claim("theirs", 1000.0), Claim("theirs", -9000.0), Claim("mine", -9000.0)):
        gone = Views()  # never read one, or another's, or its own long ago: nothing written
        assert keep_claim(gone, 1, Writer("mine", seen), 3600, 1060.0, VIEW) == seen and gone.writes == 0
