//! `hub bench ingest`: ingest and query figures of the hub, next to a throwaway Orthanc started
//! on the same machine in the same run (only ratios measured in one run mean anything).
//!
//! 1. STOW-RS of synthetic 512×512 16-bit CT instances, in equal requests, into `hub serve` and
//!    into Orthanc's DICOMweb plugin;
//! 2. DIMSE C-STORE of as many fresh instances with dcmtk's `dcmsend` into both;
//! 3. QIDO-RS latencies over a catalog of generated studies;
//! 4. the hub's peak RSS while it ingests one big study in ONE chunked STOW-RS request.
//!
//! The hub runs as its own process (`hub serve`, this very binary), like Orthanc does. Every
//! spawned process is stopped and every temporary directory removed when the bench ends, fails or
//! is interrupted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use hub_events::catalog::{IngestSource, SeriesInstances, StoredInstance, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, SqliteEventStore, SqliteSync, StoreMetrics,
    StreamId,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use crate::bench::percentile;

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
const ROWS: usize = 512;
const COLUMNS: usize = 512;
const PIXEL_BYTES: usize = ROWS * COLUMNS * 2;
/// The institution of the development identity `hub serve` acts as (its default).
const INSTITUTION: &str = "dev-hospital";
const MIB: f64 = 1024.0 * 1024.0;
const STUDY_CATALOG: &str = "study_catalog";

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Synthetic CT instances (512×512, 16-bit) sent over STOW-RS, and as many fresh ones over
    /// DIMSE, to each side
    #[arg(long, default_value_t = 500)]
    instances: usize,
    /// STOW-RS requests the instances are split into (sent one after the other)
    #[arg(long, default_value_t = 10)]
    requests: usize,
    /// Series of the synthetic study
    #[arg(long, default_value_t = 4)]
    series: usize,
    /// Rounds of the STOW-RS and DIMSE parts, hub and Orthanc alternating in each (a fresh study
    /// per round); the summary quotes the round with the median ratio
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Studies in the catalog QIDO-RS is timed on (0 skips the QIDO-RS part)
    #[arg(long, default_value_t = 100_000)]
    studies: usize,
    /// QIDO-RS queries timed (after 50 untimed warm-up queries)
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Size in MiB of the study sent in one STOW-RS request for the peak RSS (0 skips it)
    #[arg(long, default_value_t = 1024)]
    big_study_mb: u64,
    /// Measure the hub alone, without Orthanc
    #[arg(long)]
    skip_orthanc: bool,
    /// Skip the DIMSE (dcmsend) part
    #[arg(long)]
    skip_dimse: bool,
    /// The Orthanc binary
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/Orthanc")]
    orthanc: PathBuf,
    /// Orthanc's DICOMweb plugin (default: found with `dpkg -L orthanc-dicomweb`)
    #[arg(long, value_name = "PATH", env = "ORTHANC_DICOMWEB_PLUGIN")]
    dicomweb_plugin: Option<PathBuf>,
    /// dcmtk's dcmsend
    #[arg(long, value_name = "PATH", default_value = "dcmsend")]
    dcmsend: PathBuf,
    /// Directory under which the temporary data directories go (default: the system's)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Runs the bench; Ctrl-C stops it with every spawned process stopped and every temporary
/// directory removed (the guards are dropped with the bench's future).
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    tokio::select! {
        outcome = run(args) => outcome,
        _ = tokio::signal::ctrl_c() => {
            bail!("interrupted: spawned processes stopped, temporary directories removed")
        }
    }
}

// ---- Figures and the final table --------------------------------------------------------------

/// One round of a throughput part: the hub's figure and Orthanc's, measured one after the other.
type Round = (Throughput, Option<Throughput>);

#[derive(Default)]
struct Figures {
    stow: Vec<Round>,
    dimse: Vec<Round>,
    qido: Option<(usize, Duration, Duration)>,
    rss: Option<(u64, f64)>,
}

#[derive(Clone, Copy)]
struct Throughput {
    instances: usize,
    bytes: u64,
    elapsed: Duration,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        self.instances as f64 / self.elapsed.as_secs_f64()
    }
    fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / MIB / self.elapsed.as_secs_f64()
    }
    fn show(&self) -> String {
        format!(
            "{:>8.1} instances/s {:>8.1} MiB/s  ({} instances, {:.1} MiB in {:.2} s)",
            self.per_sec(),
            self.mib_per_sec(),
            self.instances,
            self.bytes as f64 / MIB,
            self.elapsed.as_secs_f64()
        )
    }
}

fn verdict(met: bool, full_size: bool) -> &'static str {
    match (met, full_size) {
        (true, true) => "MET",
        (false, true) => "MISSED",
        (true, false) => "met (not at target size)",
        (false, false) => "missed (not at target size)",
    }
}

/// The round whose hub/Orthanc ratio is the median (the upper one of an even count), or whose
/// hub figure is, where Orthanc was not measured.
fn median_round(rounds: &[Round]) -> Option<Round> {
    let key = |(h, o): &Round| h.per_sec() / o.map_or(1.0, |o| o.per_sec());
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len() / 2).copied()
}

fn ratio_row(what: &str, rounds: &[Round], factor: f64, full_size: bool) {
    let target = format!(">= {factor}x Orthanc");
    let (hub, orthanc) = match median_round(rounds) {
        Some((h, o)) => (Some(h), o),
        None => (None, None),
    };
    match (hub, orthanc) {
        (Some(h), Some(o)) => {
            let ratio = h.per_sec() / o.per_sec();
            println!(
                "{what:<34} {:>11.1}/s {:>11.1}/s {:>8.2}x  {target:<22} {}",
                h.per_sec(),
                o.per_sec(),
                ratio,
                verdict(ratio >= factor, full_size)
            );
            if rounds.len() > 1 {
                let mut ratios: Vec<f64> = rounds
                    .iter()
                    .filter_map(|(h, o)| o.map(|o| h.per_sec() / o.per_sec()))
                    .collect();
                ratios.sort_by(f64::total_cmp);
                let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
                println!(
                    "{:<34} median of {} rounds; all: {}",
                    "",
                    rounds.len(),
                    shown.join(" ")
                );
            }
        }
        (Some(h), None) => println!(
            "{what:<34} {:>11.1}/s {:>13} {:>9}  {target:<22} not measured (no Orthanc)",
            h.per_sec(),
            "-",
            "-"
        ),
        _ => println!(
            "{what:<34} {:>13} {:>13} {:>9}  {target:<22} skipped",
            "-", "-", "-"
        ),
    }
}

