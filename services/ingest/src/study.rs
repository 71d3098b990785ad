//! The study aggregate: its state folded from its events, and the pure decision of what a batch
//! of received instances adds to it.

use std::collections::{BTreeMap, HashMap};

use hub_events::HubEvent;
use hub_events::catalog::{IngestSource, SeriesInstances, StoredInstance, StudyEvent};

use crate::dicom::InstanceHeader;

/// What the log says about one study.
#[derive(Clone, Debug, Default)]
pub struct StudyState {
    pub version: u64,
    pub owner: Option<String>,
    /// SOP Instance UID → SHA-256 of the stored bytes.
    pub instances: HashMap<String, String>,
}

impl StudyState {
    pub fn apply(&mut self, event: &StudyEvent) {
        match event {
            StudyEvent::StudyRegistered { owner, .. } => self.owner = Some(owner.clone()),
            StudyEvent::InstancesStored { series, .. } => {
                for s in series {
                    for i in &s.instances {
                        self.instances
                            .insert(i.sop_instance_uid.clone(), i.sha256.clone());
                    }
                }
            }
            StudyEvent::StudyPurged { .. } => self.instances.clear(),
            _ => {}
        }
    }

    pub fn fold<'a>(events: impl IntoIterator<Item = (u64, &'a HubEvent)>) -> StudyState {
        let mut state = StudyState::default();
        for (version, event) in events {
            state.version = version;
            if let HubEvent::Study(e) = event {
                state.apply(e);
            }
        }
        state
    }
}

/// One received instance, its blob written under `blob_key`.
#[derive(Clone, Debug)]
pub struct Received {
    pub header: InstanceHeader,
    pub blob_key: String,
    pub sha256: String,
    pub size: u64,
}

/// What happens to one received instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New: it goes into the event.
    Stored,
    /// The same bytes are already stored: success, no new event.
    AlreadyStored,
    /// Different bytes under a SOP Instance UID already stored: refused, never overwritten.
    Conflict { stored_sha256: String },
    /// The study belongs to another institution.
    OwnedElsewhere { owner: String },
}

