//! The distributed transport: Kafka (rdkafka), one topic per aggregate family.
//!
//! - [`relay`]: the outbox relay. It publishes the store's log in position order, keyed by
//!   stream id (so a partition keeps each aggregate's order), with the event id, type, schema
//!   version and position as headers, and records what the broker acknowledged in the store.
//! - [`feed`]: a process's live feed of the whole log from Kafka into its local [`Bus`], in
//!   global order (a resequencer; a gap that Kafka does not fill soon is read from the store).
//!   Projections, the policy facts and the stabilizer follow the log through it unchanged.
//! - [`group`]: a consumer group for reacting services that share the work between replicas,
//!   with bounded retries and a dead-letter topic.
//!
//! The log stays the source of truth: Kafka carries copies, consumers are idempotent (by
//! position, stream version or event id), and nothing relies on Kafka transactions.
//!
//! [`Bus`]: crate::bus::Bus

pub mod feed;
pub mod group;
pub mod relay;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::json;

use crate::envelope::{Family, Position, RecordedEvent};

pub use feed::{FeedMetrics, KafkaFeed};
pub use group::{GroupConsumer, GroupMetrics};
pub use rdkafka::error::KafkaError;
pub use relay::{Relay, RelayMetrics};

/// Where the broker is and how the topics are named and made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`
    pub brokers: String,
    /// Topic names are `<prefix>.<family>`, e.g. `hub.study`.
    pub topic_prefix: String,
    /// Partitions of each topic the hub creates (existing topics are left as they are).
    pub partitions: i32,
    /// Replication factor of each topic the hub creates.
    pub replication: i32,
}

/// One topic per aggregate family. Registry facts (institutions, alliances, patient links) share
/// one topic; consents travel with shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Study,
    Share,
    Consult,
    Diagnosis,
    Registry,
    Access,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Study,
        Topic::Share,
        Topic::Consult,
        Topic::Diagnosis,
        Topic::Registry,
        Topic::Access,
    ];

    pub fn of(family: Family) -> Topic {
        match family {
            Family::Study => Topic::Study,
            Family::Share | Family::Consent => Topic::Share,
            Family::Consult => Topic::Consult,
            Family::Diagnosis => Topic::Diagnosis,
            Family::Institution | Family::Alliance | Family::Patient => Topic::Registry,
            Family::Access => Topic::Access,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Topic::Study => "study",
            Topic::Share => "share",
            Topic::Consult => "consult",
            Topic::Diagnosis => "diagnosis",
            Topic::Registry => "registry",
            Topic::Access => "access",
        }
    }
}

impl KafkaConfig {
    pub fn topic(&self, topic: Topic) -> String {
        format!("{}.{}", self.topic_prefix, topic.name())
    }

    /// Where events that keep failing, or cannot be decoded, end up, with the reason.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dead-letters", self.topic_prefix)
    }

    /// The client settings every hub client shares.
    pub(crate) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "5000")
            .set("log_level", "3")
            // Older protocol versions, without topic ids (KIP-516): with the newer ones
            // librdkafka 2.12 crashed (SIGSEGV in rd_kafka_metadata_cache_find) when a broker
            // restarted without its topics.
            .set("api.version.request", "false")
            .set("broker.version.fallback", "2.8.0");
        c
    }

    /// A producer with idempotence on (no duplicates or reordering from the producer's own
    /// retries), delivery reported within 15 s (then the caller retries from its checkpoint).
    pub(crate) fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", "15000")
            .create()
    }

    /// Creates the family topics and the dead-letter topic if they are missing.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let mut names: Vec<String> = Topic::ALL.iter().map(|t| self.topic(*t)).collect();
        names.push(self.dead_letter_topic());
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                        tracing::warn!(%topic, ?code, "cannot create topic");
                    });
                }
            }
        }
        Ok(())
    }
}

/// A client for [`probe`].
pub fn probe_client(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    config.client().create()
}