fn print_table(args: &IngestArgs, f: &Figures) {
    let full = |n: usize, target: usize| n == target;
    println!();
    println!("== summary (targets from the issue) ==");
    println!(
        "{:<34} {:>13} {:>13} {:>9}  {:<22} verdict",
        "figure", "hub", "Orthanc", "ratio", "target"
    );
    ratio_row(
        &format!(
            "STOW-RS instances/s ({}x{})",
            args.requests,
            args.instances / args.requests.max(1)
        ),
        &f.stow,
        3.0,
        full(args.instances, 500),
    );
    ratio_row(
        &format!("DIMSE dcmsend instances/s ({})", args.instances),
        &f.dimse,
        10.0,
        full(args.instances, 500),
    );
    match f.qido {
        Some((studies, p50, p99)) => {
            let ms = p99.as_secs_f64() * 1e3;
            println!(
                "{:<34} {:>10.2} ms {:>13} {:>9}  {:<22} {}",
                format!("QIDO-RS p99 ({studies} studies)"),
                ms,
                "-",
                "-",
                "< 10 ms at 100000",
                verdict(ms < 10.0, full(studies, 100_000))
            );
            println!("{:<34} {:>10.2} ms", "QIDO-RS p50", p50.as_secs_f64() * 1e3);
        }
        None => println!(
            "{:<34} {:>13} {:>13} {:>9}  {:<22} skipped",
            "QIDO-RS p99", "-", "-", "-", "< 10 ms at 100000"
        ),
    }
    match f.rss {
        Some((kib, study_mib)) => {
            let mib = kib as f64 / 1024.0;
            println!(
                "{:<34} {:>9.1} MiB {:>13} {:>9}  {:<22} {}",
                format!("peak RSS, {study_mib:.0} MiB study/1 STOW"),
                mib,
                "-",
                "-",
                "< 256 MB, 1 GB study",
                verdict(mib < 256.0, study_mib >= 1024.0)
            );
        }
        None => println!(
            "{:<34} {:>13} {:>13} {:>9}  {:<22} skipped",
            "peak RSS (VmHWM)", "-", "-", "-", "< 256 MB, 1 GB study"
        ),
    }
}

// ---- The run ----------------------------------------------------------------------------------

async fn run(args: IngestArgs) -> anyhow::Result<()> {
    ensure!(args.instances > 0, "--instances must be at least 1");
    ensure!(
        (1..=args.instances).contains(&args.requests),
        "--requests must be 1 to --instances"
    );
    ensure!(args.series > 0, "--series must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let root = match &args.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("hub-bench-ingest-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("hub-bench-ingest-")
            .tempdir()?,
    };
    let hub_exe = std::env::current_exe().context("cannot find this hub binary")?;
    println!(
        "hub bench ingest: {} cores; temporary files in {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        root.path().display()
    );
    println!(
        "durability  hub:     every blob fsynced (file and directory) before its event; event log \
         SQLite WAL synchronous=FULL (fsync per commit)"
    );
    if !args.skip_orthanc {
        println!(
            "durability  Orthanc: SyncStorageArea=true (every file fsynced; its default); SQLite \
             index WAL synchronous=NORMAL (commits not fsynced, fsync at checkpoints; its default); \
             StorageCompression=false"
        );
    }
    let mut figures = Figures::default();

    // Parts 1 and 2: one hub and one Orthanc, both idle while the other works.
    {
        let hub = Hub::start(&hub_exe, &root.path().join("hub-ingest"), "ingest").await?;
        let orthanc = if args.skip_orthanc {
            None
        } else {
            let plugin = match &args.dicomweb_plugin {
                Some(p) => p.clone(),
                None => find_dicomweb_plugin()?,
            };
            Some(Orthanc::start(&args.orthanc, &plugin, &root.path().join("orthanc")).await?)
        };
        for round in 1..=args.rounds {
            if args.rounds > 1 {
                println!("\n== round {round} of {}", args.rounds);
            }
            figures
                .stow
                .push(stow_part(&args, &hub, orthanc.as_ref()).await?);
            if args.skip_dimse {
                println!("\n-- 2. DIMSE: skipped (--skip-dimse)");
            } else {
                figures
                    .dimse
                    .push(dimse_part(&args, &hub, orthanc.as_ref(), root.path()).await?);
            }
        }
        hub.process.check_alive()?;
        if let Some(o) = &orthanc {
            o.process.check_alive()?;
        }
    }

    if args.studies > 0 {
        figures.qido = Some(qido_part(&args, &hub_exe, &root.path().join("hub-qido")).await?);
    } else {
        println!("\n-- 3. QIDO-RS: skipped (--studies 0)");
    }

    if args.big_study_mb > 0 {
        figures.rss = Some(rss_part(&args, &hub_exe, &root.path().join("hub-big")).await?);
    } else {
        println!("\n-- 4. peak RSS: skipped (--big-study-mb 0)");
    }

    print_table(&args, &figures);
    Ok(())
}

// ---- 1. STOW-RS -------------------------------------------------------------------------------

