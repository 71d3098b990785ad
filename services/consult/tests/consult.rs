//! The consultation service against a real (SQLite) log and the live policy point, with the
//! policy point's clock moved by the test (no sleeping).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use hub_consult::reports::{AmendRequest, DraftRequest, Reports};
use hub_consult::{
    AcceptRequest, CompleteRequest, ConsultError, ConsultRequest, Consults, ExpertRequest,
    ParticipantRequest, ReasonRequest, SlotRequest,
};
use hub_events::catalog::{
    Grantee, InstitutionEvent, InstitutionKind, PurposeOfUse, ShareEvent, ShareScope,
};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, SqliteEventStore, SqliteSync,
    StoreMetrics, StreamId,
};
use hub_policies::{AccessControl, Act, ConsultState, Engine, Role, StudyRef, Subject};
use tokio::sync::watch;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0)
        .single()
        .expect("valid time")
}

struct Hub {
    consults: Consults,
    store: Arc<dyn EventStore>,
    access: Arc<AccessControl>,
    now: Arc<Mutex<DateTime<Utc>>>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Hub {
    async fn start() -> Hub {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(
                &dir.path().join("events.db"),
                SqliteSync::Normal,
                StoreMetrics::unregistered(),
            )
            .await
            .expect("store opens"),
        );
        let now = Arc::new(Mutex::new(t0()));
        let clock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let access = Arc::new(
            AccessControl::with_engine(Engine::new().await.expect("policy loads"), clock)
                .with_consult_lead(Duration::minutes(15)),
        );
        let (stop, stopped) = watch::channel(false);
        {
            let (access, store) = (access.clone(), store.clone());
            tokio::spawn(async move { access.follow(store, stopped).await });
        }
        for i in ["hosp-a", "hosp-b", "hosp-c"] {
            let e: HubEvent = InstitutionEvent::InstitutionRegistered {
                institution_id: i.into(),
                name: i.into(),
                kind: InstitutionKind::Hospital,
                ae_titles: vec![],
            }
            .into();
            let a = store
                .append(
                    &StreamId::new(Family::Institution, i),
                    ExpectedVersion::NoStream,
                    vec![e.to_new_event(EventMetadata::new("hub", "user:root"))],
                )
                .await
                .expect("append");
            access
                .wait_applied(a.last_position, std::time::Duration::from_secs(5))
                .await;
        }
        let consults = Consults::new(store.clone(), access.clone());
        for (inst, expert) in [("hosp-c", "bob"), ("hosp-c", "carl"), ("hosp-b", "dave")] {
            consults
                .register_expert(
                    &who("admin", Role::HospitalAdmin, inst),
                    ExpertRequest {
                        expert: expert.into(),
                        specialty: Some("thoracic radiology".into()),
                        availability: vec![],
                    },
                )
                .await
                .expect("expert registered");
        }
        Hub {
            consults,
            store,
            access,
            now,
            _stop: stop,
            _dir: dir,
        }
    }

