//! The Kafka transport against a real Kafka-compatible broker (tansu, started per test on a free
//! port): the relay's topics, keys and headers; the feed's global order; a consumer group's
//! retries and dead letters.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hub_events::catalog::{ShareEvent, StudyEvent};
use hub_events::kafka::{
    FeedMetrics, GroupConsumer, GroupMetrics, KafkaConfig, KafkaFeed, Relay, RelayMetrics, Topic,
};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, NewEvent, SqliteEventStore,
    SqliteSync, StoreMetrics, StreamId, Subscription,
};
use prometheus::Registry;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;

struct Broker {
    child: Child,
    brokers: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts tansu (HUB_TEST_TANSU, set by tests/run.sh) and waits until it accepts connections.
fn broker() -> Broker {
    let tansu = std::env::var("HUB_TEST_TANSU").expect(
        "HUB_TEST_TANSU is not set: run the suite with tests/run.sh, which installs a \
         Kafka-compatible broker (tansu) and sets it",
    );
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker {
        child,
        brokers: format!("127.0.0.1:{port}"),
    }
}

fn config(broker: &Broker) -> KafkaConfig {
    KafkaConfig {
        brokers: broker.brokers.clone(),
        topic_prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
        partitions: 3,
        replication: 1,
    }
}

async fn store(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    Arc::new(
        SqliteEventStore::open(
            &dir.path().join("events.db"),
            SqliteSync::Normal,
            StoreMetrics::unregistered(),
        )
        .await
        .expect("open store"),
    )
}

fn stabilized(study: &str) -> NewEvent {
    HubEvent::from(StudyEvent::StudyStabilized {
        study_uid: study.to_owned(),
        series_count: 1,
        instance_count: 1,
        modalities: vec!["CT".into()],
    })
    .to_new_event(EventMetadata::new("hosp-a", "service:test"))
}

fn revoked() -> NewEvent {
    HubEvent::from(ShareEvent::ShareRevoked {
        share_id: uuid::Uuid::now_v7(),
        reason: "test".into(),
    })
    .to_new_event(EventMetadata::new("hosp-a", "user:test"))
}

/// Appends `studies` studies with `per` events each, interleaved with share events.
async fn fill(store: &Arc<dyn EventStore>, studies: usize, per: usize) {
    for s in 0..studies {
        let stream = StreamId::new(Family::Study, format!("1.2.3.{s}"));
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                (0..per)
                    .map(|_| stabilized(&format!("1.2.3.{s}")))
                    .collect(),
            )
            .await
            .expect("append study");
        let share = StreamId::new(Family::Share, format!("s{s}"));
        store
            .append(&share, ExpectedVersion::Any, vec![revoked()])
            .await
            .expect("append share");
    }
}

async fn publish_all(relay: &Relay) {
    while relay.publish_once().await.expect("publish") > 0 {}
}

