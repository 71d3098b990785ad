//! The policy point a process runs: the engine, the live facts it follows from the log, and the
//! clock decisions are taken at (injectable, so tests move time instead of sleeping).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hub_events::{EventStore, HubEvent, Position, StoreError, Subscription};
use tokio::sync::watch;

use crate::engine::{Decision, Engine, PolicyError};
use crate::facts::Facts;
use crate::{Act, StudyRef, Subject};

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct AccessControl {
    engine: Engine,
    facts: RwLock<Facts>,
    applied: watch::Sender<Position>,
    clock: Clock,
}

impl AccessControl {
    /// The shipped policy, facts empty until [`AccessControl::follow`] applies the log, wall clock.
    pub async fn new() -> Result<AccessControl, PolicyError> {
        Ok(AccessControl::with_engine(
            Engine::new().await?,
            Arc::new(Utc::now),
        ))
    }

    pub fn with_engine(engine: Engine, clock: Clock) -> AccessControl {
        AccessControl {
            engine,
            facts: RwLock::new(Facts::new()),
            applied: watch::channel(0).0,
            clock,
        }
    }

    /// The policy point over facts already applied (a replayed world, in tests and tools).
    pub fn from_facts(engine: Engine, facts: Facts, clock: Clock) -> AccessControl {
        let applied = facts.applied();
        AccessControl {
            engine,
            facts: RwLock::new(facts),
            applied: watch::channel(applied).0,
            clock,
        }
    }

    /// Consultation participants may open the study `lead` before the slot starts.
    pub fn with_consult_lead(self, lead: chrono::Duration) -> AccessControl {
        self.facts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .consults_mut()
            .set_lead(lead);
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads the facts (briefly: the follower waits while a reader holds them).
    pub fn with_facts<R>(&self, f: impl FnOnce(&Facts) -> R) -> R {
        let facts = self
            .facts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&facts)
    }

    /// [`Engine::decide`] on the live facts, now.
    pub fn decide(
        &self,
        subject: &Subject,
        study: &StudyRef,
        series: Option<&str>,
        act: Act,
    ) -> Result<Decision, PolicyError> {
        let now = self.now();
        self.with_facts(|facts| self.engine.decide(subject, study, series, act, facts, now))
    }

    /// For actions on no institution's study.
    pub fn allows(&self, subject: &Subject, act: Act) -> Result<bool, PolicyError> {
        self.engine.allows(subject, act)
    }

    /// [`Engine::may_manage_consents`] on the live facts, now.
    pub fn may_manage_consents(
        &self,
        subject: &Subject,
        regional: &str,
    ) -> Result<bool, PolicyError> {
        let now = self.now();
        self.with_facts(|f| self.engine.may_manage_consents(subject, regional, f, now))
    }

    /// For actions on the caller's own institution (store, share, audit, patients): asked as
    /// the act on a study the caller's institution owns.
    pub fn allows_own(&self, subject: &Subject, act: Act) -> Result<bool, PolicyError> {
        let own = StudyRef {
            owner: subject.institution.clone(),
            study_uid: String::new(),
            patient_id: None,
        };
        Ok(self.decide(subject, &own, None, act)?.permit)
    }

    pub fn applied(&self) -> Position {
        *self.applied.borrow()
    }

    /// Waits until the facts include `position` (a grant or revocation just appended), at most
    /// `timeout`; false if they did not get there.
    pub async fn wait_applied(&self, position: Position, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Applies the log to the facts from the start, then live, until `stopped` turns true.
    pub async fn follow(
        &self,
        store: Arc<dyn EventStore>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut subscription = Subscription::new(store, self.applied());
        loop {
            let batch = tokio::select! {
                batch = subscription.next_batch(1000) => batch?,
                _ = stopped.wait_for(|s| *s) => return Ok(()),
            };
            let Some(last) = batch.last().map(|e| e.position) else {
                continue;
            };
            {
                let mut facts = self.facts.write().unwrap_or_else(|p| p.into_inner());
                for event in &batch {
                    match HubEvent::decode(event) {
                        Ok(decoded) => facts.apply(event, &decoded),
                        // The projections record undecodable events as dead letters.
                        Err(e) => tracing::warn!(error = %e, "access facts skip an event"),
                    }
                }
            }
            self.applied.send_replace(last);
        }
    }
}