async fn stow_part(
    args: &IngestArgs,
    hub: &Hub,
    orthanc: Option<&Orthanc>,
) -> anyhow::Result<Round> {
    println!(
        "\n-- 1. STOW-RS: {} instances in {} requests, one after the other (one TCP connection \
         each, Content-Length body)",
        args.instances, args.requests
    );
    let study = SynthStudy::new("STOW", args.series);
    let instances = generate(study.clone(), args.instances).await?;
    let bytes: u64 = instances.iter().map(|i| i.len() as u64).sum();
    println!(
        "generated {} instances, {:.1} MiB ({} bytes each), study {}",
        instances.len(),
        bytes as f64 / MIB,
        instances[0].len(),
        study.study_uid
    );
    let per_request = args.instances.div_ceil(args.requests);

    let pids = servers(hub, orthanc);
    quiesce(&pids).await;
    let hub_figure = stow_all(hub.http, "/dicom-web/studies", &instances, per_request).await?;
    println!("hub      STOW-RS {}", hub_figure.show());
    let count = hub
        .wait_for_instances(&study.study_uid, instances.len() as u64)
        .await?;
    println!("hub      holds {count} instances of the study (QIDO-RS)");

    if let Some(orthanc) = orthanc {
        let before = orthanc.count_instances().await?;
        quiesce(&pids).await;
        let o = stow_all(orthanc.http, "/dicom-web/studies", &instances, per_request).await?;
        println!("Orthanc  STOW-RS {}", o.show());
        let after = orthanc.count_instances().await?;
        ensure!(
            after - before == instances.len() as u64,
            "Orthanc counts {} new instances after STOW-RS, expected {}",
            after - before,
            instances.len()
        );
        println!(
            "Orthanc  holds {} more instances (/statistics)",
            after - before
        );
        println!(
            "ratio    hub/Orthanc {:.2}x instances/s",
            hub_figure.per_sec() / o.per_sec()
        );
        return Ok((hub_figure, Some(o)));
    }
    Ok((hub_figure, None))
}

async fn stow_all(
    addr: SocketAddr,
    path: &str,
    instances: &[Vec<u8>],
    per_request: usize,
) -> anyhow::Result<Throughput> {
    let started = Instant::now();
    let (mut body_phase, mut answer_phase, mut requests) = (Duration::ZERO, Duration::ZERO, 0);
    for (n, batch) in instances.chunks(per_request).enumerate() {
        let parts: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let t = Instant::now();
        let (response, body_sent) = stow_request(addr, path, &parts, None).await?;
        body_phase += body_sent;
        answer_phase += t.elapsed() - body_sent;
        requests += 1;
        if response.status != 200 {
            bail!(
                "STOW-RS request {} of {} instances to {addr} answered {}: {}",
                n + 1,
                batch.len(),
                response.status,
                response.body_text(2000)
            );
        }
    }
    let elapsed = started.elapsed();
    println!(
        "         per request: body taken in {:.0} ms, answer {:.0} ms after the body's end (means)",
        body_phase.as_secs_f64() * 1e3 / requests as f64,
        answer_phase.as_secs_f64() * 1e3 / requests as f64
    );
    Ok(Throughput {
        instances: instances.len(),
        bytes: instances.iter().map(|i| i.len() as u64).sum(),
        elapsed,
    })
}

// ---- 2. DIMSE ---------------------------------------------------------------------------------

async fn dimse_part(
    args: &IngestArgs,
    hub: &Hub,
    orthanc: Option<&Orthanc>,
    root: &Path,
) -> anyhow::Result<Round> {
    println!(
        "\n-- 2. DIMSE C-STORE: {} fresh instances, one `dcmsend +sd` invocation per side (its \
         defaults: one association, max PDU 16384)",
        args.instances
    );
    let dir = root.join("dimse-files");
    std::fs::create_dir_all(&dir)?;
    let study = SynthStudy::new("DIMSE", args.series);
    let (n, bytes) = {
        let (study, dir, count) = (study.clone(), dir.clone(), args.instances);
        tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, u64)> {
            let mut bytes = 0;
            for i in 0..count {
                let data = study.instance(i)?;
                bytes += data.len() as u64;
                std::fs::write(dir.join(format!("{i:06}.dcm")), data)?;
            }
            Ok((count, bytes))
        })
        .await??
    };
    // Written files out of the page cache's dirty list, so their writeback is not measured.
    let _ = Command::new("sync").status();
    println!(
        "wrote {n} files, {:.1} MiB, study {}",
        bytes as f64 / MIB,
        study.study_uid
    );

    let pids = servers(hub, orthanc);
    quiesce(&pids).await;
    let elapsed = dcmsend(&args.dcmsend, "HUB", hub.dimse.port(), &dir).await?;
    let hub_figure = Throughput {
        instances: n,
        bytes,
        elapsed,
    };
    println!("hub      dcmsend {}", hub_figure.show());
    let count = hub.wait_for_instances(&study.study_uid, n as u64).await?;
    println!("hub      holds {count} instances of the study (QIDO-RS)");

    if let Some(orthanc) = orthanc {
        let before = orthanc.count_instances().await?;
        quiesce(&pids).await;
        let elapsed = dcmsend(&args.dcmsend, "ORTHANC", orthanc.dicom_port, &dir).await?;
        let o = Throughput {
            instances: n,
            bytes,
            elapsed,
        };
        println!("Orthanc  dcmsend {}", o.show());
        let after = orthanc.count_instances().await?;
        ensure!(
            after - before == n as u64,
            "Orthanc counts {} new instances after dcmsend, expected {n}",
            after - before
        );
        println!(
            "Orthanc  holds {} more instances (/statistics)",
            after - before
        );
        println!(
            "ratio    hub/Orthanc {:.2}x instances/s",
            hub_figure.per_sec() / o.per_sec()
        );
        let _ = std::fs::remove_dir_all(&dir);
        return Ok((hub_figure, Some(o)));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((hub_figure, None))
}

