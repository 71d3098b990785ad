//! One test per rule of the access policy, against the real Casbin model and policy files.

use chrono::{DateTime, Duration, TimeZone, Utc};
use hub_events::catalog::{
    AccessAction, AccessEvent, AllianceEvent, ConsentEvent, ConsentPolicy, ConsultEvent,
    ConsultKind, ConsultParticipant, ConsultUrgency, Decision as AccessDecision, Grantee,
    InstitutionEvent, InstitutionKind, PatientEvent, PurposeOfUse, ShareEvent, ShareScope, UserId,
};
use hub_events::{EventMetadata, HubEvent, RecordedEvent, StreamId};
use hub_policies::{Act, Engine, Facts, Relation, Role, StudyRef, Subject, View};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0)
        .single()
        .expect("valid time")
}

struct World {
    facts: Facts,
    position: u64,
}

impl World {
    fn new() -> World {
        let mut w = World {
            facts: Facts::new(),
            position: 0,
        };
        for i in ["hosp-a", "hosp-b", "hosp-c"] {
            w.add(InstitutionEvent::InstitutionRegistered {
                institution_id: i.into(),
                name: i.into(),
                kind: InstitutionKind::Hospital,
                ae_titles: vec![],
            });
        }
        w.add(AllianceEvent::AllianceRegistered {
            alliance_id: "north".into(),
            name: "North".into(),
            lead_institution: "hosp-a".into(),
        });
        for i in ["hosp-a", "hosp-b"] {
            w.add(AllianceEvent::InstitutionJoinedAlliance {
                alliance_id: "north".into(),
                institution_id: i.into(),
            });
        }
        w.add(PatientEvent::PatientLinked {
            regional_patient_id: "R-1".into(),
            institution_id: "hosp-a".into(),
            local_patient_id: "PA-1".into(),
            issuer_of_patient_id: None,
        });
        w.add(PatientEvent::PatientLinked {
            regional_patient_id: "R-1".into(),
            institution_id: "hosp-c".into(),
            local_patient_id: "PC-9".into(),
            issuer_of_patient_id: None,
        });
        w
    }

    fn add(&mut self, event: impl Into<HubEvent>) {
        let event: HubEvent = event.into();
        self.position += 1;
        let new = event.to_new_event(EventMetadata::new("hosp-a", "user:admin"));
        let recorded = RecordedEvent {
            position: self.position,
            event_id: new.event_id,
            stream_id: StreamId::parse("share-x").expect("stream id"),
            stream_version: 1,
            event_type: new.event_type,
            schema_version: new.schema_version,
            payload: new.payload,
            recorded_at: t0(),
            metadata: new.metadata,
        };
        self.facts.apply(&recorded, &event);
    }

    fn consent(&mut self) -> Uuid {
        self.consent_by("hosp-a", ConsentPolicy::AllianceMetadata)
    }

    /// A consent of patient R-1 recorded by an admin of `institution`.
    fn consent_by(&mut self, institution: &str, policy: ConsentPolicy) -> Uuid {
        let id = Uuid::now_v7();
        self.add(ConsentEvent::ConsentRecorded {
            consent_id: id,
            regional_patient_id: "R-1".into(),
            institution_id: institution.into(),
            by_patient: false,
            policy,
            v1_policy_text: None,
        });
        id
    }

