//! An independent model of who may do what with which study, written from the access rules in
//! plain words (not from the Casbin files nor from `hub_policies::Facts`), for tests that check
//! the real decision (`tests/access_property.rs`) and, later, search results against it.
//!
//! The rules it implements:
//!
//! - Clinicians are radiologists and physicians; staff are clinicians and hospital admins;
//!   readers are staff and AI services.
//! - Reads (`read_metadata`, `read_images`) of a study, or of one of its series:
//!   - readers of the owner institution: metadata and images;
//!   - readers of an institution in a same alliance as the owner (both members now), when the
//!     study's patient is linked at the owner and has an active consent: metadata only;
//!   - a user is the pair (institution, subject): the same subject at another institution, in
//!     any role, is another user;
//!   - a patient has consented when they have an active `alliance_metadata` consent and no
//!     active `refused` one, counting only consents the patient recorded or that an
//!     institution recorded while the patient was linked there;
//!   - readers holding an active grant (not revoked, no `ShareExpired`, not past `expires_at`,
//!     expired at the instant) whose grantee is their institution, them (a user grant names
//!     institution and subject; an old grant naming a subject alone reaches nobody), or an
//!     alliance their institution is a member of now (and the study's patient consented):
//!     metadata scope reads metadata, images scope reads both, de-identified scope reads both
//!     de-identified (served with the oldest such share) when nothing else permits;
//!     a series grant covers that series only: a study-level read permitted only through series
//!     grants is limited to the granted series, a series read counts study-wide grants and grants
//!     of that exact series;
//!   - clinicians with a break-the-glass session on the study (`DataAccessed`, `BreakTheGlass`,
//!     `Permit`, with owner, study and `expires_at`) that they opened (same subject and
//!     institution) until it ends (exclusive);
//!   - clinicians taking part in a consultation on the study (its requester, its expert once
//!     named by the request or by the acceptance, the participants the request lists, each as a
//!     user of a given institution) while its slot is booked (scheduled or accepted; not after a
//!     decline, cancellation or completion), from `CONSULT_LEAD` before the slot starts until the
//!     slot ends (exclusive), the slot being the last one scheduled or rescheduled: metadata and
//!     images of the whole study; a consultation that names no owner opens nothing, and one
//!     requested by another institution than the owner opens nothing until the owner approves
//!     it (`ConsultApproved`), for every participant alike;
//!   - patients: the studies whose (owner, local patient id) is linked to their regional id;
//!   - commission analysts and the hub admin: nothing.
//! - `store`, `share`: staff of the owner. `break_glass`: clinicians, any study. `read_audit`,
//!   `manage_patients`: hospital admins of the owner. `write_findings`: AI services of the owner
//!   or holding an active images grant. `manage_registry`: the hub admin.
//! - A patient's consents are recorded, listed and withdrawn by the patient, or by the hospital
//!   admin of an institution where the patient is linked now; by nobody else.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use hub_events::HubEvent;
use hub_events::catalog::{
    AccessAction, AccessEvent, AllianceEvent, ConsentEvent, ConsentPolicy, ConsultEvent, Decision,
    Grantee, PatientEvent, ShareEvent, ShareScope, StudyEvent,
};
use hub_policies::{Act, Role, StudyRef, Subject, View};
use uuid::Uuid;

/// What the oracle says of one request: the fields `hub_policies::Decision` must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub permit: bool,
    pub view: View,
    pub only_series: Option<BTreeSet<String>>,
}

impl Verdict {
    pub fn deny() -> Verdict {
        Verdict {
            permit: false,
            view: View::Full,
            only_series: None,
        }
    }

    fn full(only_series: Option<BTreeSet<String>>) -> Verdict {
        Verdict {
            permit: true,
            view: View::Full,
            only_series,
        }
    }

    fn when(permit: bool) -> Verdict {
        if permit {
            Verdict::full(None)
        } else {
            Verdict::deny()
        }
    }
}

#[derive(Clone, Debug)]
struct Grant {
    id: Uuid,
    owner: String,
    study_uid: String,
    series: Option<String>,
    grantee: Grantee,
    scope: ShareScope,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
    expired: bool,
}