/// Sends every file of `dir` with one dcmsend run; its wall time (process start to exit).
async fn dcmsend(bin: &Path, called_ae: &str, port: u16, dir: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = tokio::process::Command::new(bin)
        .args(["-aet", "HUBBENCH", "-aec", called_ae, "127.0.0.1"])
        .arg(port.to_string())
        .arg(dir)
        .arg("--scan-directories")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {} (dcmtk)", bin.display()))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!(
            "dcmsend to {called_ae} on port {port} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

// ---- 3. QIDO-RS -------------------------------------------------------------------------------

pub(crate) const MODALITIES: [&str; 8] = ["CT", "MR", "CR", "DX", "US", "MG", "PT", "NM"];
const QIDO_KINDS: [&str; 4] = [
    "PatientID exact",
    "StudyDate 7-day range",
    "ModalitiesInStudy",
    "no filter, limit=100&offset",
];
const WARM_UP: usize = 50;

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn patients(studies: usize) -> usize {
    (studies * 2 / 5).max(1)
}

pub(crate) const DAYS: u64 = 3653;

pub(crate) fn day(n: u64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(2016, 1, 1).expect("a valid date");
    (base + chrono::Days::new(n)).format("%Y%m%d").to_string()
}

fn catalog_events(i: usize, studies: usize) -> (StreamId, Vec<hub_events::NewEvent>) {
    let h = splitmix(i as u64);
    let study = format!("1.2.826.0.1.3680043.10.1437.9.{i}");
    let meta = EventMetadata::new(INSTITUTION, "service:bench");
    let series = format!("{study}.1");
    let events = [
        StudyEvent::StudyRegistered {
            study_uid: study.clone(),
            owner: INSTITUTION.into(),
            patient_id: Some(format!("PID{:07}", i % patients(studies))),
            patient_name: Some(format!("BENCH^PATIENT{}", i % patients(studies))),
            patient_birth_date: Some(day(h % DAYS).replacen("201", "195", 1)),
            patient_sex: Some(if h & 1 == 0 { "F" } else { "M" }.into()),
            study_date: Some(day((h >> 8) % DAYS)),
            study_time: Some(format!("{:02}{:02}00", (h >> 20) % 24, (h >> 28) % 60)),
            accession_number: Some(format!("ACC{i:08}")),
            study_description: Some("BENCH STUDY".into()),
            referring_physician: Some("REFERRER^BENCH".into()),
        },
        StudyEvent::InstancesStored {
            study_uid: study.clone(),
            source: IngestSource::StowRs {
                request_id: format!("bench-{i}"),
            },
            series: vec![SeriesInstances {
                series_uid: series.clone(),
                modality: Some(MODALITIES[((h >> 40) % 8) as usize].into()),
                series_number: Some(1),
                series_description: Some("BENCH SERIES".into()),
                instances: vec![StoredInstance {
                    sop_instance_uid: format!("{series}.1"),
                    sop_class_uid: CT_IMAGE_STORAGE.into(),
                    transfer_syntax_uid: EXPLICIT_VR_LITTLE_ENDIAN.into(),
                    instance_number: Some(1),
                    blob_key: format!("studies/{study}/{series}/{series}.1.dcm"),
                    size_bytes: 526_000,
                    sha256: "ab".repeat(32),
                }],
            }],
        },
        // As a hub that ran before would have written after the quiet period: without it, the
        // stabilizer would append one event per study while the queries are timed.
        StudyEvent::StudyStabilized {
            study_uid: study.clone(),
            series_count: 1,
            instance_count: 1,
            modalities: vec![MODALITIES[((h >> 40) % 8) as usize].into()],
        },
    ];
    (
        StreamId::new(Family::Study, &study),
        events
            .iter()
            .map(|e| e.to_new_event(meta.clone()))
            .collect(),
    )
}

/// Writes the studies' events into the log of `data`, as earlier runs of the hub would have.
async fn write_catalog_history(data: &Path, studies: usize) -> anyhow::Result<u64> {
    std::fs::create_dir_all(data)?;
    // Not timed, and not what is measured: NORMAL makes writing the history quicker.
    let store = Arc::new(
        SqliteEventStore::open(
            &data.join("events.sqlite"),
            SqliteSync::Normal,
            StoreMetrics::unregistered(),
        )
        .await?,
    );
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..studies).step_by(writers) {
                let (stream, events) = catalog_events(i, studies);
                store
                    .append(&stream, ExpectedVersion::NoStream, events)
                    .await?;
            }
            Ok::<_, hub_events::StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let head = store.head().await?;
    // The WAL only starts over from its beginning after a checkpoint copied every frame in a
    // pause between appends, which four busy writers never leave: it ends at 3 GB. A hub that
    // wrote this history over days would have copied it into the database long ago.
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(store.reader_pool())
        .await?;
    ensure!(
        busy == 0,
        "the history's WAL could not be copied into its database"
    );
    drop(store);
    Ok(head)
}

pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn qido_query(kind: usize, r: u64, studies: usize) -> String {
    match kind {
        0 => format!("PatientID=PID{:07}", r % patients(studies) as u64),
        1 => {
            let from = r % (DAYS - 7);
            format!("StudyDate={}-{}", day(from), day(from + 6))
        }
        2 => format!("ModalitiesInStudy={}", MODALITIES[(r % 8) as usize]),
        _ => format!(
            "limit=100&offset={}",
            r % (studies.saturating_sub(100).max(1) as u64)
        ),
    }
}

