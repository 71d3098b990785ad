//! A process's live feed of the whole log from Kafka, in global order, into its local bus.
//!
//! Read models, the policy facts and the stabilizer each need every event in position order.
//! They keep following the log exactly as in the embedded mode ([`Subscription`]: catch up from
//! the store after their checkpoint, then take pushes from the bus); in the distributed mode the
//! pushes come from here instead of from the appends of the same process.
//!
//! The family topics interleave, so messages arrive out of global order across partitions. The
//! feed keeps them in a small reorder buffer and pushes each contiguous run. A hole Kafka has not
//! filled within [`GAP_WAIT`] (a message still in flight on another partition, or lost with a
//! broker that kept no storage) is announced as `HeadMoved`, and subscribers read that range from
//! the store: the store stays the source of truth, Kafka carries the copies.
//!
//! Start: the feed takes every partition's end offset first, then the store's head, then starts
//! delivering. Anything committed after a subscriber's catch-up read is therefore published after
//! those offsets were taken, and arrives.
//!
//! [`Subscription`]: crate::subscription::Subscription

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{DeadLetters, KafkaConfig, KafkaError, Topic, decode, stopping};
use crate::bus::BusMessage;
use crate::catalog::HubEvent;
use crate::envelope::{Position, RecordedEvent};
use crate::store::EventStore;

/// How long a hole in the positions may stay open before subscribers read it from the store.
pub const GAP_WAIT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct FeedMetrics {
    /// Events pushed from Kafka, dropped as duplicates, and holes handed to the store.
    pub events: IntCounterVec,
    pub gaps: IntCounter,
    pub dead_letters: IntCounter,
}

impl FeedMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<FeedMetrics> {
        let m = FeedMetrics {
            events: IntCounterVec::new(
                Opts::new(
                    "hub_feed_events_total",
                    "Kafka messages seen by the feed, by outcome (pushed, duplicate)",
                ),
                &["outcome"],
            )?,
            gaps: IntCounter::new(
                "hub_feed_gaps_total",
                "Holes in the positions that subscribers read from the store",
            )?,
            dead_letters: IntCounter::new(
                "hub_feed_dead_letters_total",
                "Messages sent to the dead-letter topic by the feed",
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.gaps.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        Ok(m)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("event store: {0}")]
    Store(#[from] crate::store::StoreError),
}

pub struct KafkaFeed {
    consumer: StreamConsumer,
    store: Arc<dyn EventStore>,
    dead: DeadLetters,
    metrics: FeedMetrics,
    next: Position,
    buffer: BTreeMap<Position, RecordedEvent>,
    gap_since: Option<Instant>,
}

impl KafkaFeed {
    /// Assigns every partition of the family topics at its current end, then reads the store's
    /// head. Subscriptions made after this returns miss nothing.
    pub async fn start(
        config: &KafkaConfig,
        store: Arc<dyn EventStore>,
        metrics: FeedMetrics,
        consumer_name: &str,
    ) -> Result<KafkaFeed, FeedError> {
        config.ensure_topics().await?;
        let consumer: StreamConsumer = config
            .client()
            // Required by the client; the feed assigns partitions itself and never commits.
            .set(
                "group.id",
                format!("{}-feed-{}", config.topic_prefix, uuid::Uuid::now_v7()),
            )
            .set("enable.auto.commit", "false")
            // After a broker lost its data, start again at whatever it has.
            .set("auto.offset.reset", "earliest")
            .create()?;
        let consumer = Arc::new(consumer);
        let topics: Vec<String> = Topic::ALL.iter().map(|t| config.topic(*t)).collect();
        let assignment = {
            let consumer = consumer.clone();
            tokio::task::spawn_blocking(move || -> Result<TopicPartitionList, KafkaError> {
                let timeout = Duration::from_secs(10);
                let mut tpl = TopicPartitionList::new();
                for topic in &topics {
                    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
                    for t in metadata.topics() {
                        for p in t.partitions() {
                            let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                            tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
                        }
                    }
                }
                Ok(tpl)
            })
            .await
            .map_err(|_| KafkaError::Canceled)??
        };
        consumer.assign(&assignment)?;
        let consumer = Arc::try_unwrap(consumer).map_err(|_| KafkaError::Canceled)?;
        let head = store.head().await?;
        Ok(KafkaFeed {
            consumer,
            dead: DeadLetters::new(config, consumer_name)?,
            store,
            metrics,
            next: head + 1,
            buffer: BTreeMap::new(),
            gap_since: None,
        })
    }

    /// Pushes the buffered run that continues exactly at `next`.
    fn push_contiguous(&mut self) {
        let mut run = Vec::new();
        while let Some(event) = self.buffer.remove(&self.next) {
            self.next += 1;
            run.push(event);
        }
        if !run.is_empty() {
            self.metrics
                .events
                .with_label_values(&["pushed"])
                .inc_by(run.len() as u64);
            self.store.bus().publish(BusMessage::Appended(run.into()));
        }
        self.gap_since = if self.buffer.is_empty() {
            None
        } else {
            self.gap_since.or_else(|| Some(Instant::now()))
        };
    }

    /// A hole that stayed open: subscribers read up to the highest buffered position from the
    /// store, and the feed goes on after it.
    fn hand_gap_to_store(&mut self) {
        if let Some((&last, _)) = self.buffer.last_key_value() {
            self.metrics.gaps.inc();
            tracing::debug!(
                from = self.next,
                to = last,
                "positions missing from Kafka; subscribers read them from the store"
            );
            self.buffer.clear();
            self.next = last + 1;
            self.store.bus().publish(BusMessage::HeadMoved(last));
        }
        self.gap_since = None;
    }

    /// Delivers until `stopped` turns true. Broker outages are waited out (the client
    /// reconnects); they are logged, never fatal.
    pub async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut last_error_log: Option<Instant> = None;
        loop {
            let deadline = self.gap_since.map(|t| t + GAP_WAIT);
            tokio::select! {
                message = self.consumer.recv() => match message {
                    Ok(message) => match decode(&message) {
                        Ok(event) => {
                            if event.position < self.next {
                                self.metrics.events.with_label_values(&["duplicate"]).inc();
                            } else {
                                if let Err(reason) = HubEvent::decode(&event) {
                                    // Delivered anyway: the projections record it as their own
                                    // dead letter and go on; the topic tells operators where.
                                    self.dead_letter(&message, &reason.to_string()).await;
                                }
                                self.buffer.insert(event.position, event);
                                self.push_contiguous();
                            }
                        }
                        Err(reason) => self.dead_letter(&message, &reason).await,
                    },
                    Err(e) => {
                        if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(error = %e, "Kafka feed: the broker does not answer; the client keeps reconnecting");
                            last_error_log = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => self.hand_gap_to_store(),
                _ = stopping(&mut stopped) => return,
            }
        }
    }

    async fn dead_letter(&self, message: &impl Message, reason: &str) {
        self.metrics.dead_letters.inc();
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            %reason,
            "undecodable message; sent to the dead-letter topic"
        );
        if let Err(e) = self.dead.send(message, reason).await {
            tracing::error!(error = %e, "cannot publish the dead letter");
        }
    }
}
