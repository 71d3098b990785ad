//! Study stabilization: a study whose instances stop arriving for a quiet period is complete for
//! now, and `StudyStabilized` says so (with its series, instance counts and modalities), so that
//! consumers such as AI inference act once per study instead of once per instance.
//!
//! The stabilizer follows the log (catch up, then pushed events), keeps the studies still
//! receiving with their deadlines, and sleeps until the earliest one; its state is rebuilt from
//! the log on restart. It appends with the study's expected version, so a study that received
//! more instances meanwhile is not stabilized early, and one stabilized by an earlier run is not
//! stabilized twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hub_events::catalog::StudyEvent;
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, StoreError, StreamId,
    Subscription,
};
use tokio::sync::watch;

/// A study still receiving: when it becomes quiet, and on whose behalf.
#[derive(Clone, Debug)]
struct Receiving {
    deadline: DateTime<Utc>,
    tenant: String,
}

pub struct Stabilizer {
    store: Arc<dyn EventStore>,
    quiet: Duration,
    receiving: HashMap<String, Receiving>,
}

impl Stabilizer {
    pub fn new(store: Arc<dyn EventStore>, quiet: Duration) -> Stabilizer {
        Stabilizer {
            store,
            quiet,
            receiving: HashMap::new(),
        }
    }

    fn observe(&mut self, event: &hub_events::RecordedEvent) {
        let Ok(HubEvent::Study(study_event)) = HubEvent::decode(event) else {
            return;
        };
        match study_event {
            StudyEvent::InstancesStored { study_uid, .. } => {
                let quiet = chrono::Duration::from_std(self.quiet).unwrap_or(chrono::Duration::MAX);
                self.receiving.insert(
                    study_uid,
                    Receiving {
                        deadline: event.recorded_at + quiet,
                        tenant: event.metadata.tenant.clone(),
                    },
                );
            }
            StudyEvent::StudyStabilized { study_uid, .. }
            | StudyEvent::StudyPurged { study_uid, .. } => {
                self.receiving.remove(&study_uid);
            }
            _ => {}
        }
    }

    /// Appends `StudyStabilized` for `study` if nothing arrived since the last read.
    async fn stabilize(&mut self, study: &str, tenant: &str) -> Result<(), StoreError> {
        let stream = StreamId::new(Family::Study, study);
        let mut version = 0;
        let mut from = 1;
        let mut series: HashMap<String, u32> = HashMap::new();
        let mut modalities = BTreeSet::new();
        let mut already_stable = false;
        loop {
            let page = self.store.read_stream(&stream, from, 1000).await?;
            let Some(last) = page.last() else { break };
            from = last.stream_version + 1;
            for e in &page {
                version = e.stream_version;
                match HubEvent::decode(e) {
                    Ok(HubEvent::Study(StudyEvent::InstancesStored { series: s, .. })) => {
                        already_stable = false;
                        for batch in s {
                            *series.entry(batch.series_uid).or_default() +=
                                batch.instances.len() as u32;
                            modalities.extend(batch.modality);
                        }
                    }
                    Ok(HubEvent::Study(StudyEvent::StudyStabilized { .. })) => {
                        already_stable = true
                    }
                    _ => {}
                }
            }
        }
        if already_stable || series.is_empty() {
            return Ok(());
        }
        let event = StudyEvent::StudyStabilized {
            study_uid: study.to_owned(),
            series_count: series.len() as u32,
            instance_count: series.values().sum(),
            modalities: modalities.into_iter().collect(),
        };
        let meta = EventMetadata::new(tenant, "service:stabilizer");
        match self
            .store
            .append(
                &stream,
                ExpectedVersion::Exact(version),
                vec![event.to_new_event(meta)],
            )
            .await
        {
            // More instances came in meanwhile: their event resets the deadline.
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let mut subscription = Subscription::new(self.store.clone(), 0);
        loop {
            let next = self
                .receiving
                .iter()
                .min_by_key(|(_, r)| r.deadline)
                .map(|(s, r)| (s.clone(), r.clone()));
            let wait = match &next {
                Some((_, r)) => (r.deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(24 * 3600),
            };
            tokio::select! {
                batch = subscription.next_batch(1000) => {
                    for event in batch? {
                        self.observe(&event);
                    }
                }
                _ = tokio::time::sleep(wait), if next.is_some() => {
                    if let Some((study, r)) = next {
                        self.receiving.remove(&study);
                        if let Err(e) = self.stabilize(&study, &r.tenant).await {
                            tracing::warn!(%study, error = %e, "could not stabilize; retrying later");
                            self.receiving.insert(study, Receiving { deadline: Utc::now() + chrono::Duration::seconds(5), ..r });
                        }
                    }
                }
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return Ok(()),
            }
        }
    }
}
