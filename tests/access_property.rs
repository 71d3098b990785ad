//! The access decision (`hub_policies::Engine::decide` over the Casbin model, the policy and the
//! facts projected from events) against an independent oracle (`access_oracle.rs`), on random
//! worlds: institutions, alliances joined and left, studies and series, patient links, consents
//! and withdrawals, shares of every grantee kind and scope (revoked, expired, expiring at the
//! instant checked), break-the-glass sessions, and users of every role. Every (user, study,
//! series or none, act, instant) is compared: permit, view (full or de-identified with the same
//! share) and the series a study-level permit is limited to. The same worlds, projected into the
//! read models, check every search (studies, series, instances) the SQL visibility filter answers
//! against what the oracle permits. `PROPTEST_CASES` sets the number of worlds (48 by default).
//!
//! The fixed worlds at the end are disagreements the property found, kept as they were found.

mod access_oracle;
mod pg_support;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

use access_oracle::{Oracle, Verdict};
use chrono::{DateTime, Duration, TimeZone, Utc};
use hub_application::Searcher;
use hub_deid::Deidentifier;
use hub_events::catalog::{
    AccessAction, AccessEvent, AllianceEvent, ConsentEvent, ConsultEvent, ConsultKind,
    ConsultParticipant, ConsultUrgency, Decision as AccessDecision, Grantee, InstitutionEvent,
    InstitutionKind, PatientEvent, PurposeOfUse, ShareEvent, ShareScope, StudyEvent,
};
use hub_events::catalog::{ConsentPolicy, IngestSource, SeriesInstances, StoredInstance, UserId};
use hub_events::{EventMetadata, HubEvent, RecordedEvent, StreamId};
use hub_policies::{AccessControl, Act, Engine, Facts, Role, StudyRef, Subject, View};
use hub_projections::study_catalog::CatalogStudy;
use hub_projections::{
    AccessIndex, Projection, ReadModelDb, SeriesQuery, StudyCatalog, StudyQuery,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use uuid::Uuid;

/// Worlds per run. Each compares a few thousand decisions.
const CASES: u32 = 48;
/// Decisions a run must compare at the least.
const MIN_CHECKS: usize = 10_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0)
        .single()
        .expect("valid time")
}

/// Expiries a share or a break-the-glass session may have; `None` never ends.
fn expiry(i: usize) -> Option<DateTime<Utc>> {
    [
        None,
        Some(t0() - Duration::hours(1)),
        Some(t0() + Duration::hours(1)),
        Some(t0() + Duration::hours(2)),
        Some(t0() + Duration::hours(10)),
    ][i % 5]
}

/// The instants every request is checked at: before every expiry but the past one, just before
/// one, exactly at one, exactly at another (which is after the first).
fn instants() -> [DateTime<Utc>; 4] {
    [
        t0(),
        t0() + Duration::hours(1) - Duration::microseconds(1),
        t0() + Duration::hours(1),
        t0() + Duration::hours(2),
    ]
}

const ACTS: [Act; 8] = [
    Act::ReadMetadata,
    Act::ReadImages,
    Act::Store,
    Act::Share,
    Act::BreakGlass,
    Act::ReadAudit,
    Act::ManagePatients,
    Act::WriteFindings,
];

// ---------------------------------------------------------------------------------------------
// The random world, as indices into small pools (so that names collide and proptest shrinks).