async fn qido_part(
    args: &IngestArgs,
    hub_exe: &Path,
    data: &Path,
) -> anyhow::Result<(usize, Duration, Duration)> {
    println!(
        "\n-- 3. QIDO-RS latency over {} studies of {INSTITUTION}",
        args.studies
    );
    let started = Instant::now();
    let head = write_catalog_history(data, args.studies).await?;
    println!(
        "wrote {} events ({} studies: StudyRegistered + InstancesStored + StudyStabilized) into \
         a fresh log in {:.1} s (not timed)",
        head,
        args.studies,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let hub = Hub::start(hub_exe, data, "qido").await?;
    let name_lag = format!("hub_projection_lag_events{{projection=\"{STUDY_CATALOG}\"}}");
    let name_pos = format!("hub_projection_position{{projection=\"{STUDY_CATALOG}\"}}");
    let index_pos = "hub_projection_position{projection=\"access_index\"}";
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut last_report = Instant::now();
    loop {
        hub.process.check_alive()?;
        let health = http_get(hub.http, "/healthz").await?;
        ensure!(
            health.status == 200,
            "GET /healthz answered {}",
            health.status
        );
        let health: serde_json::Value = serde_json::from_slice(&health.body)?;
        let now_head = health["head_position"].as_u64();
        let r = http_get(hub.http, "/metrics").await?;
        ensure!(r.status == 200, "GET /metrics answered {}", r.status);
        let text = r.body_text(usize::MAX);
        let (lag, position) = (metric(&text, &name_lag), metric(&text, &name_pos));
        // Searches also join the access index: its tables must exist and be current too.
        let index_at_head = metric(&text, index_pos) == now_head.map(|h| h as f64);
        if lag == Some(0.0)
            && position.is_some()
            && position == now_head.map(|h| h as f64)
            && index_at_head
        {
            ensure!(
                now_head == Some(head),
                "the hub appended {} events of its own to the history at start",
                now_head.unwrap_or(0).saturating_sub(head)
            );
            break;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            println!(
                "   catalog catching up: position {:?}, head {:?}, after {:.0} s",
                position,
                now_head,
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        ensure!(
            Instant::now() < deadline,
            "the study catalog did not catch up within an hour (position {position:?} of {head})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "hub started and its study catalog caught up with {head} events in {:.1} s \
         (lag 0, position = head)",
        started.elapsed().as_secs_f64()
    );

    let mut by_kind: Vec<Vec<Duration>> = vec![Vec::new(); QIDO_KINDS.len()];
    let mut totals: Vec<u64> = vec![0; QIDO_KINDS.len()];
    let mut all = Vec::with_capacity(args.queries);
    for q in 0..WARM_UP + args.queries {
        let kind = q % QIDO_KINDS.len();
        let r = splitmix(0xC0FFEE + q as u64);
        let path = format!("/dicom-web/studies?{}", qido_query(kind, r, args.studies));
        let t = Instant::now();
        let response = http_get(hub.http, &path).await?;
        let elapsed = t.elapsed();
        if response.status != 200 {
            bail!(
                "QIDO-RS {path} answered {}: {}",
                response.status,
                response.body_text(1000)
            );
        }
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("QIDO-RS {path} did not answer JSON"))?;
        let found = body.as_array().map_or(0, Vec::len);
        if kind == 0 && found == 0 {
            bail!("QIDO-RS {path} found no study: the catalog is not what was written");
        }
        if q >= WARM_UP {
            all.push(elapsed);
            by_kind[kind].push(elapsed);
            totals[kind] += response
                .header("x-total-count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(found as u64);
        }
    }
    all.sort();
    println!(
        "{} queries timed after {WARM_UP} warm-up ones, one at a time, each on a new connection \
         (connect + request + whole response):",
        all.len()
    );
    for (kind, lat) in by_kind.iter_mut().enumerate() {
        lat.sort();
        if lat.is_empty() {
            continue;
        }
        println!(
            "   {:<30} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  (mean matches {:.0})",
            QIDO_KINDS[kind],
            percentile(lat, 0.5).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3,
            lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            totals[kind] as f64 / lat.len() as f64
        );
    }
    let (p50, p99) = (percentile(&all, 0.5), percentile(&all, 0.99));
    println!(
        "   {:<30} p50 {:>8.2} ms  p99 {:>8.2} ms",
        "all",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    hub.process.check_alive()?;
    Ok((args.studies, p50, p99))
}

// ---- 4. Peak RSS ------------------------------------------------------------------------------

/// The processes of the two servers being compared.
fn servers(hub: &Hub, orthanc: Option<&Orthanc>) -> Vec<u32> {
    std::iter::once(hub.process.pid)
        .chain(orthanc.map(|o| o.process.pid))
        .collect()
}

/// CPU time (user + system, in clock ticks) a process has used so far, from `/proc`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // first of them is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Waits until each of `pids` is idle (at most one clock tick of CPU in each of two 250 ms
/// intervals in a row; 60 s at most), so neither side's deferred work (Orthanc's DICOMweb
/// plugin caching metadata after a STOW-RS, the hub's projections) runs while the other one is
/// timed.
async fn quiesce(pids: &[u32]) {
    let started = Instant::now();
    // What either side wrote and left to the kernel (the bench's own generated files, a
    // server's unsynced writes) is written back now, not inside the next side's timing.
    let dirty = dirty_kib();
    let synced = tokio::task::spawn_blocking(|| Command::new("sync").status()).await;
    if !matches!(synced, Ok(Ok(s)) if s.success()) {
        println!("         (sync failed: {synced:?})");
    }
    let mut before: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let mut quiet = 0;
    while quiet < 2 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let busy = now
            .iter()
            .zip(&before)
            .any(|(n, b)| n.zip(*b).is_some_and(|(n, b)| n > b + 1));
        quiet = if busy { 0 } else { quiet + 1 };
        before = now;
    }
    println!(
        "         (servers idle after {:.1} s; {:.1} MiB of dirty pages written back first)",
        started.elapsed().as_secs_f64(),
        dirty as f64 / 1024.0
    );
}

/// Dirty and under-writeback page cache of the machine, in KiB (`/proc/meminfo`).
fn dirty_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Dirty:") || l.starts_with("Writeback:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn rss_part(args: &IngestArgs, hub_exe: &Path, data: &Path) -> anyhow::Result<(u64, f64)> {
    let study = SynthStudy::new("BIG", args.series);
    let one = study.instance(0)?.len() as u64;
    let count = (args.big_study_mb * 1024 * 1024).div_ceil(one) as usize;
    println!(
        "\n-- 4. peak RSS of a fresh `hub serve` ingesting one {} MiB study ({count} instances) in \
         ONE STOW-RS request (chunked, generated while sent)",
        args.big_study_mb
    );
    let hub = Hub::start(hub_exe, data, "big").await?;
    let pid = hub.process.pid;
    let idle_rss = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let idle_hwm = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    println!(
        "hub pid {pid} before the request: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        idle_rss as f64 / 1024.0,
        idle_hwm as f64 / 1024.0
    );

    let max_rss = Arc::new(AtomicU64::new(idle_rss));
    let sampler = {
        let max_rss = max_rss.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = proc_status_kib(pid, "VmRSS") {
                    max_rss.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let boundary = format!("hub-bench-{}", uuid::Uuid::new_v4().simple());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Vec<u8>>>(4);
    {
        let (study, boundary) = (study.clone(), boundary.clone());
        std::thread::spawn(move || {
            for i in 0..count {
                let part = study.instance(i).map(|data| {
                    let mut part = Vec::with_capacity(data.len() + 128);
                    part.extend_from_slice(
                        format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n")
                            .as_bytes(),
                    );
                    part.extend_from_slice(&data);
                    part.extend_from_slice(b"\r\n");
                    part
                });
                if tx.blocking_send(part).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(Ok(format!("--{boundary}--\r\n").into_bytes()));
        });
    }
    let started = Instant::now();
    let stream = TcpStream::connect(hub.http).await?;
    stream.set_nodelay(true)?;
    let mut w = BufWriter::with_capacity(1 << 20, stream);
    let mut sent = 0u64;
    let send = async {
        w.write_all(
            format!(
                "POST /dicom-web/studies HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/related; \
                 type=\"application/dicom\"; boundary={boundary}\r\nAccept: \
                 application/dicom+json\r\nTransfer-Encoding: chunked\r\nConnection: \
                 close\r\n\r\n",
                hub.http
            )
            .as_bytes(),
        )
        .await?;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk?;
            sent += chunk.len() as u64;
            w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            w.write_all(&chunk).await?;
            w.write_all(b"\r\n").await?;
        }
        w.write_all(b"0\r\n\r\n").await?;
        w.flush().await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let response = read_response(w.get_mut(), Duration::from_secs(3600)).await;
    let elapsed = started.elapsed();
    sampler.abort();
    let response = match (send, response) {
        (_, Ok(r)) => r,
        (Err(e), Err(_)) => {
            hub.process.check_alive()?;
            return Err(e.context("sending the big STOW-RS request"));
        }
        (Ok(()), Err(e)) => {
            hub.process.check_alive()?;
            return Err(e.context("reading the answer to the big STOW-RS request"));
        }
    };
    if response.status != 200 {
        bail!(
            "the big STOW-RS request answered {}: {}",
            response.status,
            response.body_text(2000)
        );
    }
    let hwm = proc_status_kib(pid, "VmHWM").context("cannot read VmHWM of the hub")?;
    let rss_after = proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let figure = Throughput {
        instances: count,
        bytes: sent,
        elapsed,
    };
    println!("hub      STOW-RS {}", figure.show());
    let held = hub
        .wait_for_instances(&study.study_uid, count as u64)
        .await?;
    println!("hub      holds {held} instances of the study (QIDO-RS)");
    println!(
        "hub      VmHWM after the request {:.1} MiB ({:.1} MB); highest VmRSS sampled every 50 ms \
         {:.1} MiB; VmRSS now {:.1} MiB",
        hwm as f64 / 1024.0,
        hwm as f64 * 1024.0 / 1e6,
        max_rss.load(Ordering::Relaxed) as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    Ok((hwm, args.big_study_mb as f64))
}

// ---- Synthetic instances ----------------------------------------------------------------------

pub(crate) fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// One synthetic CT study: its UIDs and patient; instances are made on demand, each with a fresh
/// SOP Instance UID.
#[derive(Clone)]
pub(crate) struct SynthStudy {
    label: &'static str,
    pub(crate) study_uid: String,
    series_uids: Vec<String>,
    pub(crate) patient_id: String,
}

impl SynthStudy {
    pub(crate) fn new(label: &'static str, series: usize) -> SynthStudy {
        SynthStudy {
            label,
            study_uid: new_uid(),
            series_uids: (0..series).map(|_| new_uid()).collect(),
            patient_id: format!(
                "BENCH-{label}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }
    }

    /// Instance `index` as a Part 10 file (explicit VR little endian).
    pub(crate) fn instance(&self, index: usize) -> anyhow::Result<Vec<u8>> {
        let series = index % self.series_uids.len();
        let number = index / self.series_uids.len() + 1;
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag, vr, value: PrimitiveValue| {
            obj.put(DataElement::new(tag, vr, value));
        };
        let s = |v: &str| PrimitiveValue::from(v);
        put(tags::SPECIFIC_CHARACTER_SET, VR::CS, s("ISO_IR 100"));
        put(tags::IMAGE_TYPE, VR::CS, s("ORIGINAL\\PRIMARY\\AXIAL"));
        put(tags::SOP_CLASS_UID, VR::UI, s(CT_IMAGE_STORAGE));
        put(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(new_uid()),
        );
        put(tags::STUDY_DATE, VR::DA, s("20250601"));
        put(tags::STUDY_TIME, VR::TM, s("101500"));
        put(
            tags::ACCESSION_NUMBER,
            VR::SH,
            PrimitiveValue::from(format!("ACC-{}", self.label)),
        );
        put(tags::MODALITY, VR::CS, s("CT"));
        put(tags::MANUFACTURER, VR::LO, s("HUB BENCH"));
        put(tags::REFERRING_PHYSICIAN_NAME, VR::PN, s("REFERRER^BENCH"));
        put(tags::STUDY_DESCRIPTION, VR::LO, s("BENCH CT CHEST"));
        put(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from(format!("AXIAL {}", series + 1)),
        );
        put(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from(format!("BENCH^{}", self.label)),
        );
        put(
            tags::PATIENT_ID,
            VR::LO,
            PrimitiveValue::from(self.patient_id.clone()),
        );
        put(tags::PATIENT_BIRTH_DATE, VR::DA, s("19600101"));
        put(tags::PATIENT_SEX, VR::CS, s("O"));
        put(tags::SLICE_THICKNESS, VR::DS, s("1.25"));
        put(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(self.study_uid.clone()),
        );
        put(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(self.series_uids[series].clone()),
        );
        put(tags::STUDY_ID, VR::SH, s("1"));
        put(
            tags::SERIES_NUMBER,
            VR::IS,
            PrimitiveValue::from((series + 1).to_string()),
        );
        put(
            tags::INSTANCE_NUMBER,
            VR::IS,
            PrimitiveValue::from(number.to_string()),
        );
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16));
        put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s("MONOCHROME2"));
        put(tags::ROWS, VR::US, PrimitiveValue::from(ROWS as u16));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(COLUMNS as u16));
        put(tags::PIXEL_SPACING, VR::DS, s("0.7\\0.7"));
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16));
        put(tags::BITS_STORED, VR::US, PrimitiveValue::from(16_u16));
        put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15_u16));
        put(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        );
        put(tags::RESCALE_INTERCEPT, VR::DS, s("-1024"));
        put(tags::RESCALE_SLOPE, VR::DS, s("1"));
        put(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(pixels(index as u64 + 1)),
        );
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN)
                    .implementation_class_uid("1.2.826.0.1.3680043.10.1437.1")
                    .implementation_version_name("HUB-BENCH"),
            )
            .context("building the file meta group")?;
        let mut out = Vec::with_capacity(PIXEL_BYTES + 4096);
        file.write_all(&mut out)
            .context("encoding a synthetic instance")?;
        Ok(out)
    }
}

