"""The upsert, stamps, ownership guard, JSON order, UTC timestamps and leases, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import lease
from models.db import session_factory
from models.schema import Dataset, DatasetVersion, SyncRun, SyncState
from models.upsert import (
    DatasetSpec,
    OwnedByPeople,
    Snapshot,
    Verified,
    api_endpoint,
    nhs_dd_page_id,
    stamp_verified,
    upsert_dataset,
    whole_hours,
)
from scrapers.normalise import content_hash

T0 = datetime(2024, 11, 16, 8, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)

# Deliberately not in sorted order, with keys of different lengths: JSONB would reorder these.
OPTIONS = {
    "Z": "Not stated",
    "10": "Ten",
    "2": "Two",
    "A": "White - British",
    "01": "Leading zero",
    "B9": "Any other",
    "99": "Not known",
}


@pytest.fixture
def db(store_url: str) -> sessionmaker[Session]:
    return session_factory(store_url)


def spec(**changes: object) -> DatasetSpec:
    fields: dict[str, object] = {
        "key": "ethnic_category",
        "name": "Ethnic Category",
        "description": "NHS Data Dictionary - Ethnic Category",
        "category": "nhs_dd",
        "source_type": "scrape",
        "tags": ["demographics", "NHS"],
        "reference_url": "https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html",
        "external_api_url": None,
        "format_pattern": "code - description",
        "sync_frequency_hours": 168.0,
    }
    fields.update(changes)
    return DatasetSpec(**fields)  # type: ignore[arg-type]


def snapshot(
    options: dict[str, str] = OPTIONS, retired: list[str] | None = None, defaults: list[str] | None = None
) -> Snapshot:
    return Snapshot(
        options=dict(options),
        content_hash=content_hash(options),
        retired_codes=retired or [],
        default_codes=defaults or [],
    )


def upsert(
    db: sessionmaker[Session],
    now: datetime,
    the_spec: DatasetSpec | None = None,
    the_snapshot: Snapshot | None = None,
    *,
    stamp_field: str = "last_scraped",
    run_id: int | None = None,
):
    with db.begin() as session:
        return upsert_dataset(
            session, the_spec or spec(), the_snapshot or snapshot(), stamp_field=stamp_field, now=now, run_id=run_id
        )


def row(db: sessionmaker[Session], key: str = "ethnic_category") -> Dataset:
    with db() as session:
        return session.scalars(select(Dataset).where(Dataset.key == key)).one()


def versions(db: sessionmaker[Session], key: str = "ethnic_category") -> list[DatasetVersion]:
    with db() as session:
        return list(
            session.scalars(
                select(DatasetVersion).where(DatasetVersion.dataset_key == key).order_by(DatasetVersion.version)
            )
        )


def add_people_row(db: sessionmaker[Session], **fields: object) -> None:
    values: dict[str, object] = {
        "key": "ethnic_category",
        "name": "Ours",
        "category": "nhs_dd",
        "source_type": "manual",
        "is_custom": False,
        "is_global": False,
        "tags": ["ours"],
        "options": {"X": "Ours"},
        "created_at": T0,
        "updated_at": T0,
        "version": 3,
    }
    values.update(fields)
    with db.begin() as session:
        session.add(Dataset(**values))


# --- create / update / unchanged ------------------------------------------------------------------


def test_create_makes_version_1_and_a_version_row(db: sessionmaker[Session]) -> None:
    result = upsert(db, T0, the_snapshot=snapshot(retired=["B9"], defaults=["99", "Z"]))
    assert (result.status, result.version, result.options_before) == ("created", 1, 0)
    assert result.diff.counts() == {"added": len(OPTIONS), "removed": 0, "relabelled": 0}
    dataset = row(db)
    assert dataset.options == OPTIONS and dataset.content_hash == content_hash(OPTIONS)
    assert (dataset.version, dataset.is_global, dataset.is_custom, dataset.is_active) == (1, True, False, True)
    assert (dataset.category, dataset.source_type, dataset.name) == ("nhs_dd", "scrape", "Ethnic Category")
    assert dataset.tags == ["demographics", "NHS"]
    assert (dataset.retired_codes, dataset.default_codes) == (["B9"], ["99", "Z"])
    assert (dataset.created_at, dataset.updated_at, dataset.last_scraped) == (T0, T0, T0)
    assert dataset.last_synced_at is None
    [version] = versions(db)
    assert (version.version, version.options, version.content_hash) == (1, OPTIONS, content_hash(OPTIONS))
    assert (version.codes_added, version.codes_removed, version.codes_relabelled) == (len(OPTIONS), 0, 0)
    assert (version.origin, version.created_at, version.retired_codes) == ("sync", T0, ["B9"])


def test_api_sources_move_last_synced_at(db: sessionmaker[Session]) -> None:
    upsert(db, T0, spec(category="rcpch", source_type="api"), stamp_field="last_synced_at")
    upsert(db, T1, spec(category="rcpch", source_type="api"), stamp_field="last_synced_at")
    dataset = row(db)
    assert (dataset.last_synced_at, dataset.last_scraped) == (T1, None)


def test_version_row_links_the_run(db: sessionmaker[Session]) -> None:
    with db.begin() as session:
        run = SyncRun(dataset_key="ethnic_category", trigger="cli", status="running", started_at=T0)
        session.add(run)
        session.flush()
        run_id = run.id
    upsert(db, T0, run_id=run_id)
    assert versions(db)[0].run_id == run_id


def test_same_snapshot_is_unchanged_and_only_moves_the_stamp(db: sessionmaker[Session]) -> None:
    upsert(db, T0)
    result = upsert(db, T1)
    assert (result.status, result.version, result.options_before) == ("unchanged", 1, len(OPTIONS))
    assert result.diff.is_empty
    dataset = row(db)
    assert (dataset.version, dataset.updated_at, dataset.created_at, dataset.last_scraped) == (1, T0, T0, T1)
    assert list(dataset.options.items()) == list(OPTIONS.items())
    assert len(versions(db)) == 1


def test_changed_options_bump_the_version_with_diff_counts(db: sessionmaker[Session]) -> None:
    upsert(db, T0)
    changed = {k: v for k, v in OPTIONS.items() if k not in ("10", "2")}
    changed["A"] = "White: British"
    changed["C"] = "Any other White background"
    result = upsert(db, T1, the_snapshot=snapshot(changed))
    assert (result.status, result.version, result.options_before) == ("updated", 2, len(OPTIONS))
    assert result.diff.counts() == {"added": 1, "removed": 2, "relabelled": 1}
    assert result.diff.relabelled == {"A": ("White - British", "White: British")}
    dataset = row(db)
    assert (dataset.version, dataset.updated_at, dataset.created_at, dataset.last_scraped) == (2, T1, T0, T1)
    assert list(dataset.options.items()) == list(changed.items())
    assert dataset.content_hash == content_hash(changed)
    old, new = versions(db)
    assert list(old.options.items()) == list(OPTIONS.items())
    assert (new.version, new.codes_added, new.codes_removed, new.codes_relabelled) == (2, 1, 2, 1)
    assert new.content_hash == content_hash(changed)


def test_reordering_alone_is_a_change(db: sessionmaker[Session]) -> None:
    upsert(db, T0)
    reordered = dict(reversed(list(OPTIONS.items())))
    result = upsert(db, T1, the_snapshot=snapshot(reordered))
    assert (result.status, result.version) == ("updated", 2)
    assert result.diff.reordered and result.diff.counts() == {"added": 0, "removed": 0, "relabelled": 0}
    assert list(versions(db)[1].options) == list(reordered)
    dataset = row(db)
    assert dataset.content_hash == content_hash(reordered)
    # the stored list must be the one the stored hash describes, in the new source order
    assert list(dataset.options) == list(reordered)
    assert content_hash(dataset.options) == dataset.content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Ethnic Category (2001 census)"},
        {"description": "new words"},
        {"tags": ["demographics", "NHS", "census"]},
        {"reference_url": "https://www.datadictionary.nhs.uk/data_elements/ethnic_category_code.html"},
    ],
    ids=["name", "description", "tags", "reference_url"],
)
def test_metadata_only_change_bumps_the_version(db: sessionmaker[Session], change: dict[str, object]) -> None:
    upsert(db, T0)
    result = upsert(db, T1, spec(**change))
    assert (result.status, result.version) == ("updated", 2)
    assert result.diff.is_empty
    dataset = row(db)
    field, value = next(iter(change.items()))
    assert getattr(dataset, field) == value
    assert (dataset.version, dataset.updated_at) == (2, T1)
    assert [v.version for v in versions(db)] == [1, 2]
    assert versions(db)[1].codes_added == 0


@pytest.mark.parametrize(
    "change",
    [{"sync_frequency_hours": 24.0}, {"format_pattern": "code: description"}, {"external_api_url": "https://x/y/"}],
    ids=["frequency", "format_pattern", "external_api_url"],
)
def test_source_settings_are_written_without_a_new_version(
    db: sessionmaker[Session], change: dict[str, object]
) -> None:
    upsert(db, T0)
    result = upsert(db, T1, spec(**change))
    assert (result.status, result.version) == ("unchanged", 1)
    dataset = row(db)
    field, value = next(iter(change.items()))
    assert getattr(dataset, field) == value
    assert (dataset.version, dataset.updated_at) == (1, T0)
    assert [v.version for v in versions(db)] == [1]


def test_retired_flag_change_bumps_the_version(db: sessionmaker[Session]) -> None:
    upsert(db, T0)
    result = upsert(db, T1, the_snapshot=snapshot(retired=["B9"]))
    assert (result.status, result.version) == ("updated", 2)
    assert row(db).retired_codes == ["B9"]


def test_stamp_verified_moves_only_the_stamp(db: sessionmaker[Session]) -> None:
    upsert(db, T0)
    with db.begin() as session:
        assert stamp_verified(session, "ethnic_category", "last_scraped", T2) == Verified(1, len(OPTIONS))
    dataset = row(db)
    assert (dataset.last_scraped, dataset.updated_at, dataset.version) == (T2, T0, 1)
    assert dataset.last_synced_at is None
    assert list(dataset.options.items()) == list(OPTIONS.items())
    assert len(versions(db)) == 1


def test_stamp_verified_adopts_a_row_another_sync_made(db: sessionmaker[Session]) -> None:
    add_people_row(db, source_type="scrape")  # no history, but made by a sync: datasync may write it
    with db.begin() as session:
        assert stamp_verified(session, "ethnic_category", "last_scraped", T2) == Verified(3, 1)
    assert row(db).last_scraped == T2


def test_stamp_verified_on_a_missing_dataset_does_nothing(db: sessionmaker[Session]) -> None:
    with db.begin() as session:
        assert stamp_verified(session, "never_synced", "last_scraped", T0) is None
    with db() as session:
        assert session.scalars(select(Dataset)).all() == []


# --- rows that belong to people -------------------------------------------------------------------


@pytest.mark.parametrize(
    "owner",
    [{"is_custom": True}, {"category": "user_created"}, {"source_type": "manual"}],
    ids=["is_custom", "user_created", "made_by_hand"],
)
def test_rows_that_belong_to_people_are_refused(db: sessionmaker[Session], owner: dict[str, object]) -> None:
    add_people_row(db, **owner)
    with pytest.raises(OwnedByPeople, match="ethnic_category"):
        upsert(db, T1)
    with pytest.raises(OwnedByPeople), db.begin() as session:
        stamp_verified(session, "ethnic_category", "last_scraped", T1)
    dataset = row(db)
    assert (dataset.options, dataset.name, dataset.version, dataset.updated_at) == ({"X": "Ours"}, "Ours", 3, T0)
    assert dataset.last_scraped is None
    assert versions(db) == []


def test_custom_copy_keeps_its_options_when_the_parent_is_resynced(db: sessionmaker[Session]) -> None:
    upsert(db, T0)
    parent_id = row(db).id
    add_people_row(
        db,
        key="ethnic_category_custom_5",
        is_custom=True,
        category="user_created",
        parent_id=parent_id,
        organization_id=5,
    )
    upsert(db, T1, the_snapshot=snapshot({"A": "Only one"}))
    assert row(db).version == 2
    custom = row(db, "ethnic_category_custom_5")
    assert (custom.options, custom.version, custom.updated_at, custom.parent_id) == ({"X": "Ours"}, 3, T0, parent_id)


# --- storage fidelity -----------------------------------------------------------------------------


def test_options_order_survives_a_round_trip(db: sessionmaker[Session]) -> None:
    many = {f"{n:0{1 + n % 3}d}": f"label {n}" for n in range(60, 0, -1)}
    many.update({"zz": "last", "a": "short", "long_code_value": "long", "B": "upper"})
    upsert(db, T0, the_snapshot=snapshot(many))
    assert list(row(db).options.items()) == list(many.items())
    assert list(versions(db)[0].options.items()) == list(many.items())


def test_unicode_labels_survive_a_round_trip(db: sessionmaker[Session]) -> None:
    options = {"7A1": "Tŷ Llidiard", "R1H": "Guy's & St Thomas' – “quoted”", "X": "emoji 🙂"}
    upsert(db, T0, the_snapshot=snapshot(options))
    assert row(db).options == options


def test_timestamps_come_back_timezone_aware_utc(db: sessionmaker[Session]) -> None:
    plus_five = timezone(timedelta(hours=5))
    local = datetime(2024, 11, 16, 13, 0, tzinfo=plus_five)  # 08:00 UTC
    upsert(db, local)
    dataset = row(db)
    for stamp in (dataset.created_at, dataset.updated_at, dataset.last_scraped, versions(db)[0].created_at):
        assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
        assert stamp == T0


def test_naive_timestamps_are_refused(db: sessionmaker[Session]) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        upsert(db, datetime(2024, 11, 16, 8, 0))
    with db() as session:
        assert session.scalars(select(Dataset)).all() == []


def test_a_failed_write_leaves_the_old_row_intact(db: sessionmaker[Session]) -> None:
    upsert(db, T0)
    with pytest.raises(RuntimeError), db.begin() as session:
        upsert_dataset(session, spec(), snapshot({"A": "changed"}), stamp_field="last_scraped", now=T1, run_id=None)
        raise RuntimeError("crash mid-sync")
    dataset = row(db)
    assert (dataset.version, dataset.last_scraped) == (1, T0)
    assert list(dataset.options.items()) == list(OPTIONS.items())
    assert len(versions(db)) == 1


def test_sqlite_sessions_fixture_round_trip(sqlite_sessions: sessionmaker[Session]) -> None:
    upsert(sqlite_sessions, T0)
    assert upsert(sqlite_sessions, T1, the_snapshot=snapshot({"A": "a"})).version == 2
    assert list(row(sqlite_sessions).options.items()) == [("A", "a")]


# --- leases ---------------------------------------------------------------------------------------


def state(db: sessionmaker[Session], key: str) -> SyncState | None:
    with db() as session:
        return session.get(SyncState, key)


def test_lease_refuses_a_second_owner(db: sessionmaker[Session]) -> None:
    assert lease.acquire(db, "nhs_trusts", "worker-a", 60)
    assert not lease.acquire(db, "nhs_trusts", "worker-b", 60)
    assert state(db, "nhs_trusts").lease_owner == "worker-a"
    assert 55 < lease.expires_in(db, "nhs_trusts") <= 60


def test_lease_can_be_renewed_by_its_owner(db: sessionmaker[Session]) -> None:
    assert lease.acquire(db, "nhs_trusts", "worker-a", 5)
    assert lease.acquire(db, "nhs_trusts", "worker-a", 120)
    assert lease.expires_in(db, "nhs_trusts") > 100


def test_leases_are_per_dataset(db: sessionmaker[Session]) -> None:
    assert lease.acquire(db, "nhs_trusts", "worker-a", 60)
    assert lease.acquire(db, "welsh_lhbs", "worker-b", 60)


def test_release_frees_the_lease_only_for_its_owner(db: sessionmaker[Session]) -> None:
    assert lease.acquire(db, "nhs_trusts", "worker-a", 60)
    lease.release(db, "nhs_trusts", "worker-b")
    assert state(db, "nhs_trusts").lease_owner == "worker-a"
    lease.release(db, "nhs_trusts", "worker-a")
    held = state(db, "nhs_trusts")
    assert (held.lease_owner, held.lease_expires_at) == (None, None)
    assert lease.expires_in(db, "nhs_trusts") == 0.0
    assert lease.acquire(db, "nhs_trusts", "worker-b", 60)


def test_expires_in_is_zero_for_an_unknown_key(db: sessionmaker[Session]) -> None:
    assert lease.expires_in(db, "never_seen") == 0.0


def test_expired_lease_is_taken_over_and_stale_runs_are_abandoned(db: sessionmaker[Session]) -> None:
    assert lease.acquire(db, "nhs_trusts", "dead-worker", -1)  # already expired: the worker died
    assert lease.expires_in(db, "nhs_trusts") == 0.0
    with db.begin() as session:
        session.add_all(
            [
                SyncRun(
                    dataset_key="nhs_trusts", trigger="schedule", status="running", started_at=T0, worker="dead-worker"
                ),
                SyncRun(dataset_key="nhs_trusts", trigger="schedule", status="updated", started_at=T0, finished_at=T0),
                SyncRun(dataset_key="welsh_lhbs", trigger="schedule", status="running", started_at=T0),
            ]
        )
    assert lease.acquire(db, "nhs_trusts", "new-worker", 60)
    assert state(db, "nhs_trusts").lease_owner == "new-worker"
    with db() as session:
        runs = {
            (run.dataset_key, run.status if run.error_kind != "abandoned" else "abandoned"): run
            for run in session.scalars(select(SyncRun))
        }
    abandoned = runs[("nhs_trusts", "abandoned")]
    assert abandoned.status == "failed" and abandoned.error_kind == "abandoned"
    assert abandoned.finished_at is not None and abandoned.finished_at.tzinfo is not None
    assert abandoned.error_message
    assert runs[("nhs_trusts", "updated")].error_kind is None
    assert runs[("welsh_lhbs", "running")].finished_at is None


def test_a_refused_acquire_does_not_touch_the_running_run(db: sessionmaker[Session]) -> None:
    assert lease.acquire(db, "nhs_trusts", "worker-a", 60)
    with db.begin() as session:
        session.add(SyncRun(dataset_key="nhs_trusts", trigger="cli", status="running", started_at=T0))
    assert not lease.acquire(db, "nhs_trusts", "worker-b", 60)
    with db() as session:
        assert session.scalars(select(SyncRun.status)).all() == ["running"]


# --- columns derived for the platform's table -----------------------------------------------------


@pytest.mark.parametrize(
    ("category", "url", "page_id"),
    [
        ("nhs_dd", "https://www.datadictionary.nhs.uk/data_elements/ethnic_category.html", "ethnic_category"),
        (
            "nhs_dd",
            "https://www.datadictionary.nhs.uk/data_elements/main_specialty_code__mental_health_.html",
            "main_specialty_code__mental_health_",
        ),
        ("rcpch", "https://api.rcpch.ac.uk/nhs-organisations/v1/trusts/", ""),
        ("nhs_dd", None, ""),
    ],
)
def test_nhs_dd_page_id_is_the_page_name(category: str, url: str | None, page_id: str) -> None:
    assert nhs_dd_page_id(category, url) == page_id


def test_api_endpoint_is_the_path_and_query() -> None:
    assert api_endpoint("https://api.rcpch.ac.uk/nhs-organisations/v1/trusts/?active=true") == (
        "/nhs-organisations/v1/trusts/?active=true"
    )
    assert api_endpoint(None) == ""


@pytest.mark.parametrize(("hours", "whole"), [(168.0, 168), (2.5, 3), (2.4, 2), (0.25, 1), (None, None)])
def test_frequency_is_kept_in_whole_hours(hours: float | None, whole: int | None) -> None:
    assert whole_hours(hours) == whole