#[derive(Clone, Debug)]
struct Glass {
    subject: String,
    institution: String,
    owner: String,
    study_uid: String,
    until: DateTime<Utc>,
}

/// How a grant relates to the series a request names.
enum Coverage {
    /// Counts for the whole request.
    Whole,
    /// A study-level request, a grant of this one series.
    Series(String),
    /// Does not count.
    None,
}

fn clinician(role: Role) -> bool {
    matches!(role, Role::Radiologist | Role::Physician)
}

fn staff(role: Role) -> bool {
    clinician(role) || role == Role::HospitalAdmin
}

fn reader(role: Role) -> bool {
    staff(role) || role == Role::AiService
}

/// The world as the events left it.
#[derive(Clone, Debug, Default)]
pub struct Oracle {
    /// (owner, Study UID) → the owner's local Patient ID.
    studies: BTreeMap<(String, String), Option<String>>,
    /// Alliance → its current members.
    members: BTreeMap<String, BTreeSet<String>>,
    /// (institution, local patient id) → regional patient id.
    links: BTreeMap<(String, String), String>,
    /// Consent that counts → (regional patient id, policy, withdrawn).
    consents: BTreeMap<Uuid, (String, ConsentPolicy, bool)>,
    /// In the order they were granted.
    grants: Vec<Grant>,
    glass: Vec<Glass>,
    consults: BTreeMap<Uuid, Consult>,
}

/// How long before a consultation's slot its participants see the study (the hub's default).
pub const CONSULT_LEAD: chrono::Duration = chrono::Duration::minutes(30);

#[derive(Clone, Debug)]
struct Consult {
    owner: Option<String>,
    study_uid: String,
    /// (user, institution)
    people: BTreeSet<(String, String)>,
    expert_institution: String,
    booked: bool,
    slot: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The owner requested it, or approved it.
    owner_agreed: bool,
}

impl Oracle {
    pub fn new() -> Oracle {
        Oracle::default()
    }

    pub fn apply(&mut self, event: &HubEvent) {
        match event {
            HubEvent::Study(StudyEvent::StudyRegistered {
                study_uid,
                owner,
                patient_id,
                ..
            }) => {
                self.studies
                    .insert((owner.clone(), study_uid.clone()), patient_id.clone());
            }
            HubEvent::Alliance(AllianceEvent::AllianceRegistered { alliance_id, .. }) => {
                self.members.entry(alliance_id.clone()).or_default();
            }
            HubEvent::Alliance(AllianceEvent::InstitutionJoinedAlliance {
                alliance_id,
                institution_id,
            }) => {
                self.members
                    .entry(alliance_id.clone())
                    .or_default()
                    .insert(institution_id.clone());
            }
            HubEvent::Alliance(AllianceEvent::InstitutionLeftAlliance {
                alliance_id,
                institution_id,
            }) => {
                if let Some(m) = self.members.get_mut(alliance_id) {
                    m.remove(institution_id);
                }
            }
            HubEvent::Patient(PatientEvent::PatientLinked {
                regional_patient_id,
                institution_id,
                local_patient_id,
                ..
            }) => {
                self.links.insert(
                    (institution_id.clone(), local_patient_id.clone()),
                    regional_patient_id.clone(),
                );
            }
            HubEvent::Patient(PatientEvent::PatientUnlinked {
                regional_patient_id,
                institution_id,
                local_patient_id,
                ..
            }) => {
                let key = (institution_id.clone(), local_patient_id.clone());
                if self.links.get(&key) == Some(regional_patient_id) {
                    self.links.remove(&key);
                }
            }
            HubEvent::Consent(ConsentEvent::ConsentRecorded {
                consent_id,
                regional_patient_id,
                institution_id,
                by_patient,
                policy,
                ..
            }) if *by_patient || self.links_patient(institution_id, regional_patient_id) => {
                self.consents
                    .insert(*consent_id, (regional_patient_id.clone(), *policy, false));
            }
            HubEvent::Consent(ConsentEvent::ConsentWithdrawn { consent_id, .. }) => {
                if let Some((_, _, withdrawn)) = self.consents.get_mut(consent_id) {
                    *withdrawn = true;
                }
            }
            HubEvent::Share(ShareEvent::ShareGranted {
                share_id,
                study_uid,
                series_uid,
                owner,
                grantee,
                scope,
                expires_at,
                ..
            }) => self.grants.push(Grant {
                id: *share_id,
                owner: owner.clone(),
                study_uid: study_uid.clone(),
                series: series_uid.clone(),
                grantee: grantee.clone(),
                scope: *scope,
                expires_at: *expires_at,
                revoked: false,
                expired: false,
            }),
            HubEvent::Share(ShareEvent::ShareRevoked { share_id, .. }) => {
                for g in self.grants.iter_mut().filter(|g| g.id == *share_id) {
                    g.revoked = true;
                }
            }
            HubEvent::Share(ShareEvent::ShareExpired { share_id }) => {
                for g in self.grants.iter_mut().filter(|g| g.id == *share_id) {
                    g.expired = true;
                }
            }
            HubEvent::Access(AccessEvent::DataAccessed {
                subject,
                institution,
                action: AccessAction::BreakTheGlass,
                decision: Decision::Permit,
                owner: Some(owner),
                study_uid: Some(study_uid),
                expires_at: Some(until),
                ..
            }) => self.glass.push(Glass {
                subject: subject.clone(),
                institution: institution.clone(),
                owner: owner.clone(),
                study_uid: study_uid.clone(),
                until: *until,
            }),
            HubEvent::Consult(e) => self.apply_consult(e),
            _ => {}
        }
    }

