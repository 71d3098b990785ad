//! The outbox relay: the event store is the outbox. The relay reads the log after the position
//! it last saw acknowledged, publishes in position order, waits for every acknowledgement of the
//! batch, and only then records the batch's last position in the store. A crash anywhere in
//! between republishes from the recorded position: duplicates are possible, losses are not
//! (consumers deduplicate by position, stream version or event id).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{broadcast, watch};

use super::{KafkaConfig, Topic, encode, headers, stopping};
use crate::envelope::RecordedEvent;
use crate::store::{EventStore, StoreError};

#[derive(Clone)]
pub struct RelayMetrics {
    pub published: IntCounter,
    pub position: IntGauge,
    pub failures: IntCounter,
    pub batch_seconds: Histogram,
}

impl RelayMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<RelayMetrics> {
        let m = RelayMetrics {
            published: IntCounter::new(
                "hub_relay_published_events_total",
                "Events the relay published and saw acknowledged",
            )?,
            position: IntGauge::new(
                "hub_relay_position",
                "Last log position the relay has published and recorded",
            )?,
            failures: IntCounter::new(
                "hub_relay_failures_total",
                "Batches that failed to publish and will be retried",
            )?,
            batch_seconds: Histogram::with_opts(HistogramOpts::new(
                "hub_relay_batch_seconds",
                "Time to publish one batch, acknowledgements included",
            ))?,
        };
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.position.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        Ok(m)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading or recording in the event store failed: {0}")]
    Store(#[from] StoreError),
    #[error("publishing to Kafka failed: {0}")]
    Kafka(#[from] KafkaError),
}

/// What the relay is doing, for `/readyz`: `Ok` or the reason it is not publishing.
pub type RelayStatus = Result<(), String>;

pub struct Relay {
    store: Arc<dyn EventStore>,
    config: KafkaConfig,
    producer: FutureProducer,
    name: String,
    batch: usize,
    metrics: RelayMetrics,
}

impl Relay {
    /// A relay named `name` (its position is recorded under that name, so two relays with
    /// different names publish the same log independently).
    pub fn new(
        store: Arc<dyn EventStore>,
        config: KafkaConfig,
        name: &str,
        metrics: RelayMetrics,
    ) -> Result<Relay, KafkaError> {
        Ok(Relay {
            producer: config.producer()?,
            store,
            config,
            name: name.to_string(),
            batch: 5000,
            metrics,
        })
    }

    pub fn with_batch(mut self, batch: usize) -> Relay {
        self.batch = batch.max(1);
        self
    }

    /// Publishes `events` in order and waits for every acknowledgement.
    async fn publish(&self, events: &[RecordedEvent]) -> Result<(), KafkaError> {
        // Topic names in the order of `Topic::ALL`, which is the enum's order.
        let topics: Vec<String> = Topic::ALL.iter().map(|t| self.config.topic(*t)).collect();
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let topic = &topics[Topic::of(event.stream_id.family()) as usize];
            let value = encode(event);
            let mut record = FutureRecord::to(topic)
                .key(event.stream_id.as_str())
                .payload(&value)
                .headers(headers(event));
            // Enqueued one after the other from this one task, so a key's messages keep their
            // order; a full local queue waits for the oldest delivery instead of spinning.
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }

    /// Publishes one batch after the recorded position and records it; returns how many
    /// events it published (0: nothing new).
    pub async fn publish_once(&self) -> Result<usize, RelayError> {
        let from = self.store.published(&self.name).await?;
        let events = self.store.read_all(from, self.batch).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(0);
        };
        let started = Instant::now();
        self.publish(&events).await?;
        self.store.set_published(&self.name, last).await?;
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.published.inc_by(events.len() as u64);
        self.metrics.position.set(last as i64);
        Ok(events.len())
    }

    /// Publishes until `stopped` turns true. Between batches it waits for the store to announce
    /// an append (NOTIFY in PostgreSQL), or at most a second. Failures are retried from the
    /// recorded position with a growing pause (up to 10 s); `status` tells why it is stuck.
    pub async fn run(
        &self,
        status: watch::Sender<RelayStatus>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), RelayError> {
        let mut bus = self.store.bus().subscribe();
        let mut failures = 0u32;
        let mut topics_ready = false;
        loop {
            if *stopped.borrow() {
                return Ok(());
            }
            if !topics_ready {
                match self.config.ensure_topics().await {
                    Ok(()) => topics_ready = true,
                    Err(e) => {
                        let why = format!(
                            "cannot create or check the topics at Kafka {}: {e}",
                            self.config.brokers
                        );
                        failures = self.failed(&status, why, failures, &mut stopped).await;
                        continue;
                    }
                }
            }
            match self.publish_once().await {
                Ok(n) => {
                    failures = 0;
                    let _ = status.send_replace(Ok(()));
                    if n < self.batch {
                        tokio::select! {
                            _ = wait_for_append(&mut bus) => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stopping(&mut stopped) => return Ok(()),
                        }
                    }
                }
                Err(e) => {
                    // A broker that lost its topics (a restart without storage) needs them back.
                    topics_ready = !matches!(e, RelayError::Kafka(_));
                    let why = match &e {
                        RelayError::Kafka(k) => {
                            format!("cannot publish to Kafka {}: {k}", self.config.brokers)
                        }
                        RelayError::Store(s) => format!("cannot read the event store: {s}"),
                    };
                    failures = self.failed(&status, why, failures, &mut stopped).await;
                }
            }
        }
    }

    async fn failed(
        &self,
        status: &watch::Sender<RelayStatus>,
        why: String,
        failures: u32,
        stopped: &mut watch::Receiver<bool>,
    ) -> u32 {
        self.metrics.failures.inc();
        let pause = Duration::from_millis((200u64 << failures.min(6)).min(10_000));
        tracing::warn!(reason = %why, ?pause, "relay retrying from its recorded position");
        let _ = status.send_replace(Err(why));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping(stopped) => {}
        }
        failures + 1
    }
}

async fn wait_for_append(bus: &mut broadcast::Receiver<crate::bus::BusMessage>) {
    // Any message (or a lag, which means many) says the head moved.
    let _ = bus.recv().await;
}