fn reader(config: &KafkaConfig) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_every_event_keyed_by_stream_with_headers_and_resumes_where_it_stopped()
{
    let broker = broker();
    let config = config(&broker);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir).await;
    fill(&store, 20, 3).await; // 80 events
    let relay = Relay::new(
        store.clone(),
        config.clone(),
        "main",
        RelayMetrics::new(&Registry::new()).expect("metrics"),
    )
    .expect("relay")
    .with_batch(30);
    config.ensure_topics().await.expect("topics");
    publish_all(&relay).await;
    assert_eq!(store.published("main").await.expect("published"), 80);
    // A second relay of the same name has nothing left to publish; more appends go out next.
    let again = Relay::new(
        store.clone(),
        config.clone(),
        "main",
        RelayMetrics::new(&Registry::new()).expect("metrics"),
    )
    .expect("relay");
    assert_eq!(again.publish_once().await.expect("publish"), 0);
    fill(&store, 1, 1).await;
    assert_eq!(again.publish_once().await.expect("publish"), 2);

    let consumer = reader(&config);
    consumer
        .subscribe(&[&config.topic(Topic::Study), &config.topic(Topic::Share)])
        .expect("subscribe");
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut total = 0;
    while total < 82 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("all 82 events arrive within 30 s")
            .expect("message");
        let event = hub_events::kafka::decode(&m).expect("a hub event");
        let topic = if event.stream_id.family() == Family::Study {
            config.topic(Topic::Study)
        } else {
            config.topic(Topic::Share)
        };
        assert_eq!(m.topic(), topic, "one topic per family");
        assert_eq!(
            m.key(),
            Some(event.stream_id.as_str().as_bytes()),
            "keyed by stream id"
        );
        let headers = m.headers().expect("headers");
        let header = |k: &str| {
            headers
                .iter()
                .find(|h| h.key == k)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("event-id"), Some(event.event_id.to_string()));
        assert_eq!(header("event-type"), Some(event.event_type.clone()));
        assert_eq!(
            header("schema-version"),
            Some(event.schema_version.to_string())
        );
        assert_eq!(header("position"), Some(event.position.to_string()));
        seen.entry(event.stream_id.to_string())
            .or_default()
            .push(event.stream_version);
        total += 1;
    }
    // Every aggregate's events arrived in stream order (one key, one partition).
    for (stream, versions) in &seen {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{stream}: {versions:?}"
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 82);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_delivers_the_log_in_global_order_from_kafka_to_a_process_that_did_not_append_it()
{
    let broker = broker();
    let config = config(&broker);
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = store(&dir).await;
    fill(&writer, 5, 2).await; // 15 events before the feed starts
    // Another process's view of the same log: its bus hears only the feed.
    let reader_store = store(&dir).await;
    let registry = Registry::new();
    let metrics = FeedMetrics::new(&registry).expect("metrics");
    let feed = KafkaFeed::start(&config, reader_store.clone(), metrics.clone(), "test-feed")
        .await
        .expect("feed");
    let (stop, stopped) = watch::channel(false);
    let feeding = tokio::spawn(feed.run(stopped.clone()));
    let mut subscription = Subscription::new(reader_store.clone(), 0);
    let relay = Relay::new(
        writer.clone(),
        config.clone(),
        "main",
        RelayMetrics::new(&Registry::new()).expect("metrics"),
    )
    .expect("relay");
    let relaying = {
        let (status, _) = watch::channel(Ok(()));
        let stopped = stopped.clone();
        tokio::spawn(async move { relay.run(status, stopped).await })
    };
    fill(&writer, 100, 2).await; // 300 more, while the relay runs
    let mut positions = Vec::new();
    while positions.len() < 315 {
        let batch = tokio::time::timeout(Duration::from_secs(30), subscription.next_batch(100))
            .await
            .expect("every event arrives")
            .expect("batch");
        positions.extend(batch.iter().map(|e| e.position));
    }
    assert_eq!(
        positions,
        (1..=315).collect::<Vec<u64>>(),
        "exactly once, in order"
    );
    // The 300 events appended after the feed started all reached it through Kafka (the
    // subscription may have read them from the shared file first; the feed does not know).
    let pushed = || metrics.events.with_label_values(&["pushed"]).get();
    for _ in 0..300 {
        if pushed() >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pushed(),
        300,
        "gaps handed to the store: {}",
        metrics.gaps.get()
    );
    let _ = stop.send(true);
    let _ = feeding.await;
    let _ = relaying.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_dead_letters_what_keeps_failing_or_cannot_be_decoded_and_goes_on() {
    let broker = broker();
    let config = config(&broker);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir).await;
    config.ensure_topics().await.expect("topics");
    fill(&store, 6, 1).await; // 12 events: 6 study, 6 share
    let relay = Relay::new(
        store.clone(),
        config.clone(),
        "main",
        RelayMetrics::new(&Registry::new()).expect("metrics"),
    )
    .expect("relay");
    publish_all(&relay).await;
    // Garbage on the study topic, as a foreign producer might write.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&config.topic(Topic::Study))
                .key("study-x")
                .payload("not json"),
            Duration::from_secs(5),
        )
        .await
        .expect("garbage sent");

    let group = GroupConsumer::join(
        &config,
        "test-group",
        &[Topic::Study],
        GroupMetrics::new(&Registry::new()).expect("metrics"),
    )
    .await
    .expect("join")
    .with_retries(2, Duration::from_millis(10));
    let handled = Arc::new(AtomicUsize::new(0));
    let attempts_on_poison = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let running = {
        let (handled, poison) = (handled.clone(), attempts_on_poison.clone());
        tokio::spawn(async move {
            group
                .run(
                    move |event| {
                        let (handled, poison) = (handled.clone(), poison.clone());
                        async move {
                            if event.stream_id.as_str() == "study-1.2.3.2" {
                                poison.fetch_add(1, Ordering::SeqCst);
                                return Err("the model service refused it".to_string());
                            }
                            handled.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        }
                    },
                    stopped,
                )
                .await
        })
    };
    let dead = reader(&config);
    dead.subscribe(&[&config.dead_letter_topic()])
        .expect("subscribe");
    let mut letters = Vec::new();
    while letters.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(60), dead.recv())
            .await
            .expect("two dead letters within 60 s")
            .expect("message");
        let body: serde_json::Value =
            serde_json::from_slice(m.payload().expect("value")).expect("json letter");
        letters.push(body);
    }
    let poison = letters
        .iter()
        .find(|l| l["position"].is_u64())
        .expect("the failing event's letter");
    assert!(
        poison["reason"]
            .as_str()
            .unwrap_or("")
            .contains("the model service refused it"),
        "{poison}"
    );
    assert!(
        poison["reason"]
            .as_str()
            .unwrap_or("")
            .contains("failed 3 times"),
        "{poison}"
    );
    let garbage = letters
        .iter()
        .find(|l| l["position"].is_null())
        .expect("the garbage letter");
    assert!(
        garbage["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not a hub event"),
        "{garbage}"
    );
    assert_eq!(garbage["source"]["topic"], config.topic(Topic::Study));
    // The other five studies were handled: the poison did not block its partition.
    for _ in 0..100 {
        if handled.load(Ordering::SeqCst) >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handled.load(Ordering::SeqCst), 5);
    assert_eq!(
        attempts_on_poison.load(Ordering::SeqCst),
        3,
        "1 try + 2 retries"
    );
    let _ = stop.send(true);
    let _ = running.await;
}