/// Decides, for instances of ONE study received by `institution`, the outcome of each and the
/// events to append (none if nothing is new).
pub fn decide(
    state: &StudyState,
    institution: &str,
    source: &IngestSource,
    received: &[Received],
) -> (Vec<Outcome>, Vec<StudyEvent>) {
    if let Some(owner) = &state.owner
        && owner != institution
    {
        let outcome = Outcome::OwnedElsewhere {
            owner: owner.clone(),
        };
        return (vec![outcome; received.len()], vec![]);
    }
    let mut outcomes = Vec::with_capacity(received.len());
    let mut batch: HashMap<&str, &str> = HashMap::new();
    let mut new: Vec<&Received> = Vec::new();
    for r in received {
        let sop = r.header.sop_instance_uid.as_str();
        let known = state
            .instances
            .get(sop)
            .map(String::as_str)
            .or_else(|| batch.get(sop).copied());
        outcomes.push(match known {
            Some(sha) if sha == r.sha256 => Outcome::AlreadyStored,
            Some(sha) => Outcome::Conflict {
                stored_sha256: sha.to_owned(),
            },
            None => {
                batch.insert(sop, &r.sha256);
                new.push(r);
                Outcome::Stored
            }
        });
    }
    let mut events = Vec::new();
    let Some(first) = new.first() else {
        return (outcomes, events);
    };
    let h = &first.header;
    if state.owner.is_none() {
        events.push(StudyEvent::StudyRegistered {
            study_uid: h.study_uid.clone(),
            owner: institution.to_owned(),
            patient_id: h.patient_id.clone(),
            patient_name: h.patient_name.clone(),
            patient_birth_date: h.patient_birth_date.clone(),
            patient_sex: h.patient_sex.clone(),
            study_date: h.study_date.clone(),
            study_time: h.study_time.clone(),
            accession_number: h.accession_number.clone(),
            study_description: h.study_description.clone(),
            referring_physician: h.referring_physician.clone(),
        });
    }
    let mut series: BTreeMap<&str, SeriesInstances> = BTreeMap::new();
    for r in new {
        let h = &r.header;
        series
            .entry(h.series_uid.as_str())
            .or_insert_with(|| SeriesInstances {
                series_uid: h.series_uid.clone(),
                modality: h.modality.clone(),
                series_number: h.series_number,
                series_description: h.series_description.clone(),
                instances: Vec::new(),
            })
            .instances
            .push(StoredInstance {
                sop_instance_uid: h.sop_instance_uid.clone(),
                sop_class_uid: h.sop_class_uid.clone(),
                transfer_syntax_uid: h.transfer_syntax_uid.clone(),
                instance_number: h.instance_number,
                blob_key: r.blob_key.clone(),
                size_bytes: r.size,
                sha256: r.sha256.clone(),
            });
    }
    events.push(StudyEvent::InstancesStored {
        study_uid: h.study_uid.clone(),
        source: source.clone(),
        series: series.into_values().collect(),
    });
    (outcomes, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(sop: &str, sha: &str) -> Received {
        Received {
            header: InstanceHeader {
                study_uid: "1.2".into(),
                series_uid: "1.2.3".into(),
                sop_instance_uid: sop.into(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                modality: Some("CT".into()),
                series_number: Some(1),
                series_description: None,
                instance_number: Some(1),
                patient_id: Some("P".into()),
                patient_name: None,
                patient_birth_date: None,
                patient_sex: None,
                study_date: None,
                study_time: None,
                accession_number: None,
                study_description: None,
                referring_physician: None,
            },
            blob_key: format!("k/{sop}"),
            sha256: sha.into(),
            size: 10,
        }
    }

    fn src() -> IngestSource {
        IngestSource::StowRs {
            request_id: "r".into(),
        }
    }

    #[test]
    fn the_first_instances_register_the_study_for_the_pushing_institution() {
        let (outcomes, events) = decide(
            &StudyState::default(),
            "hosp-a",
            &src(),
            &[received("1", "aa"), received("2", "bb")],
        );
        assert_eq!(outcomes, vec![Outcome::Stored, Outcome::Stored]);
        assert!(
            matches!(&events[0], StudyEvent::StudyRegistered { owner, .. } if owner == "hosp-a")
        );
        assert!(
            matches!(&events[1], StudyEvent::InstancesStored { series, .. } if series[0].instances.len() == 2)
        );
    }

    #[test]
    fn identical_bytes_are_idempotent_and_different_bytes_conflict() {
        let mut state = StudyState::default();
        let (_, events) = decide(&state, "hosp-a", &src(), &[received("1", "aa")]);
        for e in &events {
            state.apply(e);
        }
        let (outcomes, events) = decide(
            &state,
            "hosp-a",
            &src(),
            &[
                received("1", "aa"),
                received("1", "zz"),
                received("3", "cc"),
                received("3", "dd"),
            ],
        );
        assert_eq!(outcomes[0], Outcome::AlreadyStored);
        assert_eq!(
            outcomes[1],
            Outcome::Conflict {
                stored_sha256: "aa".into()
            }
        );
        assert_eq!(outcomes[2], Outcome::Stored);
        assert_eq!(
            outcomes[3],
            Outcome::Conflict {
                stored_sha256: "cc".into()
            }
        );
        assert_eq!(events.len(), 1, "no second registration");
        let (outcomes, events) = decide(&state, "hosp-a", &src(), &[received("1", "aa")]);
        assert_eq!((outcomes, events.len()), (vec![Outcome::AlreadyStored], 0));
    }

    #[test]
    fn another_institution_cannot_add_to_a_study_it_does_not_own() {
        let mut state = StudyState::default();
        let (_, events) = decide(&state, "hosp-a", &src(), &[received("1", "aa")]);
        for e in &events {
            state.apply(e);
        }
        let (outcomes, events) = decide(&state, "hosp-b", &src(), &[received("2", "bb")]);
        assert_eq!(
            outcomes,
            vec![Outcome::OwnedElsewhere {
                owner: "hosp-a".into()
            }]
        );
        assert!(events.is_empty());
    }
}