    fn grant(
        &mut self,
        grantee: Grantee,
        scope: ShareScope,
        series: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Uuid {
        let id = Uuid::now_v7();
        self.add(ShareEvent::ShareGranted {
            share_id: id,
            study_uid: "1.2.3".into(),
            series_uid: series.map(str::to_owned),
            owner: "hosp-a".into(),
            grantee,
            scope,
            purpose: PurposeOfUse::Treatment,
            expires_at,
        });
        id
    }
}

fn study() -> StudyRef {
    StudyRef {
        owner: "hosp-a".into(),
        study_uid: "1.2.3".into(),
        patient_id: Some("PA-1".into()),
    }
}

fn who(id: &str, role: Role, institution: &str) -> Subject {
    Subject {
        id: id.into(),
        role,
        institution: institution.into(),
    }
}

async fn engine() -> Engine {
    Engine::new().await.expect("the shipped policy loads")
}

fn may(engine: &Engine, w: &World, s: &Subject, act: Act, at: DateTime<Utc>) -> bool {
    engine
        .decide(s, &study(), None, act, &w.facts, at)
        .expect("decides")
        .permit
}

#[tokio::test]
async fn staff_read_their_own_institutions_studies() {
    let (e, w) = (engine().await, World::new());
    for role in [Role::Radiologist, Role::Physician, Role::HospitalAdmin] {
        let s = who("u", role, "hosp-a");
        assert!(may(&e, &w, &s, Act::ReadMetadata, t0()), "{role}");
        assert!(may(&e, &w, &s, Act::ReadImages, t0()), "{role}");
        let other = who("u", role, "hosp-c");
        assert!(!may(&e, &w, &other, Act::ReadMetadata, t0()), "{role}");
    }
}

#[tokio::test]
async fn alliance_members_see_metadata_of_consented_studies_but_need_a_grant_for_images() {
    let (e, mut w) = (engine().await, World::new());
    let b = who("bob", Role::Radiologist, "hosp-b");
    assert!(
        !may(&e, &w, &b, Act::ReadMetadata, t0()),
        "no consent yet: the alliance sees nothing"
    );
    w.consent();
    assert!(may(&e, &w, &b, Act::ReadMetadata, t0()));
    assert!(!may(&e, &w, &b, Act::ReadImages, t0()));
    let c = who("carol", Role::Radiologist, "hosp-c");
    assert!(
        !may(&e, &w, &c, Act::ReadMetadata, t0()),
        "hosp-c is in no alliance with hosp-a"
    );
    w.grant(
        Grantee::Institution("hosp-b".into()),
        ShareScope::Images,
        None,
        None,
    );
    assert!(may(&e, &w, &b, Act::ReadImages, t0()));
}

/// Issue 24, class 3: the admin of hosp-b, where R-1 is not linked, recorded a consent (stored
/// before the rule, or forged): it grants nothing. A consent by hosp-c, where R-1 is linked,
/// counts for R-1's study at hosp-a; a refusal, while active, outweighs it.
#[tokio::test]
async fn only_a_consent_of_the_patient_or_a_linking_institution_counts_and_a_refusal_wins() {
    let (e, mut w) = (engine().await, World::new());
    let b = who("bob", Role::Radiologist, "hosp-b");
    w.consent_by("hosp-b", ConsentPolicy::AllianceMetadata);
    assert!(
        !may(&e, &w, &b, Act::ReadMetadata, t0()),
        "a stranger's consent grants nothing"
    );
    w.consent_by("hosp-c", ConsentPolicy::AllianceMetadata);
    assert!(may(&e, &w, &b, Act::ReadMetadata, t0()));
    let refusal = w.consent_by("hosp-a", ConsentPolicy::Refused);
    assert!(!may(&e, &w, &b, Act::ReadMetadata, t0()), "refused");
    w.add(ConsentEvent::ConsentWithdrawn {
        consent_id: refusal,
        regional_patient_id: "R-1".into(),
        reason: None,
    });
    assert!(
        may(&e, &w, &b, Act::ReadMetadata, t0()),
        "refusal withdrawn"
    );
}

/// Who may record, list and withdraw R-1's consents: R-1, and the admins of hosp-a and hosp-c
/// (where R-1 is linked); not hosp-b's admin, another patient, or hosp-a's radiologist.
#[tokio::test]
async fn consents_are_managed_by_the_patient_and_the_institutions_that_link_them() {
    let (e, w) = (engine().await, World::new());
    let may_manage = |s: &Subject| {
        e.may_manage_consents(s, "R-1", &w.facts, t0())
            .expect("decides")
    };
    assert!(may_manage(&who("R-1", Role::Patient, "hosp-b")));
    assert!(may_manage(&who("anna", Role::HospitalAdmin, "hosp-a")));
    assert!(may_manage(&who("cole", Role::HospitalAdmin, "hosp-c")));
    assert!(!may_manage(&who("bea", Role::HospitalAdmin, "hosp-b")));
    assert!(!may_manage(&who("R-2", Role::Patient, "hosp-a")));
    assert!(!may_manage(&who("alice", Role::Radiologist, "hosp-a")));
}

#[tokio::test]
async fn consent_withdrawal_removes_alliance_wide_visibility_not_the_owners() {
    let (e, mut w) = (engine().await, World::new());
    let consent = w.consent();
    w.grant(
        Grantee::Alliance("north".into()),
        ShareScope::Images,
        None,
        None,
    );
    let b = who("bob", Role::Radiologist, "hosp-b");
    assert!(may(&e, &w, &b, Act::ReadImages, t0()));
    w.add(ConsentEvent::ConsentWithdrawn {
        consent_id: consent,
        regional_patient_id: "R-1".into(),
        reason: None,
    });
    assert!(!may(&e, &w, &b, Act::ReadMetadata, t0()));
    assert!(!may(&e, &w, &b, Act::ReadImages, t0()));
    let a = who("alice", Role::Radiologist, "hosp-a");
    assert!(may(&e, &w, &a, Act::ReadImages, t0()));
}

#[tokio::test]
async fn a_metadata_grant_shows_metadata_and_no_images() {
    let (e, mut w) = (engine().await, World::new());
    w.grant(
        Grantee::Institution("hosp-c".into()),
        ShareScope::Metadata,
        None,
        None,
    );
    let c = who("carol", Role::Physician, "hosp-c");
    assert!(may(&e, &w, &c, Act::ReadMetadata, t0()));
    assert!(!may(&e, &w, &c, Act::ReadImages, t0()));
}

#[tokio::test]
async fn a_grant_stops_at_its_expiry_and_at_its_revocation() {
    let (e, mut w) = (engine().await, World::new());
    let until = t0() + Duration::hours(1);
    let c = who("carol", Role::Radiologist, "hosp-c");
    let share = w.grant(
        Grantee::Institution("hosp-c".into()),
        ShareScope::Images,
        None,
        Some(until),
    );
    assert!(may(
        &e,
        &w,
        &c,
        Act::ReadImages,
        until - Duration::microseconds(1)
    ));
    assert!(
        !may(&e, &w, &c, Act::ReadImages, until),
        "expired at the instant"
    );
    assert!(may(&e, &w, &c, Act::ReadImages, t0()));
    w.add(ShareEvent::ShareRevoked {
        share_id: share,
        reason: "sent in error".into(),
    });
    assert!(!may(&e, &w, &c, Act::ReadImages, t0()));
    assert!(!may(&e, &w, &c, Act::ReadMetadata, t0()));
}

#[tokio::test]
async fn a_user_grant_lets_that_user_in_and_no_colleague() {
    let (e, mut w) = (engine().await, World::new());
    w.grant(
        Grantee::User(UserId {
            institution: "hosp-c".into(),
            subject: "carol".into(),
        }),
        ShareScope::Images,
        None,
        None,
    );
    assert!(may(
        &e,
        &w,
        &who("carol", Role::Radiologist, "hosp-c"),
        Act::ReadImages,
        t0()
    ));
    assert!(!may(
        &e,
        &w,
        &who("dave", Role::Radiologist, "hosp-c"),
        Act::ReadImages,
        t0()
    ));
    // Issue 24, class 2: the same subject at another institution, registered or not, in any
    // role, is another user.
    for (role, institution) in [
        (Role::Physician, "hosp-b"),
        (Role::Radiologist, "hosp-b"),
        (Role::AiService, "never-registered"),
    ] {
        assert!(
            !may(
                &e,
                &w,
                &who("carol", role, institution),
                Act::ReadMetadata,
                t0()
            ),
            "carol as a {role} of {institution}"
        );
    }
}

/// A user grant of ShareGranted v2 named a bare subject: upcast to an unscoped user, it reaches
/// nobody, not even that subject at the owner's institution's partners.
#[tokio::test]
async fn an_unscoped_user_grant_reaches_nobody() {
    let (e, mut w) = (engine().await, World::new());
    w.grant(
        Grantee::UnscopedUser("carol".into()),
        ShareScope::Images,
        None,
        None,
    );
    for institution in ["hosp-b", "hosp-c"] {
        let carol = who("carol", Role::Radiologist, institution);
        assert!(
            !may(&e, &w, &carol, Act::ReadMetadata, t0()),
            "{institution}"
        );
    }
}

#[tokio::test]
async fn a_series_grant_shows_the_study_and_opens_only_that_series() {
    let (e, mut w) = (engine().await, World::new());
    w.grant(
        Grantee::Institution("hosp-c".into()),
        ShareScope::Images,
        Some("1.2.3.1"),
        None,
    );
    let c = who("carol", Role::Radiologist, "hosp-c");
    let d = e
        .decide(&c, &study(), None, Act::ReadImages, &w.facts, t0())
        .expect("decides");
    assert!(d.permit);
    assert_eq!(d.only_series, Some(["1.2.3.1".to_owned()].into()));
    let other = e
        .decide(
            &c,
            &study(),
            Some("1.2.3.2"),
            Act::ReadImages,
            &w.facts,
            t0(),
        )
        .expect("decides");
    assert!(!other.permit);
    let same = e
        .decide(
            &c,
            &study(),
            Some("1.2.3.1"),
            Act::ReadImages,
            &w.facts,
            t0(),
        )
        .expect("decides");
    assert!(same.permit && same.only_series.is_none());
}

#[tokio::test]
async fn patients_read_their_own_linked_studies_across_hospitals_and_nothing_else() {
    let (e, w) = (engine().await, World::new());
    let me = who("R-1", Role::Patient, "portal");
    assert!(may(&e, &w, &me, Act::ReadImages, t0()));
    let at_c = StudyRef {
        owner: "hosp-c".into(),
        study_uid: "9.9".into(),
        patient_id: Some("PC-9".into()),
    };
    assert!(
        e.decide(&me, &at_c, None, Act::ReadImages, &w.facts, t0())
            .expect("decides")
            .permit
    );
    let someone_else = who("R-2", Role::Patient, "portal");
    assert!(!may(&e, &w, &someone_else, Act::ReadMetadata, t0()));
    // A patient named like the owning hospital gains nothing from it.
    let spoof = who("R-2", Role::Patient, "hosp-a");
    assert!(!may(&e, &w, &spoof, Act::ReadMetadata, t0()));
    assert!(!may(&e, &w, &me, Act::Share, t0()));
}

#[tokio::test]
async fn commission_analysts_and_the_hub_admin_read_no_study_data() {
    let (e, mut w) = (engine().await, World::new());
    w.consent();
    w.grant(
        Grantee::Institution("hosp-a".into()),
        ShareScope::Images,
        None,
        None,
    );
    for role in [Role::CommissionAnalyst, Role::HubAdmin] {
        let s = who("x", role, "hosp-a");
        for act in [Act::ReadMetadata, Act::ReadImages, Act::Share, Act::Store] {
            assert!(!may(&e, &w, &s, act, t0()), "{role} {act:?}");
        }
    }
    assert!(
        e.allows(&who("root", Role::HubAdmin, "hub"), Act::ManageRegistry)
            .expect("decides")
    );
    assert!(
        !e.allows(
            &who("a", Role::HospitalAdmin, "hosp-a"),
            Act::ManageRegistry
        )
        .expect("decides")
    );
}

#[tokio::test]
async fn ai_services_read_images_and_write_findings_but_cannot_share() {
    let (e, w) = (engine().await, World::new());
    let ai = who("svc", Role::AiService, "hosp-a");
    assert!(may(&e, &w, &ai, Act::ReadImages, t0()));
    assert!(may(&e, &w, &ai, Act::WriteFindings, t0()));
    assert!(!may(&e, &w, &ai, Act::Share, t0()));
    assert!(!may(&e, &w, &ai, Act::BreakGlass, t0()));
    let foreign = who("svc", Role::AiService, "hosp-c");
    assert!(!may(&e, &w, &foreign, Act::WriteFindings, t0()));
}

#[tokio::test]
async fn a_deidentified_grant_serves_the_deidentified_view_only() {
    let (e, mut w) = (engine().await, World::new());
    let share = w.grant(
        Grantee::Institution("hosp-c".into()),
        ShareScope::Deidentified,
        None,
        None,
    );
    let c = who("carol", Role::Radiologist, "hosp-c");
    let d = e
        .decide(&c, &study(), None, Act::ReadImages, &w.facts, t0())
        .expect("decides");
    assert!(d.permit);
    assert_eq!(d.view, View::Deidentified(share));
    let own = e
        .decide(
            &who("a", Role::Radiologist, "hosp-a"),
            &study(),
            None,
            Act::ReadImages,
            &w.facts,
            t0(),
        )
        .expect("decides");
    assert_eq!(own.view, View::Full);
}

#[tokio::test]
async fn break_the_glass_opens_a_study_for_its_time_box_only() {
    let (e, mut w) = (engine().await, World::new());
    let c = who("carol", Role::Physician, "hosp-c");
    assert!(may(&e, &w, &c, Act::BreakGlass, t0()));
    assert!(!may(&e, &w, &c, Act::ReadImages, t0()));
    let until = t0() + Duration::hours(4);
    w.add(AccessEvent::DataAccessed {
        subject: "carol".into(),
        role: "physician".into(),
        institution: "hosp-c".into(),
        action: AccessAction::BreakTheGlass,
        study_uid: Some("1.2.3".into()),
        series_uid: None,
        sop_instance_uid: None,
        purpose: PurposeOfUse::Emergency,
        decision: AccessDecision::Permit,
        reason: Some("unconscious patient in ER".into()),
        owner: Some("hosp-a".into()),
        results: vec![],
        expires_at: Some(until),
    });
    assert!(may(&e, &w, &c, Act::ReadImages, t0()));
    assert!(!may(&e, &w, &c, Act::ReadImages, until));
    // Issue 24, class 2: the session is carol@hosp-c's, not carol's at another institution.
    let other_carol = who("carol", Role::Radiologist, "hosp-b");
    assert!(!may(&e, &w, &other_carol, Act::ReadImages, t0()));
    let admin = who("root", Role::HospitalAdmin, "hosp-c");
    assert!(
        !may(&e, &w, &admin, Act::BreakGlass, t0()),
        "admins are not clinicians"
    );
}

#[tokio::test]
async fn a_search_joins_on_exactly_the_relations_the_policy_names() {
    let e = engine().await;
    let rels = |role, act| e.relations_permitting(role, act).expect("decides");
    assert_eq!(
        rels(Role::Radiologist, Act::ReadMetadata),
        vec![
            Relation::Own,
            Relation::Alliance,
            Relation::GrantMetadata,
            Relation::GrantImages,
            Relation::Consult,
            Relation::BreakGlass
        ]
    );
    assert_eq!(
        rels(Role::AiService, Act::ReadMetadata),
        vec![
            Relation::Own,
            Relation::Alliance,
            Relation::GrantMetadata,
            Relation::GrantImages
        ]
    );
    assert_eq!(
        rels(Role::Patient, Act::ReadMetadata),
        vec![Relation::Patient]
    );
    assert!(rels(Role::CommissionAnalyst, Act::ReadMetadata).is_empty());
    assert_eq!(
        rels(Role::Physician, Act::ReadDeidentified),
        vec![Relation::GrantDeidentified]
    );
    assert_eq!(
        rels(Role::HubAdmin, Act::ManageRegistry),
        vec![Relation::Any]
    );
}

impl World {
    /// A consultation on study 1.2.3 of hosp-a, asked by alice of hosp-a of bob at hosp-c, with
    /// dave of hosp-b in the team, booked for `[start, end)`.
    fn consult(&mut self, start: DateTime<Utc>, end: DateTime<Utc>) -> Uuid {
        let id = Uuid::now_v7();
        self.add(ConsultEvent::ConsultRequested {
            consult_id: id,
            study_uid: "1.2.3".into(),
            kind: ConsultKind::Mdt,
            requesting_institution: "hosp-a".into(),
            requested_by: "alice".into(),
            expert_institution: "hosp-c".into(),
            expert: Some("bob".into()),
            question: "nodule?".into(),
            owner: Some("hosp-a".into()),
            specialty: None,
            urgency: ConsultUrgency::Routine,
            participants: vec![ConsultParticipant {
                user: "dave".into(),
                institution: "hosp-b".into(),
            }],
        });
        self.add(ConsultEvent::ConsultScheduled {
            consult_id: id,
            starts_at: start,
            ends_at: end,
            time_zone: None,
        });
        id
    }
}

#[tokio::test]
async fn a_consult_window_opens_the_study_to_its_participants_from_the_lead_time_to_its_end() {
    let (e, mut w) = (engine().await, World::new());
    let (start, end) = (t0() + Duration::hours(2), t0() + Duration::hours(3));
    let lead = w.facts.consults().lead();
    w.consult(start, end);
    let bob = who("bob", Role::Radiologist, "hosp-c");
    let dave = who("dave", Role::Physician, "hosp-b");
    for s in [&bob, &dave] {
        let opens = start - lead;
        assert!(!may(
            &e,
            &w,
            s,
            Act::ReadImages,
            opens - Duration::microseconds(1)
        ));
        assert!(may(&e, &w, s, Act::ReadImages, opens));
        assert!(may(&e, &w, s, Act::ReadMetadata, start));
        assert!(may(
            &e,
            &w,
            s,
            Act::ReadImages,
            end - Duration::microseconds(1)
        ));
        assert!(!may(&e, &w, s, Act::ReadImages, end));
        assert!(
            !may(&e, &w, s, Act::Share, start),
            "a consult shares nothing on"
        );
    }
    // A colleague of the expert, and the expert under another institution, are not participants.
    assert!(!may(
        &e,
        &w,
        &who("eve", Role::Radiologist, "hosp-c"),
        Act::ReadImages,
        start
    ));
    assert!(!may(
        &e,
        &w,
        &who("bob", Role::Radiologist, "hosp-b"),
        Act::ReadImages,
        start
    ));
}

#[tokio::test]
async fn the_consult_lead_time_is_configurable() {
    let (e, mut w) = (engine().await, World::new());
    w.facts.consults_mut().set_lead(Duration::zero());
    let start = t0() + Duration::hours(2);
    w.consult(start, start + Duration::hours(1));
    let bob = who("bob", Role::Radiologist, "hosp-c");
    assert!(!may(
        &e,
        &w,
        &bob,
        Act::ReadImages,
        start - Duration::seconds(1)
    ));
    assert!(may(&e, &w, &bob, Act::ReadImages, start));
}

#[tokio::test]
async fn a_cancelled_declined_or_completed_consult_opens_nothing() {
    let e = engine().await;
    let start = t0() + Duration::hours(2);
    let bob = who("bob", Role::Radiologist, "hosp-c");
    let ends: [fn(Uuid) -> ConsultEvent; 3] = [
        |consult_id| ConsultEvent::ConsultCancelled {
            consult_id,
            reason: "patient transferred".into(),
        },
        |consult_id| ConsultEvent::ConsultDeclined {
            consult_id,
            expert: "bob".into(),
            reason: "on leave".into(),
        },
        |consult_id| ConsultEvent::ConsultCompleted {
            consult_id,
            report_id: None,
        },
    ];
    for end in ends {
        let mut w = World::new();
        let id = w.consult(start, start + Duration::hours(1));
        assert!(may(&e, &w, &bob, Act::ReadImages, start));
        w.add(end(id));
        assert!(!may(&e, &w, &bob, Act::ReadImages, start));
    }
}

#[tokio::test]
async fn a_consult_window_admits_clinicians_only() {
    let (e, mut w) = (engine().await, World::new());
    let start = t0() + Duration::hours(2);
    let id = Uuid::now_v7();
    w.add(ConsultEvent::ConsultRequested {
        consult_id: id,
        study_uid: "1.2.3".into(),
        kind: ConsultKind::Remote,
        requesting_institution: "hosp-a".into(),
        requested_by: "alice".into(),
        expert_institution: "hosp-c".into(),
        expert: Some("root".into()),
        question: "?".into(),
        owner: Some("hosp-a".into()),
        specialty: None,
        urgency: ConsultUrgency::Urgent,
        participants: vec![],
    });
    w.add(ConsultEvent::ConsultScheduled {
        consult_id: id,
        starts_at: start,
        ends_at: start + Duration::hours(1),
        time_zone: None,
    });
    assert!(!may(
        &e,
        &w,
        &who("root", Role::HospitalAdmin, "hosp-c"),
        Act::ReadImages,
        start
    ));
}
