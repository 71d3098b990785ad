//! A consumer group for reacting services: replicas share the partitions, each message is
//! handled, retried a bounded number of times, and then either done or sent to the dead-letter
//! topic with the reason. Its offset is committed only after that, so a crash redelivers (the
//! handler must be idempotent: by stream version or event id), and no message blocks its
//! partition for longer than its retries.

use std::future::Future;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio::sync::watch;

use super::{DeadLetters, KafkaConfig, KafkaError, Topic, decode, stopping};
use crate::envelope::RecordedEvent;

#[derive(Clone)]
pub struct GroupMetrics {
    /// Messages by outcome: handled, retried, dead-lettered.
    pub messages: IntCounterVec,
}

impl GroupMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<GroupMetrics> {
        let messages = IntCounterVec::new(
            Opts::new(
                "hub_consumer_messages_total",
                "Messages of a consumer group by outcome (handled, retried, dead_letter)",
            ),
            &["group", "outcome"],
        )?;
        registry.register(Box::new(messages.clone()))?;
        Ok(GroupMetrics { messages })
    }
}

pub struct GroupConsumer {
    consumer: StreamConsumer,
    dead: DeadLetters,
    group: String,
    retries: u32,
    backoff: Duration,
    metrics: GroupMetrics,
}

impl GroupConsumer {
    /// Joins `group` on the topics of `topics`. Offsets start at the earliest message the first
    /// time the group runs (nothing published is skipped), then at the group's commits.
    pub async fn join(
        config: &KafkaConfig,
        group: &str,
        topics: &[Topic],
        metrics: GroupMetrics,
    ) -> Result<GroupConsumer, KafkaError> {
        config.ensure_topics().await?;
        let consumer: StreamConsumer = config
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .create()?;
        let names: Vec<String> = topics.iter().map(|t| config.topic(*t)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(GroupConsumer {
            consumer,
            dead: DeadLetters::new(config, group)?,
            group: group.to_string(),
            retries: 4,
            backoff: Duration::from_millis(200),
            metrics,
        })
    }

    /// How often a failing message is retried before it is dead-lettered, and the first pause
    /// (doubled after each attempt).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> GroupConsumer {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .messages
            .with_label_values(&[&self.group, outcome])
            .inc();
    }

    /// Handles messages until `stopped` turns true. `handle` returns `Err(reason)` for a failure
    /// worth retrying; after the last retry the message goes to the dead-letter topic with that
    /// reason and the group moves on.
    pub async fn run<F, Fut>(&self, mut handle: F, mut stopped: watch::Receiver<bool>)
    where
        F: FnMut(RecordedEvent) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            let message = tokio::select! {
                m = self.consumer.recv() => m,
                _ = stopping(&mut stopped) => return,
            };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "Kafka consumer error; the client keeps reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let outcome = match decode(&message) {
                Err(reason) => Err(reason),
                Ok(event) => {
                    let mut attempt = 0;
                    loop {
                        match handle(event.clone()).await {
                            Ok(()) => break Ok(()),
                            Err(reason) if attempt >= self.retries => {
                                break Err(format!("failed {} times; last: {reason}", attempt + 1));
                            }
                            Err(reason) => {
                                self.count("retried");
                                let pause = self.backoff * 2u32.saturating_pow(attempt);
                                tracing::warn!(group = %self.group, position = event.position, %reason, ?pause, "handler failed; retrying");
                                attempt += 1;
                                tokio::select! {
                                    _ = tokio::time::sleep(pause) => {}
                                    _ = stopping(&mut stopped) => return,
                                }
                            }
                        }
                    }
                }
            };
            match outcome {
                Ok(()) => self.count("handled"),
                Err(reason) => {
                    self.count("dead_letter");
                    tracing::error!(group = %self.group, topic = message.topic(), offset = message.offset(), %reason, "message sent to the dead-letter topic");
                    // The dead letter must be durable before the offset moves past the message.
                    while let Err(e) = self.dead.send(&message, &reason).await {
                        tracing::error!(error = %e, "cannot publish the dead letter; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stopping(&mut stopped) => return,
                        }
                    }
                }
            }
            if let Err(e) = self.consumer.commit_message(&message, CommitMode::Async) {
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; the message may be redelivered");
            }
        }
    }
}