    fn set_now(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    async fn request(&self, expert: &str) -> Result<Uuid, ConsultError> {
        self.consults
            .request(&alice(), Some(&study()), request(expert))
            .await
    }

    async fn book(&self, id: Uuid, start: &str, end: &str) -> Result<u64, ConsultError> {
        self.consults
            .schedule(&alice(), id, slot(start, end), false)
            .await
    }
}

fn who(id: &str, role: Role, institution: &str) -> Subject {
    Subject {
        id: id.into(),
        role,
        institution: institution.into(),
    }
}

fn alice() -> Subject {
    who("alice", Role::Physician, "hosp-a")
}

fn bob() -> Subject {
    who("bob", Role::Radiologist, "hosp-c")
}

fn study() -> StudyRef {
    StudyRef {
        owner: "hosp-a".into(),
        study_uid: "1.2.3".into(),
        patient_id: Some("PA-1".into()),
    }
}

fn request(expert: &str) -> ConsultRequest {
    ConsultRequest {
        study_uid: "1.2.3".into(),
        kind: None,
        expert_institution: "hosp-c".into(),
        expert: Some(expert.into()),
        specialty: None,
        urgency: Some("urgent".into()),
        question: "Is the nodule in the right upper lobe malignant?".into(),
        participants: vec![],
    }
}

fn slot(start: &str, end: &str) -> SlotRequest {
    SlotRequest {
        starts_at: start.into(),
        ends_at: end.into(),
        reason: Some("the expert is in theatre".into()),
    }
}

fn field_of(e: ConsultError) -> String {
    match e {
        ConsultError::BadRequest { field, .. } => field,
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[tokio::test]
async fn access_opens_at_the_lead_time_before_the_window_and_closes_at_its_end() {
    let hub = Hub::start().await;
    let id = hub.request("bob").await.expect("requested");
    // 09:00-10:00 at +08:00 is 01:00-02:00 UTC.
    hub.book(id, "2027-01-31T09:00:00+08:00", "2027-01-31T10:00:00+08:00")
        .await
        .expect("booked");
    hub.consults
        .accept(&bob(), id, AcceptRequest::default())
        .await
        .expect("accepted");
    let start = t0() + Duration::hours(1);
    let end = t0() + Duration::hours(2);
    let opens = start - Duration::minutes(15);
    let reads = |at: DateTime<Utc>| {
        hub.set_now(at);
        hub.access
            .decide(&bob(), &study(), None, Act::ReadImages)
            .expect("decides")
            .permit
    };
    assert!(!reads(opens - Duration::microseconds(1)));
    assert!(reads(opens));
    assert!(reads(end - Duration::microseconds(1)));
    assert!(!reads(end));
    // A colleague who takes no part never gets in.
    hub.set_now(start);
    let colleague = who("carl", Role::Radiologist, "hosp-c");
    assert!(
        !hub.access
            .decide(&colleague, &study(), None, Act::ReadImages)
            .expect("decides")
            .permit
    );
}

#[tokio::test]
async fn a_double_booking_is_refused_naming_the_conflicting_consultation() {
    let hub = Hub::start().await;
    let first = hub.request("bob").await.expect("requested");
    hub.book(
        first,
        "2027-01-31T09:00:00+08:00",
        "2027-01-31T10:00:00+08:00",
    )
    .await
    .expect("booked");
    let second = hub.request("bob").await.expect("requested");
    // 01:30Z is 09:30 at +08:00: inside the first slot.
    match hub
        .book(second, "2027-01-31T01:30:00Z", "2027-01-31T02:30:00Z")
        .await
    {
        Err(ConsultError::Conflict(m)) => assert!(m.contains(&first.to_string()), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Back to back is fine, and another expert is free at that time.
    hub.book(
        second,
        "2027-01-31T10:00:00+08:00",
        "2027-01-31T11:00:00+08:00",
    )
    .await
    .expect("back to back");
    let third = hub.request("carl").await.expect("requested");
    hub.book(
        third,
        "2027-01-31T09:00:00+08:00",
        "2027-01-31T10:00:00+08:00",
    )
    .await
    .expect("carl is free");
    // Moving the second onto the first is refused too; a cancelled booking frees its slot.
    assert!(matches!(
        hub.consults
            .schedule(
                &alice(),
                second,
                slot("2027-01-31T09:30:00+08:00", "2027-01-31T10:30:00+08:00"),
                true
            )
            .await,
        Err(ConsultError::Conflict(_))
    ));
    hub.consults
        .cancel(
            &alice(),
            first,
            ReasonRequest {
                reason: "resolved".into(),
            },
        )
        .await
        .expect("cancelled");
    hub.consults
        .schedule(
            &alice(),
            second,
            slot("2027-01-31T09:30:00+08:00", "2027-01-31T10:30:00+08:00"),
            true,
        )
        .await
        .expect("the slot is free again");
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let hub = Hub::start().await;
    assert_eq!(field_of(hub.request("nobody").await.unwrap_err()), "expert");
    let mut r = request("bob");
    r.expert_institution = "hosp-x".into();
    assert_eq!(
        field_of(
            hub.consults
                .request(&alice(), Some(&study()), r)
                .await
                .unwrap_err()
        ),
        "expert_institution"
    );
    // A study the requester cannot see (another hospital's, no relation), or none at all.
    let stranger = who("zoe", Role::Physician, "hosp-b");
    assert_eq!(
        field_of(
            hub.consults
                .request(&stranger, Some(&study()), request("bob"))
                .await
                .unwrap_err()
        ),
        "study_uid"
    );
    assert_eq!(
        field_of(
            hub.consults
                .request(&alice(), None, request("bob"))
                .await
                .unwrap_err()
        ),
        "study_uid"
    );
    let mut r = request("bob");
    r.participants = vec![ParticipantRequest {
        user: "dave".into(),
        institution: "hosp-b".into(),
    }];
    assert_eq!(
        field_of(
            hub.consults
                .request(&alice(), Some(&study()), r)
                .await
                .unwrap_err()
        ),
        "participants"
    );
    let id = hub.request("bob").await.expect("requested");
    assert_eq!(
        field_of(
            hub.book(id, "2027-01-31T09:00:00", "2027-01-31T10:00:00+08:00")
                .await
                .unwrap_err()
        ),
        "starts_at"
    );
    assert_eq!(
        field_of(
            hub.book(id, "2027-01-31T10:00:00+08:00", "2027-01-31T09:00:00+08:00")
                .await
                .unwrap_err()
        ),
        "ends_at"
    );
}

#[tokio::test]
async fn illegal_transitions_are_refused_naming_the_current_state() {
    let hub = Hub::start().await;
    let id = hub.request("bob").await.expect("requested");
    let conflict = |r: Result<u64, ConsultError>, state: &str| match r {
        Err(ConsultError::Conflict(m)) => assert!(m.contains(&format!("is {state}")), "{m}"),
        other => panic!("expected a 409 naming {state}, got {other:?}"),
    };
    conflict(
        hub.consults
            .accept(&bob(), id, AcceptRequest::default())
            .await,
        "requested",
    );
    conflict(
        hub.consults
            .complete(&bob(), id, CompleteRequest::default())
            .await,
        "requested",
    );
    conflict(
        hub.consults
            .schedule(
                &alice(),
                id,
                slot("2027-01-31T09:00:00Z", "2027-01-31T10:00:00Z"),
                true,
            )
            .await,
        "requested",
    );
    hub.book(id, "2027-01-31T09:00:00Z", "2027-01-31T10:00:00Z")
        .await
        .expect("booked");
    conflict(
        hub.book(id, "2027-01-31T11:00:00Z", "2027-01-31T12:00:00Z")
            .await,
        "scheduled",
    );
    hub.consults
        .accept(&bob(), id, AcceptRequest::default())
        .await
        .expect("accepted");
    conflict(
        hub.consults
            .decline(
                &bob(),
                id,
                ReasonRequest {
                    reason: "busy".into(),
                },
            )
            .await,
        "accepted",
    );
    hub.consults
        .complete(&bob(), id, CompleteRequest::default())
        .await
        .expect("completed");
    conflict(
        hub.consults
            .cancel(
                &alice(),
                id,
                ReasonRequest {
                    reason: "late".into(),
                },
            )
            .await,
        "completed",
    );
    assert_eq!(hub.consults.state_of(&id), Some(ConsultState::Completed));
    // The requester cannot accept for the expert.
    let other = hub.request("carl").await.expect("requested");
    hub.book(other, "2027-01-31T09:00:00Z", "2027-01-31T10:00:00Z")
        .await
        .expect("booked");
    assert!(matches!(
        hub.consults
            .accept(&alice(), other, AcceptRequest::default())
            .await,
        Err(ConsultError::Forbidden(_))
    ));
}

#[tokio::test]
async fn a_team_meeting_books_every_participant_and_opens_the_study_to_them() {
    let hub = Hub::start().await;
    let mut r = request("bob");
    r.kind = Some("mdt".into());
    r.participants = vec![ParticipantRequest {
        user: "dave".into(),
        institution: "hosp-b".into(),
    }];
    let mdt = hub
        .consults
        .request(&alice(), Some(&study()), r)
        .await
        .expect("requested");
    hub.book(mdt, "2027-01-31T09:00:00Z", "2027-01-31T10:00:00Z")
        .await
        .expect("booked");
    hub.set_now(
        Utc.with_ymd_and_hms(2027, 1, 31, 9, 30, 0)
            .single()
            .expect("time"),
    );
    let dave = who("dave", Role::Radiologist, "hosp-b");
    assert!(
        hub.access
            .decide(&dave, &study(), None, Act::ReadImages)
            .expect("decides")
            .permit
    );
    // Dave is busy then, even as an expert asked on his own.
    let mut r = request("dave");
    r.expert_institution = "hosp-b".into();
    let solo = hub
        .consults
        .request(&alice(), Some(&study()), r)
        .await
        .expect("requested");
    match hub
        .book(solo, "2027-01-31T09:30:00Z", "2027-01-31T10:30:00Z")
        .await
    {
        Err(ConsultError::Conflict(m)) => assert!(m.contains(&mdt.to_string()), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_signed_report_cannot_be_changed_only_amended() {
    let hub = Hub::start().await;
    let reports = Reports(&hub.consults);
    let radiologist = who("rita", Role::Radiologist, "hosp-a");
    let draft = |report_id| DraftRequest {
        report_id,
        findings: "8 mm nodule, right upper lobe".into(),
        impression: "indeterminate".into(),
        consult_id: None,
    };
    let id = reports
        .draft(&radiologist, &study(), draft(None))
        .await
        .expect("drafted");
    reports
        .draft(&radiologist, &study(), draft(Some(id)))
        .await
        .expect("redrafted");
    reports
        .sign(&radiologist, &study(), id)
        .await
        .expect("signed");
    assert!(matches!(
        reports.draft(&radiologist, &study(), draft(Some(id))).await,
        Err(ConsultError::Conflict(_))
    ));
    assert!(matches!(
        reports.sign(&radiologist, &study(), id).await,
        Err(ConsultError::Conflict(_))
    ));
    let amend = || AmendRequest {
        findings: "8 mm nodule, right upper lobe, spiculated".into(),
        impression: "suspicious, biopsy advised".into(),
        reason: "second read".into(),
    };
    let v2 = reports
        .amend(&radiologist, &study(), id, amend())
        .await
        .expect("amended");
    assert!(matches!(
        reports.amend(&radiologist, &study(), id, amend()).await,
        Err(ConsultError::Conflict(_))
    ));
    let all = reports.of("1.2.3").await.expect("reads");
    let first = all.version(&id).expect("v1");
    assert_eq!(first.impression, "indeterminate", "the signed text is kept");
    assert_eq!(first.amended_by, Some(v2));
    let second = all.version(&v2).expect("v2");
    assert_eq!(second.amends, Some(id));
    assert_eq!(second.reason.as_deref(), Some("second read"));
    assert!(second.signed_at.is_some());
    // Someone who may not read the images writes nothing.
    assert!(matches!(
        reports
            .draft(
                &who("zoe", Role::Radiologist, "hosp-b"),
                &study(),
                draft(None)
            )
            .await,
        Err(ConsultError::Forbidden(_))
    ));
}

mod random_bookings {
    use proptest::prelude::*;

    use super::*;

    /// Book, move or cancel consultation `which` of bob's, the slot `start` quarter hours after
    /// a day past `t0`, `quarters` long.
    #[derive(Clone, Debug)]
    struct Op {
        kind: u8,
        which: usize,
        start: i64,
        quarters: i64,
    }

    fn op() -> impl Strategy<Value = Op> {
        (0..3u8, 0..5usize, 0..32i64, 1..8i64).prop_map(|(kind, which, start, quarters)| Op {
            kind,
            which,
            start,
            quarters,
        })
    }

    async fn run(hub: &Hub, ids: &[Uuid], op: &Op) {
        let id = ids[op.which % ids.len()];
        let start = t0() + Duration::days(1) + Duration::minutes(15 * op.start);
        let end = start + Duration::minutes(15 * op.quarters);
        let (s, e) = (start.to_rfc3339(), end.to_rfc3339());
        // Refusals (taken slot, wrong state) are part of the game; only the calendar counts.
        let _ = match op.kind {
            0 => {
                hub.consults
                    .schedule(&alice(), id, slot(&s, &e), false)
                    .await
            }
            1 => {
                hub.consults
                    .schedule(&alice(), id, slot(&s, &e), true)
                    .await
            }
            _ => {
                hub.consults
                    .cancel(
                        &alice(),
                        id,
                        ReasonRequest {
                            reason: "no longer needed".into(),
                        },
                    )
                    .await
            }
        };
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn bookings_made_two_at_a_time_through_the_service_never_overlap_for_one_expert(
            ops in prop::collection::vec(op(), 1..24)
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let calendar = runtime.block_on(async {
                let hub = Hub::start().await;
                let mut ids = Vec::new();
                for _ in 0..5 {
                    ids.push(hub.request("bob").await.expect("requested"));
                }
                // Two commands at a time race for the calendar.
                for pair in ops.chunks(2) {
                    match pair {
                        [a, b] => {
                            tokio::join!(run(&hub, &ids, a), run(&hub, &ids, b));
                        }
                        [a] => run(&hub, &ids, a).await,
                        _ => {}
                    }
                }
                hub.consults.calendar("hosp-c", "bob")
            });
            for (i, a) in calendar.iter().enumerate() {
                for b in &calendar[i + 1..] {
                    let (Some(x), Some(y)) = (a.slot, b.slot) else {
                        return Err(TestCaseError::fail("a booked consultation without a slot"));
                    };
                    prop_assert!(
                        !x.overlaps(&y),
                        "{} {:?} overlaps {} {:?}",
                        a.consult_id,
                        x,
                        b.consult_id,
                        y
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn a_consultation_another_institution_requests_opens_nothing_until_the_owner_approves() {
    let hub = Hub::start().await;
    // hosp-b sees hosp-a's study as metadata only, through a share.
    let share: HubEvent = ShareEvent::ShareGranted {
        share_id: Uuid::from_u128(1),
        study_uid: "1.2.3".into(),
        series_uid: None,
        owner: "hosp-a".into(),
        grantee: Grantee::Institution("hosp-b".into()),
        scope: ShareScope::Metadata,
        purpose: PurposeOfUse::Treatment,
        expires_at: None,
    }
    .into();
    let appended = hub
        .store
        .append(
            &StreamId::new(Family::Share, Uuid::from_u128(1)),
            ExpectedVersion::NoStream,
            vec![share.to_new_event(EventMetadata::new("hosp-a", "user:anna"))],
        )
        .await
        .expect("append");
    hub.access
        .wait_applied(appended.last_position, std::time::Duration::from_secs(5))
        .await;
    // A physician of hosp-b asks her own institution's expert, with bob of hosp-c in the team.
    let eve = who("eve", Role::Physician, "hosp-b");
    let mut r = request("dave");
    r.expert_institution = "hosp-b".into();
    r.kind = Some("mdt".into());
    r.participants = vec![ParticipantRequest {
        user: "bob".into(),
        institution: "hosp-c".into(),
    }];
    let id = hub
        .consults
        .request(&eve, Some(&study()), r)
        .await
        .expect("requested");
    hub.consults
        .schedule(
            &eve,
            id,
            slot("2027-01-31T00:00:00Z", "2027-01-31T02:00:00Z"),
            false,
        )
        .await
        .expect("booked");
    let dave = who("dave", Role::Radiologist, "hosp-b");
    let reads = |s: &Subject, act: Act| {
        hub.access
            .decide(s, &study(), None, act)
            .expect("decides")
            .permit
    };
    for s in [&eve, &dave, &bob()] {
        assert!(
            !reads(s, Act::ReadImages),
            "{s:?} reads images the owner never let out"
        );
    }
    assert!(
        reads(&eve, Act::ReadMetadata),
        "eve keeps what her share shows"
    );
    assert!(!reads(&bob(), Act::ReadMetadata), "bob sees nothing");
    // Only the owner's staff may approve; the requester's side may not.
    for stranger in [&eve, &who("admin", Role::HospitalAdmin, "hosp-b")] {
        match hub.consults.approve(stranger, id).await {
            Err(ConsultError::Forbidden(_)) => {}
            other => panic!("{stranger:?} approved: {other:?}"),
        }
    }
    let anna = who("anna", Role::HospitalAdmin, "hosp-a");
    hub.consults.approve(&anna, id).await.expect("approved");
    for s in [&eve, &dave, &bob()] {
        assert!(
            reads(s, Act::ReadImages),
            "{s:?} reads the approved consultation's images"
        );
    }
    match hub.consults.approve(&anna, id).await {
        Err(ConsultError::Conflict(m)) => assert!(m.contains("approved by anna"), "{m}"),
        other => panic!("a second approval: {other:?}"),
    }
    // The owner's own requests need no approval.
    let own = hub.request("bob").await.expect("requested");
    match hub.consults.approve(&anna, own).await {
        Err(ConsultError::Conflict(m)) => assert!(m.contains("needs no approval"), "{m}"),
        other => panic!("approving the owner's own request: {other:?}"),
    }
}
