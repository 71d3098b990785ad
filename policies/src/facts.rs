//! The access facts: institutions, alliance memberships, patient links, consents, shares and
//! break-the-glass sessions, applied from the log event by event. The live policy is this
//! projection of the events: a revocation is applied here and the next decision sees it.
//!
//! Everything a decision asks is a hash lookup keyed by the study (or the caller), so a decision
//! costs the same with ten grants or a million.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use hub_events::catalog::{
    AccessAction, AccessEvent, AllianceEvent, ConsentEvent, ConsentPolicy,
    Decision as AccessDecision, Grantee, InstitutionEvent, InstitutionKind, PatientEvent,
    PurposeOfUse, ShareEvent, ShareScope,
};
use hub_events::{HubEvent, Position, RecordedEvent};
use uuid::Uuid;

use crate::consults::ConsultFacts;
use crate::{Role, StudyRef, Subject};

/// A share as granted, with what happened to it since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub share_id: Uuid,
    pub owner: String,
    pub study_uid: String,
    pub series_uid: Option<String>,
    pub grantee: Grantee,
    pub scope: ShareScope,
    pub purpose: PurposeOfUse,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_by: String,
    pub granted_at: DateTime<Utc>,
    /// Revoked or expired (by event); expiry by the clock is checked at decision time.
    pub ended: Option<ShareEnd>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareEnd {
    Revoked(String),
    Expired,
}

impl Share {
    /// Whether the share grants anything at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.ended.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// How a caller is related to one study, beyond ownership (which the matcher compares itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relations {
    /// Caller and owner are in a common alliance and the patient consented.
    pub alliance: bool,
    /// Active grants that cover the whole study.
    pub study_grants: GrantFlags,
    /// Active grants that cover only some series: what each series is granted for.
    pub series_grants: BTreeMap<String, GrantFlags>,
    pub consult: bool,
    /// The caller is the study's patient.
    pub patient: bool,
    pub break_glass: bool,
    /// The oldest active de-identified share covering the request (its id keys the UID mapping).
    pub deidentified_share: Option<Uuid>,
    /// The purpose of the grants that apply, oldest first (for the audit record).
    pub grant_purpose: Option<PurposeOfUse>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GrantFlags {
    pub metadata: bool,
    pub images: bool,
    pub deidentified: bool,
}

impl GrantFlags {
    fn add(&mut self, scope: ShareScope) {
        match scope {
            ShareScope::Metadata => self.metadata = true,
            ShareScope::Images => self.images = true,
            ShareScope::Deidentified => self.deidentified = true,
        }
    }