    /// The studies registered so far, with the owner's local Patient ID.
    pub fn studies(&self) -> impl Iterator<Item = StudyRef> + '_ {
        self.studies
            .iter()
            .map(|((owner, study_uid), patient_id)| StudyRef {
                owner: owner.clone(),
                study_uid: study_uid.clone(),
                patient_id: patient_id.clone(),
            })
    }

    /// The regional patient id of the study's patient, if the owner linked it.
    fn regional(&self, study: &StudyRef) -> Option<&str> {
        let local = study.patient_id.as_ref()?;
        self.links
            .get(&(study.owner.clone(), local.clone()))
            .map(String::as_str)
    }

    /// Some local patient id of `institution` is linked to the regional patient id now.
    fn links_patient(&self, institution: &str, regional: &str) -> bool {
        self.links
            .iter()
            .any(|((i, _), r)| i == institution && r == regional)
    }

    /// The study's patient is linked at the owner, has an active `alliance_metadata` consent
    /// and no active refusal.
    fn consented(&self, study: &StudyRef) -> bool {
        self.regional(study).is_some_and(|r| {
            let active = |wanted: ConsentPolicy| {
                self.consents.values().any(|(patient, policy, withdrawn)| {
                    patient == r && *policy == wanted && !withdrawn
                })
            };
            active(ConsentPolicy::AllianceMetadata) && !active(ConsentPolicy::Refused)
        })
    }

    /// May `subject` record, list or withdraw the consents of patient `regional`?
    pub fn may_manage_consents(&self, subject: &Subject, regional: &str) -> bool {
        match subject.role {
            Role::Patient => subject.id == regional,
            Role::HospitalAdmin => self.links_patient(&subject.institution, regional),
            _ => false,
        }
    }

    fn member(&self, alliance: &str, institution: &str) -> bool {
        self.members
            .get(alliance)
            .is_some_and(|m| m.contains(institution))
    }

    /// Both institutions are members of one same alliance now.
    fn allied(&self, a: &str, b: &str) -> bool {
        self.members
            .values()
            .any(|m| m.contains(a) && m.contains(b))
    }

    fn apply_consult(&mut self, e: &ConsultEvent) {
        match e {
            ConsultEvent::ConsultRequested {
                consult_id,
                study_uid,
                requesting_institution,
                requested_by,
                expert_institution,
                expert,
                owner,
                participants,
                ..
            } => {
                let mut people = BTreeSet::new();
                people.insert((requested_by.clone(), requesting_institution.clone()));
                if let Some(x) = expert {
                    people.insert((x.clone(), expert_institution.clone()));
                }
                for p in participants {
                    people.insert((p.user.clone(), p.institution.clone()));
                }
                self.consults.insert(
                    *consult_id,
                    Consult {
                        owner: owner.clone(),
                        study_uid: study_uid.clone(),
                        people,
                        expert_institution: expert_institution.clone(),
                        booked: false,
                        slot: None,
                        owner_agreed: owner.as_ref() == Some(requesting_institution),
                    },
                );
            }
            ConsultEvent::ConsultScheduled {
                consult_id,
                starts_at,
                ends_at,
                ..
            } => {
                if let Some(c) = self.consults.get_mut(consult_id) {
                    c.booked = true;
                    c.slot = Some((*starts_at, *ends_at));
                }
            }
            ConsultEvent::ConsultRescheduled {
                consult_id,
                starts_at,
                ends_at,
                ..
            } => {
                if let Some(c) = self.consults.get_mut(consult_id) {
                    c.slot = Some((*starts_at, *ends_at));
                }
            }
            ConsultEvent::ConsultAccepted { consult_id, expert } => {
                if let Some(c) = self.consults.get_mut(consult_id) {
                    c.booked = true;
                    let institution = c.expert_institution.clone();
                    c.people.insert((expert.clone(), institution));
                }
            }
            ConsultEvent::ConsultDeclined { consult_id, .. }
            | ConsultEvent::ConsultCancelled { consult_id, .. }
            | ConsultEvent::ConsultCompleted { consult_id, .. } => {
                if let Some(c) = self.consults.get_mut(consult_id) {
                    c.booked = false;
                }
            }
            ConsultEvent::ConsultApproved { consult_id, .. } => {
                if let Some(c) = self.consults.get_mut(consult_id) {
                    c.owner_agreed = true;
                }
            }
            ConsultEvent::ExpertRegistered { .. } => {}
        }
    }

    fn consult_open(&self, subject: &Subject, study: &StudyRef, now: DateTime<Utc>) -> bool {
        let me = (subject.id.clone(), subject.institution.clone());
        self.consults.values().any(|c| {
            c.owner.as_deref() == Some(study.owner.as_str())
                && c.study_uid == study.study_uid
                && c.booked
                && c.owner_agreed
                && c.people.contains(&me)
                && c.slot
                    .is_some_and(|(start, end)| start - CONSULT_LEAD <= now && now < end)
        })
    }

    fn glass_open(&self, subject: &Subject, study: &StudyRef, now: DateTime<Utc>) -> bool {
        self.glass.iter().any(|g| {
            g.subject == subject.id
                && g.institution == subject.institution
                && g.owner == study.owner
                && g.study_uid == study.study_uid
                && now < g.until
        })
    }

    /// The active grants on this study that reach this caller, in the order they were granted,
    /// with how each relates to the requested series.
    fn grants_reaching<'a>(
        &'a self,
        subject: &'a Subject,
        study: &'a StudyRef,
        series: Option<&'a str>,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = (&'a Grant, Coverage)> + 'a {
        self.grants
            .iter()
            .filter(move |g| {
                g.owner == study.owner
                    && g.study_uid == study.study_uid
                    && !g.revoked
                    && !g.expired
                    && g.expires_at.is_none_or(|t| now < t)
                    && match &g.grantee {
                        Grantee::Institution(i) => *i == subject.institution,
                        Grantee::User(u) => {
                            u.institution == subject.institution && u.subject == subject.id
                        }
                        Grantee::UnscopedUser(_) => false,
                        Grantee::Alliance(a) => {
                            self.member(a, &subject.institution) && self.consented(study)
                        }
                    }
            })
            .map(move |g| {
                let coverage = match (&g.series, series) {
                    (None, _) => Coverage::Whole,
                    (Some(s), Some(asked)) if s == asked => Coverage::Whole,
                    (Some(_), Some(_)) => Coverage::None,
                    (Some(s), None) => Coverage::Series(s.clone()),
                };
                (g, coverage)
            })
    }

    /// Whether grants whose scope passes `scope` permit the request: `Some(None)` for the whole
    /// request, `Some(Some(series))` through series grants only.
    fn through_grants(
        &self,
        subject: &Subject,
        study: &StudyRef,
        series: Option<&str>,
        now: DateTime<Utc>,
        scope: impl Fn(ShareScope) -> bool,
    ) -> Option<Option<BTreeSet<String>>> {
        let mut whole = false;
        let mut only = BTreeSet::new();
        for (g, coverage) in self.grants_reaching(subject, study, series, now) {
            if !scope(g.scope) {
                continue;
            }
            match coverage {
                Coverage::Whole => whole = true,
                Coverage::Series(s) => {
                    only.insert(s);
                }
                Coverage::None => {}
            }
        }
        if whole {
            Some(None)
        } else if !only.is_empty() {
            Some(Some(only))
        } else {
            None
        }
    }

    fn read(
        &self,
        subject: &Subject,
        study: &StudyRef,
        series: Option<&str>,
        images: bool,
        now: DateTime<Utc>,
    ) -> Verdict {
        if subject.role == Role::Patient {
            return Verdict::when(self.regional(study) == Some(subject.id.as_str()));
        }
        if !reader(subject.role) {
            return Verdict::deny();
        }
        if subject.institution == study.owner {
            return Verdict::full(None);
        }
        if !images && self.allied(&subject.institution, &study.owner) && self.consented(study) {
            return Verdict::full(None);
        }
        if clinician(subject.role) && self.glass_open(subject, study, now) {
            return Verdict::full(None);
        }
        if clinician(subject.role) && self.consult_open(subject, study, now) {
            return Verdict::full(None);
        }
        let full_scope = |s: ShareScope| match s {
            ShareScope::Metadata => !images,
            ShareScope::Images => true,
            ShareScope::Deidentified => false,
        };
        if let Some(only_series) = self.through_grants(subject, study, series, now, full_scope) {
            return Verdict::full(only_series);
        }
        // De-identified, only when nothing above permits: the oldest such share.
        let mut first = None;
        let mut whole = false;
        let mut only = BTreeSet::new();
        for (g, coverage) in self.grants_reaching(subject, study, series, now) {
            if g.scope != ShareScope::Deidentified {
                continue;
            }
            match coverage {
                Coverage::Whole => whole = true,
                Coverage::Series(s) => {
                    only.insert(s);
                }
                Coverage::None => continue,
            }
            first.get_or_insert(g.id);
        }
        match first {
            Some(share) => Verdict {
                permit: true,
                view: View::Deidentified(share),
                only_series: if whole { None } else { Some(only) },
            },
            None => Verdict::deny(),
        }
    }

    /// May `subject` do `act` on `study` (or on one of its series) at `now`?
    pub fn decide(
        &self,
        subject: &Subject,
        study: &StudyRef,
        series: Option<&str>,
        act: Act,
        now: DateTime<Utc>,
    ) -> Verdict {
        let owns = subject.institution == study.owner;
        match act {
            Act::ReadMetadata => self.read(subject, study, series, false, now),
            Act::ReadImages => self.read(subject, study, series, true, now),
            Act::Store | Act::Share => Verdict::when(staff(subject.role) && owns),
            Act::BreakGlass => Verdict::when(clinician(subject.role)),
            Act::ReadAudit | Act::ManagePatients => {
                Verdict::when(subject.role == Role::HospitalAdmin && owns)
            }
            Act::WriteFindings => {
                if subject.role != Role::AiService {
                    Verdict::deny()
                } else if owns {
                    Verdict::full(None)
                } else {
                    self.through_grants(subject, study, series, now, |s| s == ShareScope::Images)
                        .map_or_else(Verdict::deny, Verdict::full)
                }
            }
            Act::ManageRegistry | Act::ReadEventLog => Verdict::when(self.allows(subject, act)),
            Act::ReadDeidentified => {
                panic!("the rules name no `read_deidentified` request: ask for a read")
            }
        }
    }

    /// For actions on no institution's study: may `subject` do `act` at all?
    pub fn allows(&self, subject: &Subject, act: Act) -> bool {
        // The registry and the raw event log are the hub admin's, and only theirs.
        matches!(act, Act::ManageRegistry | Act::ReadEventLog) && subject.role == Role::HubAdmin
    }

    /// The studies whose metadata `subject` may read at `now`: what a search may show.
    pub fn visible_studies(
        &self,
        subject: &Subject,
        now: DateTime<Utc>,
    ) -> BTreeSet<(String, String)> {
        self.studies()
            .filter(|s| self.decide(subject, s, None, Act::ReadMetadata, now).permit)
            .map(|s| (s.owner, s.study_uid))
            .collect()
    }
}
