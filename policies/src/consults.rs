//! Consultations and experts as the policy point sees them: each consultation's state folded
//! from its events, its slot and who takes part, so a decision can ask "is a consult window of
//! this study open for this caller now" with one lookup by study, and the consultation service
//! can check transitions and an expert's other bookings against the same facts.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use hub_events::catalog::{
    AvailabilitySlot, ConsultEvent, ConsultKind, ConsultParticipant, ConsultUrgency, DiagnosisEvent,
};
use hub_events::{HubEvent, RecordedEvent};
use serde::Serialize;
use uuid::Uuid;

use crate::{StudyRef, Subject};

/// Where a consultation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsultState {
    /// Asked for, no slot yet.
    Requested,
    /// A slot is booked; the expert has not accepted it yet.
    Scheduled,
    /// The expert accepted the slot.
    Accepted,
    Declined,
    Cancelled,
    Completed,
}

impl ConsultState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConsultState::Requested => "requested",
            ConsultState::Scheduled => "scheduled",
            ConsultState::Accepted => "accepted",
            ConsultState::Declined => "declined",
            ConsultState::Cancelled => "cancelled",
            ConsultState::Completed => "completed",
        }
    }

    /// Whether the slot holds the expert's time and opens the study to the participants.
    pub fn books_the_slot(&self) -> bool {
        matches!(self, ConsultState::Scheduled | ConsultState::Accepted)
    }
}