    pub fn union(self, other: GrantFlags) -> GrantFlags {
        GrantFlags {
            metadata: self.metadata || other.metadata,
            images: self.images || other.images,
            deidentified: self.deidentified || other.deidentified,
        }
    }
}

/// An active consent that counts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Consent {
    pub consent_id: Uuid,
    pub regional_patient_id: String,
    /// The institution that recorded it (for the patient: the one that issued their login).
    pub institution: String,
    pub by_patient: bool,
    pub policy: ConsentPolicy,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alliance {
    pub name: String,
    pub lead_institution: String,
    pub members: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Facts {
    applied: Position,
    institutions: HashMap<String, InstitutionKind>,
    alliances: HashMap<String, Alliance>,
    memberships: HashMap<String, BTreeSet<String>>,
    /// (institution, local patient id) → regional patient id.
    links: HashMap<(String, String), String>,
    /// regional patient id → institution → how many of its local patient ids link to it.
    linked_at: HashMap<String, HashMap<String, usize>>,
    /// regional patient id → its active consents that count (recorded by the patient, or by an
    /// institution that had the patient linked when it recorded it).
    consents: HashMap<String, BTreeMap<Uuid, Consent>>,
    shares: HashMap<Uuid, Share>,
    shares_by_study: HashMap<(String, String), Vec<Uuid>>,
    /// (subject, subject's institution, owner, study) → end of the emergency access: a session
    /// is the user's who opened it (the subject of a token of that institution), no one else's.
    break_glass: HashMap<(String, String, String, String), DateTime<Utc>>,
    consults: ConsultFacts,
}

impl Facts {
    pub fn new() -> Facts {
        Facts::default()
    }

    /// The last position applied.
    pub fn applied(&self) -> Position {
        self.applied
    }

    /// How many shares are active at `now` (not revoked, not expired).
    pub fn active_grants(&self, now: DateTime<Utc>) -> usize {
        self.shares.values().filter(|s| s.active_at(now)).count()
    }

    /// Applies one event (events already applied are ignored, so redelivery is harmless).
    pub fn apply(&mut self, event: &RecordedEvent, decoded: &HubEvent) {
        if event.position <= self.applied {
            return;
        }
        self.applied = event.position;
        self.consults.apply(event, decoded);
        match decoded {
            HubEvent::Institution(InstitutionEvent::InstitutionRegistered {
                institution_id,
                kind,
                ..
            }) => {
                self.institutions.insert(institution_id.clone(), *kind);
            }
            HubEvent::Alliance(e) => self.apply_alliance(e),
            HubEvent::Patient(PatientEvent::PatientLinked {
                regional_patient_id,
                institution_id,
                local_patient_id,
                ..
            }) => {
                let key = (institution_id.clone(), local_patient_id.clone());
                if let Some(before) = self.links.insert(key, regional_patient_id.clone()) {
                    self.count_link(&before, institution_id, false);
                }
                self.count_link(regional_patient_id, institution_id, true);
            }
            HubEvent::Patient(PatientEvent::PatientUnlinked {
                institution_id,
                local_patient_id,
                ..
            }) => {
                let key = (institution_id.clone(), local_patient_id.clone());
                if let Some(before) = self.links.remove(&key) {
                    self.count_link(&before, institution_id, false);
                }
            }
            HubEvent::Consent(ConsentEvent::ConsentRecorded {
                consent_id,
                regional_patient_id,
                institution_id,
                by_patient,
                policy,
                ..
            // Only the patient, or an institution where the patient is linked, records a
            // consent: one recorded by anyone else (stored before the rule) grants nothing.
            }) if *by_patient || self.linked_at(institution_id, regional_patient_id) => {
                self.consents
                    .entry(regional_patient_id.clone())
                    .or_default()
                    .insert(
                        *consent_id,
                        Consent {
                            consent_id: *consent_id,
                            regional_patient_id: regional_patient_id.clone(),
                            institution: institution_id.clone(),
                            by_patient: *by_patient,
                            policy: *policy,
                            recorded_by: event.metadata.actor.clone(),
                            recorded_at: event.recorded_at,
                        },
                    );
            }
            HubEvent::Consent(ConsentEvent::ConsentWithdrawn {
                consent_id,
                regional_patient_id,
                ..
            }) => {
                if let Some(set) = self.consents.get_mut(regional_patient_id) {
                    set.remove(consent_id);
                }
            }
            HubEvent::Share(e) => self.apply_share(event, e),
            HubEvent::Access(AccessEvent::DataAccessed {
                subject,
                institution,
                action: AccessAction::BreakTheGlass,
                decision: AccessDecision::Permit,
                owner: Some(owner),
                study_uid: Some(study_uid),
                expires_at: Some(until),
                ..
            }) => {
                self.break_glass
                    .entry((
                        subject.clone(),
                        institution.clone(),
                        owner.clone(),
                        study_uid.clone(),
                    ))
                    // Each session lasts until its own end: a shorter later one ends nothing.
                    .and_modify(|end| *end = (*end).max(*until))
                    .or_insert(*until);
            }
            _ => {}
        }
    }

    fn count_link(&mut self, regional: &str, institution: &str, linked: bool) {
        let at = self.linked_at.entry(regional.to_owned()).or_default();
        let n = at.entry(institution.to_owned()).or_default();
        if linked {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                at.remove(institution);
            }
        }
    }

    /// Whether `institution` has (a local patient id linked to) the regional patient now.
    pub fn linked_at(&self, institution: &str, regional_patient_id: &str) -> bool {
        self.linked_at
            .get(regional_patient_id)
            .is_some_and(|at| at.contains_key(institution))
    }

    /// The active consents of a patient that count, oldest id first.
    pub fn consents_of(&self, regional_patient_id: &str) -> impl Iterator<Item = &Consent> {
        self.consents
            .get(regional_patient_id)
            .into_iter()
            .flat_map(|c| c.values())
    }

    fn apply_alliance(&mut self, e: &AllianceEvent) {
        match e {
            AllianceEvent::AllianceRegistered {
                alliance_id,
                name,
                lead_institution,
            } => {
                self.alliances
                    .entry(alliance_id.clone())
                    .or_insert_with(|| Alliance {
                        name: name.clone(),
                        lead_institution: lead_institution.clone(),
                        members: BTreeSet::new(),
                    });
            }
            AllianceEvent::InstitutionJoinedAlliance {
                alliance_id,
                institution_id,
            } => {
                if let Some(a) = self.alliances.get_mut(alliance_id) {
                    a.members.insert(institution_id.clone());
                }
                self.memberships
                    .entry(institution_id.clone())
                    .or_default()
                    .insert(alliance_id.clone());
            }
            AllianceEvent::InstitutionLeftAlliance {
                alliance_id,
                institution_id,
            } => {
                if let Some(a) = self.alliances.get_mut(alliance_id) {
                    a.members.remove(institution_id);
                }
                if let Some(m) = self.memberships.get_mut(institution_id) {
                    m.remove(alliance_id);
                }
            }
        }
    }

    fn apply_share(&mut self, event: &RecordedEvent, e: &ShareEvent) {
        match e {
            ShareEvent::ShareGranted {
                share_id,
                study_uid,
                series_uid,
                owner,
                grantee,
                scope,
                purpose,
                expires_at,
            } => {
                self.shares.insert(
                    *share_id,
                    Share {
                        share_id: *share_id,
                        owner: owner.clone(),
                        study_uid: study_uid.clone(),
                        series_uid: series_uid.clone(),
                        grantee: grantee.clone(),
                        scope: *scope,
                        purpose: *purpose,
                        expires_at: *expires_at,
                        granted_by: event.metadata.actor.clone(),
                        granted_at: event.recorded_at,
                        ended: None,
                    },
                );
                self.shares_by_study
                    .entry((owner.clone(), study_uid.clone()))
                    .or_default()
                    .push(*share_id);
            }
            ShareEvent::ShareRevoked { share_id, reason } => {
                if let Some(s) = self.shares.get_mut(share_id) {
                    s.ended = Some(ShareEnd::Revoked(reason.clone()));
                }
            }
            ShareEvent::ShareExpired { share_id } => {
                if let Some(s) = self.shares.get_mut(share_id)
                    && s.ended.is_none()
                {
                    s.ended = Some(ShareEnd::Expired);
                }
            }
        }
    }

    /// Consultations, experts and the consult lead time.
    pub fn consults(&self) -> &ConsultFacts {
        &self.consults
    }

    pub fn consults_mut(&mut self) -> &mut ConsultFacts {
        &mut self.consults
    }

    pub fn institution(&self, id: &str) -> Option<InstitutionKind> {
        self.institutions.get(id).copied()
    }

    pub fn alliance(&self, id: &str) -> Option<&Alliance> {
        self.alliances.get(id)
    }

    /// The alliances `institution` is a member of.
    pub fn alliances_of(&self, institution: &str) -> impl Iterator<Item = &String> {
        self.memberships.get(institution).into_iter().flatten()
    }

    pub fn share(&self, id: &Uuid) -> Option<&Share> {
        self.shares.get(id)
    }

    /// The shares of one study of one owner, oldest first.
    pub fn shares_of(&self, owner: &str, study_uid: &str) -> impl Iterator<Item = &Share> {
        self.shares_by_study
            .get(&(owner.to_owned(), study_uid.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(|id| self.shares.get(id))
    }

    /// Active de-identified shares granted to `subject` (by institution, alliance or user).
    pub fn deidentified_shares_for<'a>(
        &'a self,
        subject: &'a Subject,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = &'a Share> + 'a {
        self.shares.values().filter(move |s| {
            s.scope == ShareScope::Deidentified
                && s.active_at(now)
                && self.reaches(&s.grantee, subject, true)
        })
    }

    /// Whether a grant to `grantee` reaches `subject`: their institution; them, the user named
    /// by institution and subject (a bare subject of an old grant reaches nobody); an alliance
    /// their institution is a member of, when `consented`.
    fn reaches(&self, grantee: &Grantee, subject: &Subject, consented: bool) -> bool {
        match grantee {
            Grantee::Institution(i) => *i == subject.institution,
            Grantee::User(u) => u.institution == subject.institution && u.subject == subject.id,
            Grantee::UnscopedUser(_) => false,
            Grantee::Alliance(a) => {
                consented
                    && self
                        .memberships
                        .get(&subject.institution)
                        .is_some_and(|m| m.contains(a))
            }
        }
    }

    /// Shares whose expiry has passed at `now` but that no `ShareExpired` event closed yet.
    pub fn due_expiries(&self, now: DateTime<Utc>) -> Vec<Uuid> {
        let mut due: Vec<Uuid> = self
            .shares
            .values()
            .filter(|s| s.ended.is_none() && s.expires_at.is_some_and(|e| e <= now))
            .map(|s| s.share_id)
            .collect();
        due.sort();
        due
    }

    /// The regional patient id linked to `owner`'s local patient id.
    pub fn regional_patient(&self, owner: &str, local_patient_id: &str) -> Option<&str> {
        self.links
            .get(&(owner.to_owned(), local_patient_id.to_owned()))
            .map(String::as_str)
    }

    /// Whether the patient of `study` has an active `alliance_metadata` consent that counts and
    /// no active refusal.
    pub fn consented(&self, study: &StudyRef) -> bool {
        study
            .patient_id
            .as_deref()
            .and_then(|p| self.regional_patient(&study.owner, p))
            .and_then(|r| self.consents.get(r))
            .is_some_and(|c| {
                c.values()
                    .any(|c| c.policy == ConsentPolicy::AllianceMetadata)
                    && c.values().all(|c| c.policy != ConsentPolicy::Refused)
            })
    }

    fn shares_alliance(&self, a: &str, b: &str) -> bool {
        match (self.memberships.get(a), self.memberships.get(b)) {
            (Some(x), Some(y)) => x.iter().any(|alliance| y.contains(alliance)),
            _ => false,
        }
    }

    /// How `subject` is related to `study` at `now`. With `series`, only grants that cover that
    /// series count; without, series-level grants are reported apart with the series they name.
    pub fn relations(
        &self,
        subject: &Subject,
        study: &StudyRef,
        series: Option<&str>,
        now: DateTime<Utc>,
    ) -> Relations {
        let mut r = Relations::default();
        if subject.role == Role::Patient {
            r.patient = study
                .patient_id
                .as_deref()
                .and_then(|p| self.regional_patient(&study.owner, p))
                .is_some_and(|regional| regional == subject.id);
            // Patients hold no institution-level relations.
            return r;
        }
        let consented = self.consented(study);
        r.alliance = consented && self.shares_alliance(&subject.institution, &study.owner);
        for share in self.shares_of(&study.owner, &study.study_uid) {
            if !share.active_at(now) {
                continue;
            }
            if !self.reaches(&share.grantee, subject, consented) {
                continue;
            }
            match (&share.series_uid, series) {
                (None, _) => r.study_grants.add(share.scope),
                (Some(s), Some(wanted)) if s == wanted => r.study_grants.add(share.scope),
                (Some(_), Some(_)) => continue,
                (Some(s), None) => r
                    .series_grants
                    .entry(s.clone())
                    .or_default()
                    .add(share.scope),
            }
            if share.scope == ShareScope::Deidentified && r.deidentified_share.is_none() {
                r.deidentified_share = Some(share.share_id);
            }
            if r.grant_purpose.is_none() {
                r.grant_purpose = Some(share.purpose);
            }
        }
        r.break_glass = self
            .break_glass
            .get(&(
                subject.id.clone(),
                subject.institution.clone(),
                study.owner.clone(),
                study.study_uid.clone(),
            ))
            .is_some_and(|until| now < *until);
        r.consult = self.consults.open_for(subject, study, now);
        r
    }
}