/// 512×512 unsigned 16-bit values: rings around the centre plus noise, different per `seed`.
fn pixels(seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; PIXEL_BYTES];
    let mut state = splitmix(seed) | 1;
    let cx = (seed * 37 % 128) as i64 + 192;
    for y in 0..ROWS {
        for x in 0..COLUMNS {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let (dx, dy) = (x as i64 - cx, y as i64 - 256);
            let ring = ((dx * dx + dy * dy) as u64 / 40 + seed * 13) % 3000;
            let v = ((ring + (state & 0x3F)) & 0x0FFF) as u16;
            let i = (y * COLUMNS + x) * 2;
            out[i..i + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

async fn generate(study: SynthStudy, count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    tokio::task::spawn_blocking(move || (0..count).map(|i| study.instance(i)).collect()).await?
}

// ---- Spawned processes ------------------------------------------------------------------------

pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A spawned server: SIGTERM, then SIGKILL after 10 s, when dropped.
pub(crate) struct Spawned {
    name: &'static str,
    child: std::sync::Mutex<Child>,
    pid: u32,
    log: PathBuf,
}

impl Spawned {
    pub(crate) fn spawn(
        name: &'static str,
        mut cmd: Command,
        log: PathBuf,
    ) -> anyhow::Result<Spawned> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Spawned {
            name,
            pid: child.id(),
            child: std::sync::Mutex::new(child),
            log,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails, with the end of its log, if the process has exited.
    pub(crate) fn check_alive(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "{} (pid {}) exited: {status}; last lines of {}:\n{}",
                self.name,
                self.pid,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `hub serve` on a data directory, on free ports. Its log goes next to the data directory.
pub(crate) struct Hub {
    pub(crate) process: Spawned,
    pub(crate) http: SocketAddr,
    dimse: SocketAddr,
}

impl Hub {
    async fn start(exe: &Path, data: &Path, tag: &str) -> anyhow::Result<Hub> {
        // Requests act as a hospital_admin of INSTITUTION: they still pass the policy decision
        // and append their audit events, as token-bearing requests do.
        Hub::start_with(exe, data, tag, &["--auth", "development"]).await
    }

    /// `hub serve` with `extra` arguments (such as the auth mode) after the fixed ones.
    pub(crate) async fn start_with(
        exe: &Path,
        data: &Path,
        tag: &str,
        extra: &[&str],
    ) -> anyhow::Result<Hub> {
        std::fs::create_dir_all(data)?;
        let (http, dimse) = (free_addr()?, free_addr()?);
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--http", &http.to_string(), "--dimse", &dimse.to_string()])
            // Every setting that matters to the figures, whatever the environment says.
            .args(["--sqlite-sync", "full", "--dimse-ae-title", "HUB"])
            .args(["--dimse-ae-map", "", "--dev-institution", INSTITUTION])
            .args(["--stow-max-bytes", "1099511627776", "--log", "warn"])
            .args(extra);
        let log = data.parent().unwrap_or(data).join(format!("hub-{tag}.log"));
        let hub = Hub {
            process: Spawned::spawn("hub serve", cmd, log)?,
            http,
            dimse,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            hub.process.check_alive()?;
            if let Ok(r) = http_get(http, "/healthz").await
                && r.status == 200
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "hub serve did not answer /healthz within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "started  hub serve (pid {}) http {http} dimse {dimse} (AE HUB)",
            hub.process.pid
        );
        Ok(hub)
    }

    /// Waits (up to 60 s) until QIDO-RS shows `expected` instances in the study.
    async fn wait_for_instances(&self, study_uid: &str, expected: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let path = format!("/dicom-web/studies?StudyInstanceUID={study_uid}");
            let r = http_get(self.http, &path).await?;
            ensure!(
                r.status == 200,
                "QIDO-RS {path} answered {}: {}",
                r.status,
                r.body_text(1000)
            );
            let body: serde_json::Value = serde_json::from_slice(&r.body)?;
            let count = body
                .get(0)
                .and_then(|s| s["00201208"]["Value"][0].as_u64())
                .unwrap_or(0);
            if count == expected {
                return Ok(count);
            }
            if Instant::now() > deadline {
                bail!("the hub holds {count} instances of study {study_uid}, expected {expected}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A throwaway Orthanc with its DICOMweb plugin, storage in `dir`, on free ports.
struct Orthanc {
    process: Spawned,
    http: SocketAddr,
    dicom_port: u16,
}

fn find_dicomweb_plugin() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(out) = Command::new("dpkg")
        .args(["-L", "orthanc-dicomweb"])
        .output()
    {
        candidates.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("OrthancDicomWeb.so"))
                .map(PathBuf::from),
        );
    }
    for dir in ["/usr/share/orthanc/plugins", "/usr/lib/orthanc"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            candidates.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains("libOrthancDicomWeb.so")),
            );
        }
    }
    candidates.into_iter().find(|p| p.is_file()).context(
        "Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb), or \
             name it with --dicomweb-plugin; --skip-orthanc measures the hub alone",
    )
}

impl Orthanc {
    async fn start(bin: &Path, plugin: &Path, dir: &Path) -> anyhow::Result<Orthanc> {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let http = free_addr()?;
        let dicom_port = free_addr()?.port();
        let config = serde_json::json!({
            "Name": "HUB-BENCH-ORTHANC",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": false,
            // Its default, stated: every stored file is fsynced.
            "SyncStorageArea": true,
            "HttpServerEnabled": true,
            "HttpPort": http.port(),
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomServerEnabled": true,
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowStore": true,
            "Plugins": [plugin],
            "DicomWeb": {"Enable": true, "Root": "/dicom-web/", "EnableWado": false},
            "HttpTimeout": 600,
        });
        let config_path = dir.join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let mut cmd = Command::new(bin);
        cmd.arg(&config_path);
        let orthanc = Orthanc {
            process: Spawned::spawn("Orthanc", cmd, dir.join("orthanc.log"))?,
            http,
            dicom_port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let version = loop {
            orthanc.process.check_alive()?;
            if let Ok(r) = http_get(http, "/system").await
                && r.status == 200
            {
                let system: serde_json::Value = serde_json::from_slice(&r.body)?;
                break system["Version"].as_str().unwrap_or("?").to_owned();
            }
            ensure!(
                Instant::now() < deadline,
                "Orthanc did not answer /system within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let plugins = http_get(http, "/plugins").await?;
        ensure!(
            plugins.body_text(usize::MAX).contains("dicom-web"),
            "Orthanc did not load its DICOMweb plugin {}: {}",
            plugin.display(),
            plugins.body_text(500)
        );
        println!(
            "started  Orthanc {version} (pid {}) http {http} (DICOMweb /dicom-web) dicom port \
             {dicom_port} (AE ORTHANC)",
            orthanc.process.pid
        );
        Ok(orthanc)
    }

    async fn count_instances(&self) -> anyhow::Result<u64> {
        let r = http_get(self.http, "/statistics").await?;
        ensure!(
            r.status == 200,
            "Orthanc's /statistics answered {}",
            r.status
        );
        let stats: serde_json::Value = serde_json::from_slice(&r.body)?;
        stats["CountInstances"]
            .as_u64()
            .context("Orthanc's /statistics has no CountInstances")
    }
}

// ---- A minimal HTTP/1.1 client ----------------------------------------------------------------

pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    head: String,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn body_text(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(max).collect()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A chunked body, if it is complete.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = find(raw, b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line + 2..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Reads one response: up to its Content-Length, the end of its chunks, or the connection's end.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut eof = false;
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("not an HTTP response: {head:?}"))?;
                let mut response = HttpResponse {
                    status,
                    head,
                    body: Vec::new(),
                };
                let rest = &buf[end + 4..];
                let chunked = response
                    .header("transfer-encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                let length: Option<usize> = response
                    .header("content-length")
                    .and_then(|v| v.parse().ok());
                if chunked {
                    if let Some(body) = dechunk(rest) {
                        response.body = body;
                        return Ok(response);
                    }
                } else if let Some(len) = length {
                    if rest.len() >= len {
                        response.body = rest[..len].to_vec();
                        return Ok(response);
                    }
                } else if eof {
                    response.body = rest.to_vec();
                    return Ok(response);
                }
            }
            if eof {
                bail!(
                    "the connection closed before a whole response arrived ({} bytes: {:?})",
                    buf.len(),
                    String::from_utf8_lossy(&buf[..buf.len().min(300)])
                );
            }
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                eof = true;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .context("no whole HTTP response in time")?
}

pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    http_get_as(addr, path, None).await
}

/// `GET {path}`, with `Authorization: Bearer {token}` when a token is given.
pub(crate) async fn http_get_as(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/dicom+json, \
             application/json, */*\r\n{authorization}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    read_response(&mut s, Duration::from_secs(120)).await
}

/// `POST {path}` of a JSON body as the bearer of `token`.
pub(crate) async fn http_post_json(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<HttpResponse> {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    read_response(&mut s, Duration::from_secs(60)).await
}

/// `POST {path}` of one STOW-RS request with a Content-Length body: the parts are written one
/// after the other, never copied into one buffer. Also how long the body took to go out.
pub(crate) async fn stow_request(
    addr: SocketAddr,
    path: &str,
    parts: &[&[u8]],
    token: Option<&str>,
) -> anyhow::Result<(HttpResponse, Duration)> {
    let started = Instant::now();
    let boundary = format!("hub-bench-{}", uuid::Uuid::new_v4().simple());
    let part_head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n");
    let tail = format!("--{boundary}--\r\n");
    let length: usize = parts
        .iter()
        .map(|p| part_head.len() + p.len() + 2)
        .sum::<usize>()
        + tail.len();
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut w = BufWriter::with_capacity(1 << 20, stream);
    let sent = async {
        w.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/related; \
                 type=\"application/dicom\"; boundary={boundary}\r\nAccept: \
                 application/dicom+json\r\n{authorization}Content-Length: {length}\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        for p in parts {
            w.write_all(part_head.as_bytes()).await?;
            w.write_all(p).await?;
            w.write_all(b"\r\n").await?;
        }
        w.write_all(tail.as_bytes()).await?;
        w.flush().await
    }
    .await;
    let body_sent = started.elapsed();
    // An early answer (an error) may close the connection while the body is still going out.
    let response = read_response(w.get_mut(), Duration::from_secs(600)).await;
    match (sent, response) {
        (_, Ok(r)) => Ok((r, body_sent)),
        (Err(e), Err(_)) => Err(anyhow::Error::from(e).context(format!("sending to {addr}"))),
        (Ok(()), Err(e)) => Err(e.context(format!("reading the answer of {addr}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_sec(n: f64) -> Throughput {
        Throughput {
            instances: n as usize,
            bytes: 0,
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_summary_quotes_the_round_of_the_median_ratio_not_of_the_median_hub_figure() {
        // Ratios 2, 5, 3: the median ratio is 3, from the round where the hub did 300/s,
        // although the median hub figure alone (400/s) is another round's.
        let rounds = vec![
            (per_sec(400.0), Some(per_sec(200.0))),
            (per_sec(500.0), Some(per_sec(100.0))),
            (per_sec(300.0), Some(per_sec(100.0))),
        ];
        let (h, o) = median_round(&rounds).expect("a round");
        assert_eq!((h.instances, o.map(|o| o.instances)), (300, Some(100)));
        let alone = vec![
            (per_sec(7.0), None),
            (per_sec(5.0), None),
            (per_sec(6.0), None),
        ];
        assert_eq!(median_round(&alone).map(|(h, _)| h.instances), Some(6));
        assert!(median_round(&[]).is_none());
    }
}