impl std::fmt::Display for ConsultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A booked period, `[starts_at, ends_at)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Slot {
    pub fn overlaps(&self, other: &Slot) -> bool {
        self.starts_at < other.ends_at && other.starts_at < self.ends_at
    }

    pub fn within(&self, other: &Slot) -> bool {
        other.starts_at <= self.starts_at && self.ends_at <= other.ends_at
    }
}

/// One consultation, folded from its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Consultation {
    pub consult_id: Uuid,
    pub study_uid: String,
    /// The institution holding the study; `None` (old events) opens nothing.
    pub owner: Option<String>,
    pub kind: ConsultKind,
    pub requesting_institution: String,
    pub requested_by: String,
    pub expert_institution: String,
    pub expert: Option<String>,
    pub specialty: Option<String>,
    pub urgency: ConsultUrgency,
    pub question: String,
    pub participants: Vec<ConsultParticipant>,
    pub state: ConsultState,
    pub slot: Option<Slot>,
    pub time_zone: Option<String>,
    pub requested_at: DateTime<Utc>,
    /// Why it was declined or cancelled.
    pub reason: Option<String>,
    pub report_id: Option<Uuid>,
    /// When the first report answering it was signed (turnaround ends here).
    pub report_signed_at: Option<DateTime<Utc>>,
    /// Stream version of the consultation (for the next append's expected version).
    pub version: u64,
    /// Who of the owner approved it (`None`: not approved; the owner's own requests need none).
    pub approved_by: Option<String>,
}

impl Consultation {
    /// The people whose time the slot books: the expert (once named) and the participants.
    pub fn attendees(&self) -> Vec<ConsultParticipant> {
        let mut all = Vec::new();
        if let Some(expert) = &self.expert {
            all.push(ConsultParticipant {
                user: expert.clone(),
                institution: self.expert_institution.clone(),
            });
        }
        all.extend(self.participants.iter().cloned());
        all
    }

    /// Whether `subject` takes part: requester, expert or participant.
    pub fn involves(&self, subject: &Subject) -> bool {
        (subject.id == self.requested_by && subject.institution == self.requesting_institution)
            || self
                .attendees()
                .iter()
                .any(|a| a.user == subject.id && a.institution == subject.institution)
    }

    /// Whether the consultation may open the study at all: the owner requested it, or approved
    /// it. A grant the requester holds is theirs: it does not reach the people they consult.
    pub fn owner_consents(&self) -> bool {
        self.owner.as_deref() == Some(self.requesting_institution.as_str())
            || self.approved_by.is_some()
    }

    /// Whether the study is open to the participants at `now`: the slot is booked and `now`
    /// lies in `[starts_at - lead, ends_at)`.
    pub fn window_open(&self, now: DateTime<Utc>, lead: Duration) -> bool {
        self.state.books_the_slot()
            && self
                .slot
                .is_some_and(|s| s.starts_at - lead <= now && now < s.ends_at)
    }

    /// Seconds from the request to the first signed report.
    pub fn turnaround_seconds(&self) -> Option<i64> {
        self.report_signed_at
            .map(|at| (at - self.requested_at).num_seconds())
    }
}

/// An expert an institution declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expert {
    pub institution: String,
    pub expert: String,
    pub specialty: Option<String>,
    pub availability: Vec<AvailabilitySlot>,
}

#[derive(Clone, Debug)]
pub struct ConsultFacts {
    consults: HashMap<Uuid, Consultation>,
    by_study: HashMap<String, Vec<Uuid>>,
    experts: BTreeMap<(String, String), Expert>,
    /// report id → the consultation it answers.
    report_consult: HashMap<Uuid, Uuid>,
    /// How long before a slot starts its participants may open the study.
    lead: Duration,
}

impl Default for ConsultFacts {
    fn default() -> ConsultFacts {
        ConsultFacts {
            consults: HashMap::new(),
            by_study: HashMap::new(),
            experts: BTreeMap::new(),
            report_consult: HashMap::new(),
            lead: Duration::minutes(DEFAULT_CONSULT_LEAD_MINUTES),
        }
    }
}

/// The lead time a hub uses when its configuration does not say.
pub const DEFAULT_CONSULT_LEAD_MINUTES: i64 = 30;

impl ConsultFacts {
    pub fn lead(&self) -> Duration {
        self.lead
    }

    pub fn set_lead(&mut self, lead: Duration) {
        self.lead = lead;
    }

    pub fn consult(&self, id: &Uuid) -> Option<&Consultation> {
        self.consults.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Consultation> {
        self.consults.values()
    }

    pub fn expert(&self, institution: &str, expert: &str) -> Option<&Expert> {
        self.experts
            .get(&(institution.to_owned(), expert.to_owned()))
    }

    /// The consultations whose slot books `who`'s time (as expert or participant).
    pub fn bookings_of<'a>(
        &'a self,
        who: &'a ConsultParticipant,
    ) -> impl Iterator<Item = &'a Consultation> + 'a {
        self.consults.values().filter(move |c| {
            c.state.books_the_slot() && c.slot.is_some() && c.attendees().contains(who)
        })
    }

    /// Whether a consult window on `study` is open for `subject` at `now`.
    pub fn open_for(&self, subject: &Subject, study: &StudyRef, now: DateTime<Utc>) -> bool {
        self.by_study
            .get(&study.study_uid)
            .into_iter()
            .flatten()
            .filter_map(|id| self.consults.get(id))
            .any(|c| {
                c.owner.as_deref() == Some(study.owner.as_str())
                    && c.owner_consents()
                    && c.window_open(now, self.lead)
                    && c.involves(subject)
            })
    }

    pub fn apply(&mut self, event: &RecordedEvent, decoded: &HubEvent) {
        match decoded {
            HubEvent::Consult(e) => self.apply_consult(event, e),
            HubEvent::Diagnosis(DiagnosisEvent::ReportDrafted {
                report_id,
                consult_id: Some(consult_id),
                ..
            }) => {
                self.report_consult.insert(*report_id, *consult_id);
            }
            HubEvent::Diagnosis(DiagnosisEvent::ReportSigned { report_id, .. }) => {
                if let Some(c) = self
                    .report_consult
                    .get(report_id)
                    .and_then(|id| self.consults.get_mut(id))
                {
                    c.report_id.get_or_insert(*report_id);
                    c.report_signed_at.get_or_insert(event.recorded_at);
                }
            }
            _ => {}
        }
    }

    fn apply_consult(&mut self, event: &RecordedEvent, e: &ConsultEvent) {
        let (id, update): (Uuid, fn(&mut Consultation, &ConsultEvent)) = match e {
            ConsultEvent::ConsultRequested {
                consult_id,
                study_uid,
                kind,
                requesting_institution,
                requested_by,
                expert_institution,
                expert,
                question,
                owner,
                specialty,
                urgency,
                participants,
            } => {
                self.consults.insert(
                    *consult_id,
                    Consultation {
                        consult_id: *consult_id,
                        study_uid: study_uid.clone(),
                        owner: owner.clone(),
                        kind: *kind,
                        requesting_institution: requesting_institution.clone(),
                        requested_by: requested_by.clone(),
                        expert_institution: expert_institution.clone(),
                        expert: expert.clone(),
                        specialty: specialty.clone(),
                        urgency: *urgency,
                        question: question.clone(),
                        participants: participants.clone(),
                        state: ConsultState::Requested,
                        slot: None,
                        time_zone: None,
                        requested_at: event.recorded_at,
                        reason: None,
                        report_id: None,
                        report_signed_at: None,
                        version: event.stream_version,
                        approved_by: None,
                    },
                );
                self.by_study
                    .entry(study_uid.clone())
                    .or_default()
                    .push(*consult_id);
                return;
            }
            ConsultEvent::ExpertRegistered {
                institution,
                expert,
                specialty,
                availability,
            } => {
                self.experts.insert(
                    (institution.clone(), expert.clone()),
                    Expert {
                        institution: institution.clone(),
                        expert: expert.clone(),
                        specialty: specialty.clone(),
                        availability: availability.clone(),
                    },
                );
                return;
            }
            ConsultEvent::ConsultScheduled { consult_id, .. }
            | ConsultEvent::ConsultRescheduled { consult_id, .. }
            | ConsultEvent::ConsultAccepted { consult_id, .. }
            | ConsultEvent::ConsultDeclined { consult_id, .. }
            | ConsultEvent::ConsultCancelled { consult_id, .. }
            | ConsultEvent::ConsultCompleted { consult_id, .. }
            | ConsultEvent::ConsultApproved { consult_id, .. } => (*consult_id, evolve),
        };
        if let Some(c) = self.consults.get_mut(&id) {
            update(c, e);
            c.version = event.stream_version;
        }
    }
}

/// The state after `e`: the fold every reader of a consultation shares.
pub fn evolve(c: &mut Consultation, e: &ConsultEvent) {
    match e {
        ConsultEvent::ConsultScheduled {
            starts_at,
            ends_at,
            time_zone,
            ..
        } => {
            c.state = ConsultState::Scheduled;
            c.slot = Some(Slot {
                starts_at: *starts_at,
                ends_at: *ends_at,
            });
            c.time_zone = time_zone.clone();
        }
        ConsultEvent::ConsultRescheduled {
            starts_at,
            ends_at,
            time_zone,
            ..
        } => {
            c.slot = Some(Slot {
                starts_at: *starts_at,
                ends_at: *ends_at,
            });
            c.time_zone = time_zone.clone();
        }
        ConsultEvent::ConsultAccepted { expert, .. } => {
            c.state = ConsultState::Accepted;
            c.expert = Some(expert.clone());
        }
        ConsultEvent::ConsultDeclined { reason, .. } => {
            c.state = ConsultState::Declined;
            c.reason = Some(reason.clone());
        }
        ConsultEvent::ConsultCancelled { reason, .. } => {
            c.state = ConsultState::Cancelled;
            c.reason = Some(reason.clone());
        }
        ConsultEvent::ConsultCompleted { report_id, .. } => {
            c.state = ConsultState::Completed;
            if report_id.is_some() {
                c.report_id = *report_id;
            }
        }
        ConsultEvent::ConsultApproved { approved_by, .. } => {
            c.approved_by = Some(approved_by.clone());
        }
        ConsultEvent::ConsultRequested { .. } | ConsultEvent::ExpertRegistered { .. } => {}
    }
}