/// Asks the broker for its metadata: `Ok` when it answers within `timeout`, else what failed,
/// naming the brokers (for `/readyz`).
pub async fn probe(
    producer: &FutureProducer,
    brokers: &str,
    timeout: Duration,
) -> Result<(), String> {
    let producer = producer.clone();
    let answer = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|m| m.brokers().len())
    })
    .await;
    match answer {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err(format!("Kafka at {brokers} reports no brokers")),
        Ok(Err(e)) => Err(format!("Kafka at {brokers} does not answer: {e}")),
        Err(e) => Err(format!("Kafka probe failed: {e}")),
    }
}

/// Header names carried by every published event.
pub const HEADER_EVENT_ID: &str = "event-id";
pub const HEADER_EVENT_TYPE: &str = "event-type";
pub const HEADER_SCHEMA_VERSION: &str = "schema-version";
pub const HEADER_POSITION: &str = "position";
pub const HEADER_STREAM_VERSION: &str = "stream-version";

/// The message value: the whole recorded event (envelope and payload) as JSON.
pub fn encode(event: &RecordedEvent) -> Vec<u8> {
    // A RecordedEvent is strings, numbers and a timestamp: serializing it cannot fail.
    serde_json::to_vec(event).unwrap_or_default()
}

pub fn headers(event: &RecordedEvent) -> OwnedHeaders {
    let id = event.event_id.to_string();
    let schema = event.schema_version.to_string();
    let position = event.position.to_string();
    let version = event.stream_version.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: HEADER_EVENT_ID,
            value: Some(&id),
        })
        .insert(Header {
            key: HEADER_EVENT_TYPE,
            value: Some(&event.event_type),
        })
        .insert(Header {
            key: HEADER_SCHEMA_VERSION,
            value: Some(&schema),
        })
        .insert(Header {
            key: HEADER_POSITION,
            value: Some(&position),
        })
        .insert(Header {
            key: HEADER_STREAM_VERSION,
            value: Some(&version),
        })
}

/// Why a message is not a hub event.
pub fn decode(message: &impl Message) -> Result<RecordedEvent, String> {
    let payload = message
        .payload()
        .ok_or_else(|| "the message has no value".to_string())?;
    let event: RecordedEvent = serde_json::from_slice(payload)
        .map_err(|e| format!("the message value is not a hub event envelope: {e}"))?;
    if let Some(key) = message.key()
        && key != event.stream_id.as_str().as_bytes()
    {
        return Err(format!(
            "the message key {:?} is not the event's stream {}",
            String::from_utf8_lossy(key),
            event.stream_id
        ));
    }
    Ok(event)
}

/// The position a message claims in its headers, if any (for dead letters of undecodable ones).
pub fn header_position(message: &impl Message) -> Option<Position> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == HEADER_POSITION)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

/// Sends messages that failed to the dead-letter topic, with the reason and where they came
/// from. Each dead letter is keyed by the original key, so the letters of one aggregate stay in
/// order.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    consumer: String,
}

impl DeadLetters {
    pub fn new(config: &KafkaConfig, consumer: &str) -> Result<DeadLetters, KafkaError> {
        Ok(DeadLetters {
            producer: config.producer()?,
            topic: config.dead_letter_topic(),
            consumer: consumer.to_string(),
        })
    }

    /// Publishes one dead letter and waits for the broker's acknowledgement.
    pub async fn send(&self, message: &impl Message, reason: &str) -> Result<(), KafkaError> {
        let position = header_position(message);
        let letter = json!({
            "consumer": self.consumer,
            "reason": reason,
            "position": position,
            "source": {
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
            },
            "value": message.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
        });
        let body = letter.to_string();
        let position = position.map(|p| p.to_string()).unwrap_or_default();
        let key = message.key().unwrap_or(b"");
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "consumer",
                value: Some(&self.consumer),
            });
        if !position.is_empty() {
            headers = headers.insert(Header {
                key: HEADER_POSITION,
                value: Some(&position),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .key(key)
            .payload(&body)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// Resolves once `stopped` is true (or its sender is gone), holding no borrow across awaits.
pub(crate) async fn stopping(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}