#[derive(Clone, Debug)]
struct StudySpec {
    owner: usize,
    uid: usize,
    series: usize,
    patient: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
enum GranteeSpec {
    /// `hosp-<i>`, or an institution that is not registered.
    Institution(usize),
    /// `u<i>` (or a regional patient id `R<i>`) of institution `hosp-<j>` (or one that is not
    /// registered).
    User(usize, usize, bool),
    /// A user grant of ShareGranted v2, naming `u<i>` without an institution.
    UnscopedUser(usize),
    /// `al<i>`; `al2` is never registered.
    Alliance(usize),
}

#[derive(Clone, Copy, Debug)]
enum GlassKind {
    Valid,
    Denied,
    OtherAction,
    NoOwner,
    NoExpiry,
    OtherOwner,
}

#[derive(Clone, Debug)]
enum Op {
    /// A consultation on a study between users `u<n>` of institutions (`people`: requester,
    /// expert, optional team participant), booked in one of `consult_slot`'s slots, then
    /// followed by `then` (see [`consult_follow_up`]).
    Consult {
        study: usize,
        people: [(usize, usize); 3],
        named_expert: bool,
        team: bool,
        slot: usize,
        then: usize,
        owner_known: bool,
        /// The owner approves it right after the request (`ConsultApproved`).
        approved: bool,
    },
    Join {
        alliance: usize,
        inst: usize,
    },
    Leave {
        alliance: usize,
        inst: usize,
    },
    /// Links the study's patient at its owner.
    LinkStudy {
        study: usize,
        regional: usize,
    },
    Link {
        inst: usize,
        local: usize,
        regional: usize,
    },
    /// A consent of `R<regional>` recorded at `hosp-<inst>`: by the patient themselves, or by
    /// the institution (which may not have the patient linked: such a consent counts for nothing).
    Consent {
        regional: usize,
        inst: usize,
        by_patient: bool,
    },
    /// Withdraws the n-th consent recorded so far.
    Withdraw {
        consent: usize,
    },
    Grant {
        study: usize,
        series: Option<usize>,
        grantee: GranteeSpec,
        scope: ShareScope,
        expiry: usize,
    },
    /// Revokes the n-th share granted so far.
    Revoke {
        share: usize,
    },
    /// Appends `ShareExpired` for the n-th share granted so far.
    Expire {
        share: usize,
    },
    /// A break-the-glass session of `u<who>` of institution `inst`.
    Glass {
        who: usize,
        inst: usize,
        study: usize,
        expiry: usize,
        kind: GlassKind,
        role: Role,
    },
}

#[derive(Clone, Debug)]
struct Spec {
    institutions: usize,
    alliances: usize,
    studies: Vec<StudySpec>,
    ops: Vec<Op>,
    /// One user of each role of `Role::ALL`, then more of random roles: (role, institution, id).
    users: Vec<(Role, usize, usize)>,
    /// Mixed into share ids, so that their order is not the order they were granted in.
    salt: u64,
}

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

fn scope() -> impl Strategy<Value = ShareScope> {
    prop::sample::select(vec![
        ShareScope::Metadata,
        ShareScope::Images,
        ShareScope::Deidentified,
    ])
}

fn grantee() -> impl Strategy<Value = GranteeSpec> {
    prop_oneof![
        3 => (0..6usize).prop_map(GranteeSpec::Institution),
        2 => (0..4usize, 0..6usize, prop::bool::weighted(0.2))
            .prop_map(|(i, j, p)| GranteeSpec::User(i, j, p)),
        1 => (0..4usize).prop_map(GranteeSpec::UnscopedUser),
        2 => (0..3usize).prop_map(GranteeSpec::Alliance),
    ]
}

fn glass_kind() -> impl Strategy<Value = GlassKind> {
    prop_oneof![
        6 => Just(GlassKind::Valid),
        1 => Just(GlassKind::Denied),
        1 => Just(GlassKind::OtherAction),
        1 => Just(GlassKind::NoOwner),
        1 => Just(GlassKind::NoExpiry),
        1 => Just(GlassKind::OtherOwner),
    ]
}

/// Consultation slots around the instants requests are checked at (the lead is 30 minutes):
/// opening exactly at `t0`, opening at `t0 + 1h` and ending at `t0 + 2h`, open since before
/// `t0` and ending exactly at `t0 + 1h`, opening a minute after `t0`.
fn consult_slot(i: usize) -> (DateTime<Utc>, DateTime<Utc>) {
    let m = Duration::minutes;
    [
        (t0() + m(30), t0() + m(60)),
        (t0() + m(90), t0() + m(120)),
        (t0() - m(60), t0() + m(60)),
        (t0() + m(31), t0() + m(180)),
    ][i % 4]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..6usize,
            prop::array::uniform3((0..4usize, 0..6usize)),
            prop::bool::weighted(0.7),
            prop::bool::weighted(0.4),
            0..4usize,
            0..7usize,
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.6),
        )
            .prop_map(
                |(study, people, named_expert, team, slot, then, owner_known, approved)| {
                    Op::Consult {
                        study,
                        people,
                        named_expert,
                        team,
                        slot,
                        then,
                        owner_known,
                        approved,
                    }
                },
            ),
        4 => (0..2usize, 0..5usize).prop_map(|(alliance, inst)| Op::Join { alliance, inst }),
        2 => (0..2usize, 0..5usize).prop_map(|(alliance, inst)| Op::Leave { alliance, inst }),
        4 => (0..6usize, 0..4usize).prop_map(|(study, regional)| Op::LinkStudy { study, regional }),
        1 => (0..5usize, 0..4usize, 0..4usize)
            .prop_map(|(inst, local, regional)| Op::Link { inst, local, regional }),
        3 => (0..5usize, 0..5usize, prop::bool::weighted(0.2))
            .prop_map(|(regional, inst, by_patient)| Op::Consent { regional, inst, by_patient }),
        1 => (0..8usize).prop_map(|consent| Op::Withdraw { consent }),
        8 => (0..6usize, prop::option::weighted(0.4, 0..3usize), grantee(), scope(), 0..5usize)
            .prop_map(|(study, series, grantee, scope, expiry)| Op::Grant {
                study,
                series,
                grantee,
                scope,
                expiry,
            }),
        1 => (0..16usize).prop_map(|share| Op::Revoke { share }),
        1 => (0..16usize).prop_map(|share| Op::Expire { share }),
        3 => (0..5usize, 0..6usize, 0..6usize, 0..5usize, glass_kind(), role()).prop_map(
            |(who, inst, study, expiry, kind, role)| Op::Glass { who, inst, study, expiry, kind, role }
        ),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let study = (
        0..5usize,
        0..3usize,
        1..=3usize,
        prop::option::weighted(0.85, 0..4usize),
    )
        .prop_map(|(owner, uid, series, patient)| StudySpec {
            owner,
            uid,
            series,
            patient,
        });
    (
        2..=5usize,
        0..=2usize,
        prop::collection::vec(study, 1..=6),
        prop::collection::vec(op(), 0..40),
        prop::array::uniform7((0..6usize, 0..5usize)),
        prop::collection::vec((role(), 0..6usize, 0..5usize), 0..5),
        any::<u64>(),
    )
        .prop_map(
            |(institutions, alliances, studies, ops, fixed, extra, salt)| Spec {
                institutions,
                alliances,
                studies,
                ops,
                users: Role::ALL
                    .into_iter()
                    .zip(fixed)
                    .map(|(role, (inst, id))| (role, inst, id))
                    .chain(extra)
                    .collect(),
                salt,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// The world the spec describes: its events, studies (with series) and users.

struct World {
    events: Vec<HubEvent>,
    studies: Vec<(StudyRef, Vec<String>)>,
    users: Vec<Subject>,
    /// Consents recorded by an institution where the patient was not linked (they count for
    /// nothing).
    stranger_consents: usize,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl World {
    fn build(spec: &Spec) -> World {
        let n = spec.institutions;
        let inst = |i: usize| format!("hosp-{}", i % n);
        // An index past the registered institutions names one the hub does not know.
        let inst_or_stranger = |i: usize| {
            if i % (n + 1) == n {
                "elsewhere".to_owned()
            } else {
                inst(i)
            }
        };
        let mut events: Vec<HubEvent> = Vec::new();
        for i in 0..n {
            events.push(
                InstitutionEvent::InstitutionRegistered {
                    institution_id: inst(i),
                    name: inst(i),
                    kind: InstitutionKind::Hospital,
                    ae_titles: vec![],
                }
                .into(),
            );
        }
        for a in 0..spec.alliances {
            events.push(
                AllianceEvent::AllianceRegistered {
                    alliance_id: format!("al{a}"),
                    name: format!("Alliance {a}"),
                    lead_institution: inst(a),
                }
                .into(),
            );
        }
        let mut studies: Vec<(StudyRef, Vec<String>)> = Vec::new();
        for (k, s) in spec.studies.iter().enumerate() {
            let owner = inst(s.owner);
            let mut uid = format!("1.2.{}", s.uid);
            // Two institutions may hold the same Study UID; one institution holds it once.
            if studies
                .iter()
                .any(|(r, _)| r.owner == owner && r.study_uid == uid)
            {
                uid = format!("1.2.{}.{k}", s.uid);
            }
            let series = (0..s.series)
                .map(|j| format!("{uid}.{}.{j}", s.owner % n))
                .collect();
            let study = StudyRef {
                owner,
                study_uid: uid,
                patient_id: s.patient.map(|p| format!("P{p}")),
            };
            events.push(
                StudyEvent::StudyRegistered {
                    study_uid: study.study_uid.clone(),
                    owner: study.owner.clone(),
                    patient_id: study.patient_id.clone(),
                    // Identifying values a de-identified view removes, for searches to try.
                    patient_name: s.patient.map(|p| format!("{}^P{p}", ["Doe", "Roe"][p % 2])),
                    patient_birth_date: None,
                    patient_sex: None,
                    study_date: Some(format!("202601{:02}", 1 + k % 28)),
                    study_time: None,
                    accession_number: Some(format!("ACC-{k}")),
                    study_description: None,
                    referring_physician: None,
                }
                .into(),
            );
            studies.push((study, series));
        }
        let mut linked: BTreeSet<(String, String)> = BTreeSet::new();
        // (institution, regional id) linked so far, and users the ops name: the same subject
        // at another institution and in another role is checked beside the one named.
        let mut linking: BTreeSet<(String, String)> = BTreeSet::new();
        let mut stranger_consents = 0;
        let mut named: Vec<Subject> = Vec::new();
        let mut name = |id: String, role: Role, institution: String| {
            let s = Subject {
                id,
                role,
                institution,
            };
            if !named.contains(&s) {
                named.push(s);
            }
        };
        let mut consents: Vec<(Uuid, String)> = Vec::new();
        let mut shares: Vec<Uuid> = Vec::new();
        let mut link = |events: &mut Vec<HubEvent>,
                        linking: &mut BTreeSet<(String, String)>,
                        inst: String,
                        local: String,
                        regional: usize| {
            // One regional id per local patient: a second link of the same one is not made.
            if linked.insert((inst.clone(), local.clone())) {
                linking.insert((inst.clone(), format!("R{regional}")));
                events.push(
                    PatientEvent::PatientLinked {
                        regional_patient_id: format!("R{regional}"),
                        institution_id: inst,
                        local_patient_id: local,
                        issuer_of_patient_id: None,
                    }
                    .into(),
                );
            }
        };
        let mut consults = 0u64;
        for op in &spec.ops {
            match op.clone() {
                Op::Consult {
                    study,
                    people,
                    named_expert,
                    team,
                    slot,
                    then,
                    owner_known,
                    approved,
                } => {
                    let (s, _) = &studies[study % studies.len()];
                    let id = Uuid::from_u64_pair(0xC5, consults);
                    consults += 1;
                    let person =
                        |(user, i): (usize, usize)| (format!("u{user}"), inst_or_stranger(i));
                    let (requester, requesting) = person(people[0]);
                    let (expert, expert_institution) = person(people[1]);
                    let (member, member_institution) = person(people[2]);
                    events.push(
                        ConsultEvent::ConsultRequested {
                            consult_id: id,
                            study_uid: s.study_uid.clone(),
                            kind: if team {
                                ConsultKind::Mdt
                            } else {
                                ConsultKind::Remote
                            },
                            requesting_institution: requesting,
                            requested_by: requester,
                            expert_institution,
                            expert: named_expert.then(|| expert.clone()),
                            question: "?".into(),
                            owner: owner_known.then(|| s.owner.clone()),
                            specialty: None,
                            urgency: ConsultUrgency::Routine,
                            participants: if team {
                                vec![ConsultParticipant {
                                    user: member,
                                    institution: member_institution,
                                }]
                            } else {
                                vec![]
                            },
                        }
                        .into(),
                    );
                    if approved {
                        events.push(
                            ConsultEvent::ConsultApproved {
                                consult_id: id,
                                approved_by: "admin".into(),
                                institution: s.owner.clone(),
                            }
                            .into(),
                        );
                    }
                    // 0: left requested, 1: scheduled, 2: accepted, 3: rescheduled,
                    // 4: cancelled, 5: declined, 6: completed.
                    if then == 0 {
                        continue;
                    }
                    let (starts_at, ends_at) = consult_slot(slot);
                    events.push(
                        ConsultEvent::ConsultScheduled {
                            consult_id: id,
                            starts_at,
                            ends_at,
                            time_zone: None,
                        }
                        .into(),
                    );
                    let accepted = ConsultEvent::ConsultAccepted {
                        consult_id: id,
                        expert,
                    };
                    match then {
                        2 => events.push(accepted.into()),
                        3 => {
                            let (starts_at, ends_at) = consult_slot(slot + 1);
                            events.push(
                                ConsultEvent::ConsultRescheduled {
                                    consult_id: id,
                                    starts_at,
                                    ends_at,
                                    reason: "moved".into(),
                                    time_zone: None,
                                }
                                .into(),
                            );
                        }
                        4 => events.push(
                            ConsultEvent::ConsultCancelled {
                                consult_id: id,
                                reason: "resolved".into(),
                            }
                            .into(),
                        ),
                        5 => events.push(
                            ConsultEvent::ConsultDeclined {
                                consult_id: id,
                                expert: "u0".into(),
                                reason: "away".into(),
                            }
                            .into(),
                        ),
                        6 => {
                            events.push(accepted.into());
                            events.push(
                                ConsultEvent::ConsultCompleted {
                                    consult_id: id,
                                    report_id: None,
                                }
                                .into(),
                            );
                        }
                        _ => {}
                    }
                }
                Op::Join { alliance, inst: i } if spec.alliances > 0 => events.push(
                    AllianceEvent::InstitutionJoinedAlliance {
                        alliance_id: format!("al{}", alliance % spec.alliances),
                        institution_id: inst(i),
                    }
                    .into(),
                ),
                Op::Leave { alliance, inst: i } if spec.alliances > 0 => events.push(
                    AllianceEvent::InstitutionLeftAlliance {
                        alliance_id: format!("al{}", alliance % spec.alliances),
                        institution_id: inst(i),
                    }
                    .into(),
                ),
                Op::Join { .. } | Op::Leave { .. } => {}
                Op::LinkStudy { study, regional } => {
                    let (s, _) = &studies[study % studies.len()];
                    if let Some(local) = &s.patient_id {
                        link(
                            &mut events,
                            &mut linking,
                            s.owner.clone(),
                            local.clone(),
                            regional,
                        );
                    }
                }
                Op::Link {
                    inst: i,
                    local,
                    regional,
                } => link(
                    &mut events,
                    &mut linking,
                    inst(i),
                    format!("P{local}"),
                    regional,
                ),
                Op::Consent {
                    regional,
                    inst: i,
                    by_patient,
                } => {
                    let id = Uuid::from_u64_pair(0xC0, consents.len() as u64);
                    let regional = format!("R{regional}");
                    consents.push((id, regional.clone()));
                    if !by_patient && !linking.contains(&(inst(i), regional.clone())) {
                        stranger_consents += 1;
                    }
                    // The admins of the recording institution and of one more are asked who
                    // may manage this patient's consents.
                    name("u0".into(), Role::HospitalAdmin, inst(i));
                    name("u1".into(), Role::HospitalAdmin, inst(i + 1));
                    events.push(
                        ConsentEvent::ConsentRecorded {
                            consent_id: id,
                            regional_patient_id: regional,
                            institution_id: inst(i),
                            by_patient,
                            // One in three is a refusal.
                            policy: if consents.len().is_multiple_of(3) {
                                ConsentPolicy::Refused
                            } else {
                                ConsentPolicy::AllianceMetadata
                            },
                            v1_policy_text: None,
                        }
                        .into(),
                    );
                }
                Op::Withdraw { consent } if !consents.is_empty() => {
                    let (id, regional) = consents[consent % consents.len()].clone();
                    events.push(
                        ConsentEvent::ConsentWithdrawn {
                            consent_id: id,
                            regional_patient_id: regional,
                            reason: None,
                        }
                        .into(),
                    );
                }
                Op::Withdraw { .. } => {}
                Op::Grant {
                    study,
                    series,
                    grantee,
                    scope,
                    expiry: e,
                } => {
                    let (s, all_series) = &studies[study % studies.len()];
                    let id = Uuid::from_u64_pair(
                        splitmix(spec.salt.wrapping_add(shares.len() as u64)),
                        shares.len() as u64,
                    );
                    shares.push(id);
                    events.push(
                        ShareEvent::ShareGranted {
                            share_id: id,
                            study_uid: s.study_uid.clone(),
                            series_uid: series.map(|j| all_series[j % all_series.len()].clone()),
                            owner: s.owner.clone(),
                            grantee: match grantee {
                                GranteeSpec::Institution(i) => {
                                    Grantee::Institution(inst_or_stranger(i))
                                }
                                GranteeSpec::User(i, j, patient) => {
                                    let subject = format!("{}{i}", if patient { "R" } else { "u" });
                                    // The user, the same subject at the next institution and
                                    // in another role, and at an unregistered institution.
                                    for (role, at) in [
                                        (Role::Radiologist, inst_or_stranger(j)),
                                        (Role::Physician, inst_or_stranger(j + 1)),
                                        (Role::AiService, "elsewhere".to_owned()),
                                    ] {
                                        name(subject.clone(), role, at);
                                    }
                                    Grantee::User(UserId {
                                        institution: inst_or_stranger(j),
                                        subject,
                                    })
                                }
                                GranteeSpec::UnscopedUser(i) => {
                                    name(format!("u{i}"), Role::Radiologist, inst(i));
                                    Grantee::UnscopedUser(format!("u{i}"))
                                }
                                GranteeSpec::Alliance(a) => Grantee::Alliance(format!("al{a}")),
                            },
                            scope,
                            purpose: PurposeOfUse::Treatment,
                            expires_at: expiry(e),
                        }
                        .into(),
                    );
                }
                Op::Revoke { share } if !shares.is_empty() => events.push(
                    ShareEvent::ShareRevoked {
                        share_id: shares[share % shares.len()],
                        reason: "sent in error".into(),
                    }
                    .into(),
                ),
                Op::Expire { share } if !shares.is_empty() => events.push(
                    ShareEvent::ShareExpired {
                        share_id: shares[share % shares.len()],
                    }
                    .into(),
                ),
                Op::Revoke { .. } | Op::Expire { .. } => {}
                Op::Glass {
                    who,
                    inst: at,
                    study,
                    expiry: e,
                    kind,
                    role,
                } => {
                    // Who opened it, and the same subject at another institution.
                    name(format!("u{who}"), Role::Physician, inst_or_stranger(at));
                    name(
                        format!("u{who}"),
                        Role::Radiologist,
                        inst_or_stranger(at + 1),
                    );
                    let (s, _) = &studies[study % studies.len()];
                    let owner = match kind {
                        GlassKind::NoOwner => None,
                        GlassKind::OtherOwner => {
                            Some(inst(spec.studies[study % studies.len()].owner + 1))
                        }
                        _ => Some(s.owner.clone()),
                    };
                    events.push(
                        AccessEvent::DataAccessed {
                            subject: format!("u{who}"),
                            role: role.as_str().into(),
                            institution: inst_or_stranger(at),
                            action: match kind {
                                GlassKind::OtherAction => AccessAction::RetrieveStudy,
                                _ => AccessAction::BreakTheGlass,
                            },
                            study_uid: Some(s.study_uid.clone()),
                            series_uid: None,
                            sop_instance_uid: None,
                            purpose: PurposeOfUse::Emergency,
                            decision: match kind {
                                GlassKind::Denied => AccessDecision::Deny,
                                _ => AccessDecision::Permit,
                            },
                            reason: Some("unconscious patient in ER".into()),
                            owner,
                            results: vec![],
                            expires_at: match kind {
                                GlassKind::NoExpiry => None,
                                _ => Some(expiry(e).unwrap_or(t0() + Duration::hours(2))),
                            },
                        }
                        .into(),
                    );
                }
            }
        }
        let mut users: Vec<Subject> = spec
            .users
            .iter()
            .map(|&(role, i, id)| Subject {
                // A patient's id is a regional patient id (`R4` is never linked).
                id: if role == Role::Patient {
                    format!("R{id}")
                } else {
                    format!("u{}", id % 4)
                },
                role,
                institution: inst_or_stranger(i),
            })
            .collect();
        for s in named {
            if !users.contains(&s) {
                users.push(s);
            }
        }
        World {
            events,
            studies,
            users,
            stranger_consents,
        }
    }

    /// The facts the engine decides on, projected from the events as the hub does.
    fn facts(&self) -> Facts {
        let mut facts = Facts::new();
        for (i, event) in self.events.iter().enumerate() {
            let position = i as u64 + 1;
            let new = event.to_new_event(EventMetadata::new("hub", "user:admin"));
            let recorded = RecordedEvent {
                position,
                event_id: new.event_id,
                stream_id: StreamId::new(event.family(), "x"),
                stream_version: 1,
                event_type: new.event_type,
                schema_version: new.schema_version,
                payload: new.payload,
                // A few events share a timestamp, as events appended together do.
                recorded_at: t0() - Duration::days(1) + Duration::seconds(position as i64 / 3),
                metadata: new.metadata,
            };
            facts.apply(&recorded, event);
        }
        facts
    }

    fn oracle(&self) -> Oracle {
        let mut oracle = Oracle::new();
        for event in &self.events {
            oracle.apply(event);
        }
        oracle
    }

    /// The events, one a line, for a failure report.
    fn describe(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            let _ = writeln!(out, "    {e:?}");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The comparison.

#[derive(Default)]
struct Tally {
    checks: usize,
    permits: usize,
    deidentified: usize,
    only_series: usize,
    visible: usize,
    /// Who may manage whose consents: asked, refused, and consents by strangers in the worlds.
    consent_checks: usize,
    consent_refusals: usize,
    stranger_consents: usize,
}

fn verdict_of(d: &hub_policies::Decision) -> Verdict {
    Verdict {
        permit: d.permit,
        view: d.view,
        only_series: d.only_series.clone(),
    }
}

/// Every request of every user of `world` at every instant, decided by the engine and by the
/// oracle; the first disagreement fails.
fn compare(engine: &Engine, world: &World) -> Result<Tally, TestCaseError> {
    let facts = world.facts();
    let oracle = world.oracle();
    let mut tally = Tally::default();
    let fail =
        |what: String| TestCaseError::fail(format!("{what}\n  events:\n{}", world.describe()));
    for subject in &world.users {
        for act in [Act::ManageRegistry, Act::ReadEventLog] {
            let registry = engine
                .allows(subject, act)
                .map_err(|e| fail(e.to_string()))?;
            tally.checks += 1;
            if registry != oracle.allows(subject, act) {
                return Err(fail(format!(
                    "allows({subject:?}, {act:?}): engine {registry}, oracle {}",
                    !registry
                )));
            }
        }
        for now in instants() {
            let mut visible = BTreeSet::new();
            for (study, series) in &world.studies {
                let asked = std::iter::once(None).chain(series.iter().map(|s| Some(s.as_str())));
                for series in asked {
                    for act in ACTS {
                        let decision = engine
                            .decide(subject, study, series, act, &facts, now)
                            .map_err(|e| fail(e.to_string()))?;
                        let engine_says = verdict_of(&decision);
                        let oracle_says = oracle.decide(subject, study, series, act, now);
                        tally.checks += 1;
                        if engine_says != oracle_says {
                            return Err(fail(format!(
                                "decide({subject:?}, {study:?}, series {series:?}, {act:?}, {now}):\n  \
                                 engine {engine_says:?} ({})\n  oracle {oracle_says:?}",
                                decision.reason
                            )));
                        }
                        if engine_says.permit {
                            tally.permits += 1;
                            tally.deidentified +=
                                matches!(engine_says.view, hub_policies::View::Deidentified(_))
                                    as usize;
                            tally.only_series += engine_says.only_series.is_some() as usize;
                            if act == Act::ReadMetadata && series.is_none() {
                                visible.insert((study.owner.clone(), study.study_uid.clone()));
                            }
                        }
                    }
                }
            }
            // What a search may show is what single reads of the metadata permit.
            let oracle_visible = oracle.visible_studies(subject, now);
            if oracle_visible != visible {
                return Err(fail(format!(
                    "visible studies of {subject:?} at {now}: decide permits {visible:?}, \
                     oracle.visible_studies {oracle_visible:?}"
                )));
            }
            tally.visible += visible.len();
        }
    }
    Ok(tally)
}

/// Who may record, list and withdraw the consents of each patient (`R0`..`R4`, `R4` never
/// linked): every user of `world`, by the engine on the projected facts and by the oracle. A
/// refusal here is what the sharing commands answer (404, or 403 for a role that never may);
/// the consents strangers recorded anyway are in the world's events, and [`compare`] holds
/// that they grant nothing. Returns (checks, refusals).
fn compare_consent_rights(engine: &Engine, world: &World) -> Result<(usize, usize), TestCaseError> {
    let facts = world.facts();
    let oracle = world.oracle();
    let (mut checks, mut refusals) = (0, 0);
    for subject in &world.users {
        for regional in (0..5).map(|r| format!("R{r}")) {
            let engine_says = engine
                .may_manage_consents(subject, &regional, &facts, t0())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let oracle_says = oracle.may_manage_consents(subject, &regional);
            if engine_says != oracle_says {
                return Err(TestCaseError::fail(format!(
                    "may_manage_consents({subject:?}, {regional}): engine {engine_says}, \
                     oracle {oracle_says}\n  events:\n{}",
                    world.describe()
                )));
            }
            checks += 1;
            refusals += usize::from(!engine_says);
        }
    }
    Ok((checks, refusals))
}

// ---------------------------------------------------------------------------------------------
// The search: the SQL filter over the projected read models against the oracle.

/// The world's log as the hub records it: study events under their owner's tenant, each study
/// followed by one stored instance per series, so the catalog has series and instance rows.
fn recorded(world: &World) -> Vec<(RecordedEvent, HubEvent)> {
    let mut out = Vec::new();
    let mut push = |event: HubEvent, tenant: &str| {
        let position = out.len() as u64 + 1;
        let new = event.to_new_event(EventMetadata::new(tenant, "user:admin"));
        let record = RecordedEvent {
            position,
            event_id: new.event_id,
            stream_id: StreamId::new(event.family(), "x"),
            stream_version: 1,
            event_type: new.event_type,
            schema_version: new.schema_version,
            payload: new.payload,
            recorded_at: t0() - Duration::days(1) + Duration::seconds(position as i64),
            metadata: new.metadata,
        };
        out.push((record, event));
    };
    for event in &world.events {
        let HubEvent::Study(StudyEvent::StudyRegistered {
            study_uid, owner, ..
        }) = event
        else {
            push(event.clone(), "hub");
            continue;
        };
        push(event.clone(), owner);
        let (_, series) = world
            .studies
            .iter()
            .find(|(s, _)| &s.owner == owner && &s.study_uid == study_uid)
            .expect("every registered study is one of the world's");
        let stored = StudyEvent::InstancesStored {
            study_uid: study_uid.clone(),
            source: IngestSource::StowRs {
                request_id: "r".into(),
            },
            series: series
                .iter()
                .map(|uid| SeriesInstances {
                    series_uid: uid.clone(),
                    modality: Some("CT".into()),
                    series_number: Some(1),
                    series_description: None,
                    instances: vec![StoredInstance {
                        sop_instance_uid: format!("{uid}.1"),
                        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                        instance_number: Some(1),
                        blob_key: format!("{owner}/{uid}.1"),
                        size_bytes: 1,
                        sha256: "00".into(),
                    }],
                })
                .collect(),
        };
        push(stored.into(), owner);
    }
    out
}

/// Projects `world` into fresh read models (the study catalog and the access index, as the hub
/// does): a new SQLite file, or, given `postgres`, that database's tables dropped and created
/// again. Returns the database with the directory that holds a SQLite file.
async fn read_models(
    world: &World,
    postgres: Option<&ReadModelDb>,
) -> (tempfile::TempDir, ReadModelDb) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = match postgres {
        Some(db) => db.clone(),
        None => ReadModelDb::open(&dir.path().join("read.sqlite"))
            .await
            .expect("read-model database"),
    };
    let projections: [&dyn Projection; 2] = [&StudyCatalog, &AccessIndex];
    let mut tx = db.begin_write().await.expect("transaction");
    for projection in projections {
        projection.drop_tables(&mut tx).await.expect("drop tables");
        projection.create(&mut tx).await.expect("tables");
    }
    for (record, event) in recorded(world) {
        for projection in projections {
            projection
                .apply(&mut tx, &record, &event)
                .await
                .expect("the projection applies the event");
        }
    }
    tx.commit().await.expect("commit");
    (dir, db)
}

/// The key de-identified views are keyed with in these worlds.
const DEID_SECRET: &[u8] = b"access-property";

/// A study as a search shows it: owner, study UID as stored, view.
type ShownStudy = (String, String, View);

/// Whether a catalog row (second) matches a probe built from another one's originals (first).
type Matches = fn(&CatalogStudy, &CatalogStudy) -> bool;

/// Every search (studies, series, instances) of every user of `world` at every instant, run as
/// the gateway runs it (the application layer's search: the viewer's relations from the policy,
/// the filter in SQL, de-identified rows matched on what their view shows), against what the
/// oracle permits a single read of the metadata, in the view it permits; the study search paged
/// by two against one page; searches on every value a de-identified view removes (name, patient
/// id, accession number, date, original UIDs) and on the mapped UIDs it shows. Returns the
/// result sets compared.
async fn compare_search(
    world: &World,
    postgres: Option<&ReadModelDb>,
) -> Result<usize, TestCaseError> {
    let (_dir, db) = read_models(world, postgres).await;
    let pool = db.pool();
    let oracle = world.oracle();
    let fail =
        |what: String| TestCaseError::fail(format!("{what}\n  events:\n{}", world.describe()));
    let search_error =
        |e: hub_application::SearchError| TestCaseError::fail(format!("search failed: {e}"));
    let (originals, _) = StudyCatalog::snapshot(pool)
        .await
        .map_err(|e| TestCaseError::fail(format!("snapshot failed: {e}")))?;
    let mut compared = 0;
    for now in instants() {
        let access = AccessControl::from_facts(
            Engine::new().await.expect("the shipped policy loads"),
            world.facts(),
            std::sync::Arc::new(move || now),
        );
        let searcher = Searcher {
            pool,
            access: &access,
            deid_secret: DEID_SECRET,
        };
        for subject in &world.users {
            let studies = |query: StudyQuery| {
                let searcher = &searcher;
                async move {
                    let (rows, more) = searcher
                        .studies(subject, &query)
                        .await
                        .map_err(search_error)?;
                    let rows: Vec<ShownStudy> = rows
                        .into_iter()
                        .map(|s| (s.row.institution, s.row.study_uid, s.view))
                        .collect();
                    Ok::<_, TestCaseError>((rows, more))
                }
            };
            let (in_order, more) = studies(StudyQuery {
                limit: 1000,
                ..StudyQuery::default()
            })
            .await?;
            // Pages of two, one after the other, list the same studies in the same order.
            let mut paged = Vec::new();
            for offset in (0..).step_by(2) {
                let (rows, more) = studies(StudyQuery {
                    limit: 2,
                    offset,
                    ..StudyQuery::default()
                })
                .await?;
                paged.extend(rows);
                if !more {
                    break;
                }
            }
            if paged != in_order {
                return Err(fail(format!(
                    "study search of {subject:?} at {now}: pages of two list {paged:?}, \
                     one page lists {in_order:?}"
                )));
            }
            let found: BTreeSet<ShownStudy> = in_order.into_iter().collect();
            let expected: BTreeSet<ShownStudy> = world
                .studies
                .iter()
                .filter_map(|(s, _)| {
                    let v = oracle.decide(subject, s, None, Act::ReadMetadata, now);
                    v.permit
                        .then(|| (s.owner.clone(), s.study_uid.clone(), v.view))
                })
                .collect();
            if found != expected || more {
                return Err(fail(format!(
                    "study search of {subject:?} at {now}: it shows {found:?} (more: {more}), \
                     the oracle permits {expected:?}"
                )));
            }
            let in_full = |s: &CatalogStudy| {
                expected.contains(&(s.institution.clone(), s.study_uid.clone(), View::Full))
            };
            // Searches on what a de-identified view removes find only studies shown in full:
            // the original UID (a key an index answers, so the search probes each match's
            // shares), the patient's name (by its first letter, and whole), id, accession
            // number and date.
            for original in &originals {
                let name = original.patient_name.clone();
                let probes: Vec<(&str, StudyQuery, Matches)> = vec![
                    (
                        "StudyInstanceUID",
                        StudyQuery {
                            study_uids: vec![original.study_uid.clone()],
                            ..StudyQuery::default()
                        },
                        |o, s| s.study_uid == o.study_uid,
                    ),
                    (
                        "PatientName D*",
                        StudyQuery {
                            patient_name: name.as_ref().map(|n| format!("{}*", &n[..1])),
                            ..StudyQuery::default()
                        },
                        |o, s| {
                            s.patient_name
                                .as_ref()
                                .zip(o.patient_name.as_ref())
                                .is_some_and(|(a, b)| a[..1].eq_ignore_ascii_case(&b[..1]))
                        },
                    ),
                    (
                        "PatientName",
                        StudyQuery {
                            patient_name: name,
                            ..StudyQuery::default()
                        },
                        |o, s| s.patient_name.is_some() && s.patient_name == o.patient_name,
                    ),
                    (
                        "PatientID",
                        StudyQuery {
                            patient_id: original.patient_id.clone(),
                            ..StudyQuery::default()
                        },
                        |o, s| s.patient_id.is_some() && s.patient_id == o.patient_id,
                    ),
                    (
                        "AccessionNumber",
                        StudyQuery {
                            accession_number: original.accession_number.clone(),
                            ..StudyQuery::default()
                        },
                        |o, s| s.accession_number == o.accession_number,
                    ),
                    (
                        "StudyDate",
                        StudyQuery {
                            study_date_from: original.study_date.clone(),
                            study_date_to: original.study_date.clone(),
                            ..StudyQuery::default()
                        },
                        |o, s| s.study_date == o.study_date,
                    ),
                ];
                for (what, query, matches) in probes {
                    if query.is_unfiltered() {
                        continue;
                    }
                    let (rows, _) = studies(StudyQuery {
                        limit: 1000,
                        ..query.clone()
                    })
                    .await?;
                    let shown: BTreeSet<ShownStudy> = rows.into_iter().collect();
                    let visible: BTreeSet<ShownStudy> = originals
                        .iter()
                        .filter(|s| in_full(s) && matches(original, s))
                        .map(|s| (s.institution.clone(), s.study_uid.clone(), View::Full))
                        .collect();
                    if shown != visible {
                        return Err(fail(format!(
                            "search of {subject:?} by {what} of {}/{} at {now} ({query:?}): \
                             it shows {shown:?}, the oracle permits {visible:?} in full",
                            original.institution, original.study_uid
                        )));
                    }
                    compared += 1;
                }
            }
            // A study seen de-identified is found by the UID its view shows.
            for (owner, uid, view) in &expected {
                let View::Deidentified(share) = view else {
                    continue;
                };
                let mapped = Deidentifier::for_share(DEID_SECRET, *share).map_uid(uid);
                let (rows, _) = studies(StudyQuery {
                    study_uids: vec![mapped.clone()],
                    limit: 10,
                    ..StudyQuery::default()
                })
                .await?;
                if rows != vec![(owner.clone(), uid.clone(), *view)] {
                    return Err(fail(format!(
                        "search of {subject:?} for {mapped} (the de-identified UID of \
                         {owner}/{uid}) at {now} shows {rows:?}"
                    )));
                }
                compared += 1;
            }
            // A series (and its one instance) is listed when a read of that series is permitted,
            // in the view of that read.
            let mut expected = BTreeSet::new();
            for (study, series) in &world.studies {
                for uid in series {
                    let read = oracle.decide(subject, study, Some(uid), Act::ReadMetadata, now);
                    if read.permit {
                        expected.insert((
                            study.owner.clone(),
                            study.study_uid.clone(),
                            uid.clone(),
                            read.view,
                        ));
                    }
                }
            }
            let all = SeriesQuery {
                limit: 1000,
                ..SeriesQuery::default()
            };
            let (rows, more) = searcher.series(subject, &all).await.map_err(search_error)?;
            let found: BTreeSet<_> = rows
                .into_iter()
                .map(|r| (r.row.institution, r.row.study_uid, r.row.series_uid, r.view))
                .collect();
            if found != expected || more {
                return Err(fail(format!(
                    "series search of {subject:?} at {now}: it shows {found:?} (more: {more}), \
                     the oracle permits {expected:?}"
                )));
            }
            let (rows, more) = searcher
                .instances(subject, &all)
                .await
                .map_err(search_error)?;
            let found: BTreeSet<_> = rows
                .into_iter()
                .map(|r| (r.row.institution, r.row.study_uid, r.row.series_uid, r.view))
                .collect();
            if found != expected || more {
                return Err(fail(format!(
                    "instance search of {subject:?} at {now}: it shows series {found:?} \
                     (more: {more}), the oracle permits {expected:?}"
                )));
            }
            // Series of one study, by the study's original UID and by the UID a de-identified
            // view shows: each lists the series whose view shows that UID.
            for (owner, study, series, view) in &expected {
                let shown_uid = match view {
                    View::Full => study.clone(),
                    View::Deidentified(share) => {
                        Deidentifier::for_share(DEID_SECRET, *share).map_uid(study)
                    }
                };
                let by_study = SeriesQuery {
                    study_uid: Some(shown_uid.clone()),
                    limit: 1000,
                    ..SeriesQuery::default()
                };
                for instances in [false, true] {
                    let rows = if instances {
                        let (rows, _) = searcher
                            .instances(subject, &by_study)
                            .await
                            .map_err(search_error)?;
                        rows.into_iter()
                            .map(|r| (r.row.institution, r.row.study_uid, r.row.series_uid, r.view))
                            .collect::<Vec<_>>()
                    } else {
                        let (rows, _) = searcher
                            .series(subject, &by_study)
                            .await
                            .map_err(search_error)?;
                        rows.into_iter()
                            .map(|r| (r.row.institution, r.row.study_uid, r.row.series_uid, r.view))
                            .collect()
                    };
                    let found: BTreeSet<_> = rows.into_iter().collect();
                    let wanted: BTreeSet<_> = expected
                        .iter()
                        .filter(|(_, s, _, v)| match v {
                            View::Full => *s == shown_uid,
                            View::Deidentified(share) => {
                                Deidentifier::for_share(DEID_SECRET, *share).map_uid(s) == shown_uid
                            }
                        })
                        .cloned()
                        .collect();
                    if found != wanted {
                        return Err(fail(format!(
                            "{} search of {subject:?} by StudyInstanceUID {shown_uid} (series \
                             {owner}/{study}/{series} in view {view:?}) at {now}: it shows \
                             {found:?}, the oracle permits {wanted:?}",
                            if instances { "instance" } else { "series" }
                        )));
                    }
                    compared += 1;
                }
            }
            compared += 3;
        }
    }
    Ok(compared)
}

/// The engine over the shipped model and policy (built once: `decide` itself is synchronous).
fn engine() -> Engine {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
        .block_on(Engine::new())
        .expect("the shipped policy loads")
}

#[test]
fn engine_decides_as_the_oracle_on_random_worlds() {
    let started = Instant::now();
    let engine = engine();
    // PROPTEST_CASES runs more (or fewer) worlds.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let total = Cell::new(Tally::default());
    let outcome = runner.run(&spec(), |spec| {
        let world = World::build(&spec);
        let t = compare(&engine, &world)?;
        let (consent_checks, consent_refusals) = compare_consent_rights(&engine, &world)?;
        let mut sum = total.take();
        sum.checks += t.checks;
        sum.permits += t.permits;
        sum.deidentified += t.deidentified;
        sum.only_series += t.only_series;
        sum.visible += t.visible;
        sum.consent_checks += consent_checks;
        sum.consent_refusals += consent_refusals;
        sum.stranger_consents += world.stranger_consents;
        total.set(sum);
        Ok(())
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(why, spec)) => {
            panic!("the engine and the oracle disagree on (shrunk) world {spec:#?}\n{why}")
        }
        Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
    }
    let total = total.take();
    eprintln!(
        "access_property: {} decisions compared over {cases} worlds in {:.1?} \
         ({} permits, {} de-identified, {} limited to series, {} visible studies)",
        total.checks,
        started.elapsed(),
        total.permits,
        total.deidentified,
        total.only_series,
        total.visible,
    );
    assert!(
        total.checks >= MIN_CHECKS,
        "only {} decisions compared (at least {MIN_CHECKS} expected)",
        total.checks
    );
    // The worlds exercise the rules that produce something other than a plain full permit.
    assert!(total.deidentified > 0, "no de-identified view was decided");
    assert!(
        total.only_series > 0,
        "no series-limited permit was decided"
    );
    assert!(
        total.consent_refusals > 0 && total.consent_refusals < total.consent_checks,
        "consent rights were not both granted and refused ({} of {} refused)",
        total.consent_refusals,
        total.consent_checks
    );
    assert!(
        total.stranger_consents > 0,
        "no world held a consent recorded by an institution that had not linked the patient"
    );
}

/// Search result sets a run must compare at the least.
const MIN_SEARCHES: usize = 1_000;

#[test]
fn sql_search_shows_what_the_oracle_permits_on_random_worlds() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    search_property(&runtime, None, "SQLite");
}

/// The same worlds and searches on PostgreSQL (the distributed mode's read models): the same
/// SQL through the same code, in the other dialect.
#[test]
fn sql_search_on_postgresql_shows_what_the_oracle_permits_on_random_worlds() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let db = runtime.block_on(async {
        let url = pg_support::fresh_database("access_property").await;
        ReadModelDb::connect(&url)
            .await
            .expect("the PostgreSQL read-model database")
    });
    search_property(&runtime, Some(db), "PostgreSQL");
}

fn search_property(
    runtime: &tokio::runtime::Runtime,
    postgres: Option<ReadModelDb>,
    backend: &str,
) {
    let started = Instant::now();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let compared = Cell::new(0usize);
    let outcome = runner.run(&spec(), |spec| {
        let n = runtime.block_on(compare_search(&World::build(&spec), postgres.as_ref()))?;
        compared.set(compared.get() + n);
        Ok(())
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(why, spec)) => {
            panic!(
                "the SQL search ({backend}) and the oracle disagree on (shrunk) world {spec:#?}\n{why}"
            )
        }
        Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
    }
    let compared = compared.get();
    eprintln!(
        "access_property ({backend}): {compared} search result sets (studies, paged, by UID, series, instances) compared \
         over {cases} worlds in {:.1?}",
        started.elapsed()
    );
    assert!(
        compared >= MIN_SEARCHES,
        "only {compared} search result sets compared (at least {MIN_SEARCHES} expected)"
    );
}

// ---------------------------------------------------------------------------------------------
// Disagreements the property found, as fixed worlds: each states what the rules say, checks the
// oracle says it too, then compares the engine on every request of the world.

fn subject(id: &str, role: Role, institution: &str) -> Subject {
    Subject {
        id: id.into(),
        role,
        institution: institution.into(),
    }
}

/// `hosp-a` and `hosp-c`, and study `1.2.3` of `hosp-a` with series `1.2.3.1` and `1.2.3.2`.
fn small_world(events: Vec<HubEvent>, users: Vec<Subject>) -> World {
    let mut all: Vec<HubEvent> = ["hosp-a", "hosp-c"]
        .map(|i| {
            InstitutionEvent::InstitutionRegistered {
                institution_id: i.into(),
                name: i.into(),
                kind: InstitutionKind::Hospital,
                ae_titles: vec![],
            }
            .into()
        })
        .into();
    all.push(
        StudyEvent::StudyRegistered {
            study_uid: "1.2.3".into(),
            owner: "hosp-a".into(),
            patient_id: None,
            patient_name: None,
            patient_birth_date: None,
            patient_sex: None,
            study_date: None,
            study_time: None,
            accession_number: None,
            study_description: None,
            referring_physician: None,
        }
        .into(),
    );
    all.extend(events);
    World {
        events: all,
        studies: vec![(study_a(), vec!["1.2.3.1".into(), "1.2.3.2".into()])],
        users,
        stranger_consents: 0,
    }
}

fn study_a() -> StudyRef {
    StudyRef {
        owner: "hosp-a".into(),
        study_uid: "1.2.3".into(),
        patient_id: None,
    }
}

fn glass(subject: &str, until: DateTime<Utc>) -> HubEvent {
    AccessEvent::DataAccessed {
        subject: subject.into(),
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
    }
    .into()
}

fn grant(id: u64, series: &str, grantee: Grantee, scope: ShareScope) -> HubEvent {
    ShareEvent::ShareGranted {
        share_id: Uuid::from_u64_pair(0x5A, id),
        study_uid: "1.2.3".into(),
        series_uid: Some(series.into()),
        owner: "hosp-a".into(),
        grantee,
        scope,
        purpose: PurposeOfUse::Treatment,
        expires_at: None,
    }
    .into()
}

fn agree(world: &World) {
    if let Err(e) = compare(&engine(), world) {
        panic!("the engine and the oracle disagree: {e}");
    }
}

/// "A break-the-glass event gives that subject metadata and images on that study until its
/// expires_at": every session counts until its own end. A second, shorter session (here one
/// recorded until 07:00, or in life one opened at 09:00 for half an hour) must not end the first
/// one (open until 12:00) early.
#[test]
fn a_later_shorter_break_the_glass_session_does_not_end_an_open_one() {
    let carol = subject("carol", Role::Physician, "hosp-c");
    let world = small_world(
        vec![
            glass("carol", t0() + Duration::hours(4)),
            glass("carol", t0() - Duration::hours(1)),
        ],
        vec![carol.clone()],
    );
    let oracle = world.oracle();
    let read = oracle.decide(&carol, &study_a(), None, Act::ReadImages, t0());
    assert!(read.permit, "the first session is open until 12:00");
    agree(&world);
}

/// "A study-level request permitted only through series grants is permitted with only_series =
/// the set of granted series": granted for that read. A metadata grant of series 2 does not
/// open the images of series 2, so a study-level read of images is limited to series 1.
#[test]
fn a_series_limited_read_of_images_lists_only_series_granted_images() {
    let carol = subject("carol", Role::Radiologist, "hosp-c");
    let hosp_c = || Grantee::Institution("hosp-c".into());
    let world = small_world(
        vec![
            grant(1, "1.2.3.1", hosp_c(), ShareScope::Images),
            grant(2, "1.2.3.2", hosp_c(), ShareScope::Metadata),
        ],
        vec![carol.clone()],
    );
    let oracle = world.oracle();
    let images = oracle.decide(&carol, &study_a(), None, Act::ReadImages, t0());
    assert_eq!(images.only_series, Some(["1.2.3.1".to_owned()].into()));
    let series_2 = oracle.decide(&carol, &study_a(), Some("1.2.3.2"), Act::ReadImages, t0());
    assert!(!series_2.permit, "series 2 was shared without its images");
    agree(&world);
}

/// The same with a de-identified share: a study-level read of metadata, permitted in full by the
/// metadata grant of series 2, is limited to series 2 (series 1 was shared de-identified only,
/// its identified metadata must not be served); a study-level read of images is served
/// de-identified, limited to series 1.
#[test]
fn a_series_limited_read_beside_a_deidentified_share_lists_only_series_granted_that_view() {
    let carol = subject("carol", Role::Radiologist, "hosp-c");
    let hosp_c = || Grantee::Institution("hosp-c".into());
    let world = small_world(
        vec![
            grant(1, "1.2.3.1", hosp_c(), ShareScope::Deidentified),
            grant(2, "1.2.3.2", hosp_c(), ShareScope::Metadata),
        ],
        vec![carol.clone()],
    );
    let oracle = world.oracle();
    let metadata = oracle.decide(&carol, &study_a(), None, Act::ReadMetadata, t0());
    assert_eq!(metadata.view, hub_policies::View::Full);
    assert_eq!(metadata.only_series, Some(["1.2.3.2".to_owned()].into()));
    let images = oracle.decide(&carol, &study_a(), None, Act::ReadImages, t0());
    assert_eq!(
        images.view,
        hub_policies::View::Deidentified(Uuid::from_u64_pair(0x5A, 1))
    );
    assert_eq!(images.only_series, Some(["1.2.3.1".to_owned()].into()));
    agree(&world);
}

/// Issue 24, class 2, as reported: a user share to alice (of hosp-c) opened the images to any
/// token whose `sub` was `alice`, and bob's break-the-glass session opened the study to bob at
/// another institution. "A user is the pair (institution, subject)": only alice@hosp-c and
/// bob@hosp-c get in.
#[test]
fn a_user_grant_and_a_session_reach_only_the_user_of_their_institution() {
    let alice = subject("alice", Role::Radiologist, "hosp-c");
    let bob = subject("bob", Role::Physician, "hosp-c");
    let others = [
        subject("alice", Role::Physician, "hosp-b"),
        subject("alice", Role::Radiologist, "hosp-b"),
        subject("alice", Role::AiService, "never-registered"),
        subject("bob", Role::Radiologist, "hosp-b"),
    ];
    let user = Grantee::User(UserId {
        institution: "hosp-c".into(),
        subject: "alice".into(),
    });
    let world = small_world(
        vec![
            grant(1, "1.2.3.1", user, ShareScope::Images),
            glass("bob", t0() + Duration::hours(4)),
        ],
        [alice.clone(), bob.clone()]
            .into_iter()
            .chain(others.clone())
            .collect(),
    );
    let oracle = world.oracle();
    let images = |s: &Subject| oracle.decide(s, &study_a(), Some("1.2.3.1"), Act::ReadImages, t0());
    assert!(images(&alice).permit && images(&bob).permit);
    for other in &others {
        assert!(!images(other).permit, "{other:?}");
    }
    agree(&world);
}
