//! `hub bench access`: the cost of the access policy on this machine.
//!
//! One generated world is written into a fresh log, as a hub that ran for years would have
//! written it: institutions in alliances, studies of every institution (registered, stored,
//! stabilized), patients linked across hospitals with and without consent, and active shares of
//! every grantee kind and scope. Then, in one run:
//!
//! 1. **Decision latency**: the policy point the gateway asks ([`AccessControl::decide`]: the
//!    Casbin matcher over the facts, read under their lock), in this process, with the facts
//!    projected from that log, one request at a time, each timed on its own.
//! 2. **Policy-filtered QIDO-RS**: `hub serve` (this binary, its own process, bearer tokens) on
//!    that log, queried by users whose visibility the policy decides: a radiologist of an
//!    alliance hospital, a physician holding user grants, a patient. Each request is timed from
//!    connect to the end of the response, and includes the audit event the query appends.
//! 3. The same searches without HTTP and without the audit append ([`StudyCatalog::search`] on
//!    the hub's read-model file), to show where the time goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use hub_events::catalog::{
    AllianceEvent, ConsentEvent, ConsentPolicy, Grantee, IngestSource, InstitutionEvent,
    InstitutionKind, PatientEvent, PurposeOfUse, SeriesInstances, ShareEvent, ShareScope,
    StoredInstance, StudyEvent, UserId,
};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, NewEvent, SqliteEventStore,
    SqliteSync, StoreMetrics, StreamId,
};
use hub_gateway::token::{Claims, Role, mint_hs256};
use hub_policies::{AccessControl, Act, StudyRef, Subject};
use hub_projections::{ReadModelDb, StudyCatalog, StudyQuery, Viewer};
use tokio::sync::watch;

use crate::bench::percentile;
use crate::bench_ingest::{DAYS, Hub, MODALITIES, day, http_get, http_get_as, metric, splitmix};

#[derive(clap::Args)]
pub struct AccessArgs {
    /// Studies in the catalog
    #[arg(long, default_value_t = 100_000)]
    studies: usize,
    /// Active shares (none revoked, none expired)
    #[arg(long, default_value_t = 100_000)]
    grants: usize,
    /// Institutions; every ten of them form one alliance
    #[arg(long, default_value_t = 40)]
    institutions: usize,
    /// Decisions timed (after 1,000 untimed ones)
    #[arg(long, default_value_t = 200_000)]
    decisions: usize,
    /// QIDO-RS queries timed (after 50 untimed ones)
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Skip the QIDO-RS parts (decisions only)
    #[arg(long)]
    skip_qido: bool,
    /// Directory under which the temporary data directory goes (default: the system's)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the data directory (log, read models) after the run, to inspect it
    #[arg(long)]
    keep: bool,
}

/// Runs the bench; Ctrl-C stops it with `hub serve` stopped and the temporary directory removed.
pub async fn access(args: AccessArgs) -> anyhow::Result<()> {
    tokio::select! {
        outcome = run(args) => outcome,
        _ = tokio::signal::ctrl_c() => {
            bail!("interrupted: spawned processes stopped, temporary directories removed")
        }
    }
}

// ---- The world --------------------------------------------------------------------------------

const ALLIANCE_SIZE: usize = 10;
/// Users a user-grant names (`u0`..).
const USERS: u64 = 500;

/// The generated world's shape; every choice is a function of an index, so a run is repeatable.
#[derive(Clone, Copy)]
struct World {
    institutions: usize,
    studies: usize,
    grants: usize,
    /// When the log was written; every share expires 30 days after it.
    now: DateTime<Utc>,
}

impl World {
    fn inst(&self, i: usize) -> String {
        format!("hosp-{:02}", i % self.institutions)
    }

    fn alliances(&self) -> usize {
        (self.institutions / ALLIANCE_SIZE).max(1)
    }

    /// Local patients per institution: each has 2.5 studies on average.
    fn patients_per_institution(&self) -> usize {
        (self.studies / self.institutions * 2 / 5).max(1)
    }

    fn study_uid(i: usize) -> String {
        format!("1.2.826.0.1.3680043.10.1437.7.{i}")
    }

    /// Study `i`: owned by institution `i % institutions`, of local patient `PIDp`.
    fn study(&self, i: usize) -> StudyRef {
        StudyRef {
            owner: self.inst(i),
            study_uid: World::study_uid(i),
            patient_id: Some(format!(
                "PID{:07}",
                (i / self.institutions) % self.patients_per_institution()
            )),
        }
    }

    /// Local patient `p` of every institution is one person, `RP{p}`, linked where `p` is even,
    /// consenting to alliance sharing where `p` is a multiple of 4.
    fn regional(p: usize) -> String {
        format!("RP{p:07}")
    }

    /// Share `g`: of a random study, to an institution (60 %), an alliance (25 %) or a user.
    fn grant(&self, g: usize) -> (uuid::Uuid, usize, Grantee, ShareScope) {
        let h = splitmix(0x5EED_0000 + g as u64);
        let study = (h % self.studies as u64) as usize;
        let pick = (h >> 32) % 20;
        let grantee = if pick < 12 {
            Grantee::Institution(self.inst((h >> 40) as usize))
        } else if pick < 17 {
            Grantee::Alliance(format!("al{}", (h >> 40) % self.alliances() as u64))
        } else {
            Grantee::User(UserId {
                institution: self.inst((h >> 48) as usize),
                subject: format!("u{}", (h >> 40) % USERS),
            })
        };
        let scope = match (h >> 24) % 3 {
            0 => ShareScope::Metadata,
            1 => ShareScope::Images,
            _ => ShareScope::Deidentified,
        };
        (
            uuid::Uuid::from_u64_pair(0x5EED, g as u64),
            study,
            grantee,
            scope,
        )
    }

    /// The registry streams of the world (institutions, alliances, patients, consents) and
    /// their events: written first, in order.
    fn registry(&self) -> Vec<(StreamId, String, Vec<HubEvent>)> {
        let mut out: Vec<(StreamId, String, Vec<HubEvent>)> = Vec::new();
        for i in 0..self.institutions {
            out.push((
                StreamId::new(Family::Institution, self.inst(i)),
                self.inst(i),
                vec![
                    InstitutionEvent::InstitutionRegistered {
                        institution_id: self.inst(i),
                        name: format!("Hospital {i}"),
                        kind: InstitutionKind::Hospital,
                        ae_titles: vec![],
                    }
                    .into(),
                ],
            ));
        }
        for a in 0..self.alliances() {
            let lead = a * ALLIANCE_SIZE;
            let mut events: Vec<HubEvent> = vec![
                AllianceEvent::AllianceRegistered {
                    alliance_id: format!("al{a}"),
                    name: format!("Alliance {a}"),
                    lead_institution: self.inst(lead),
                }
                .into(),
            ];
            for m in lead..(lead + ALLIANCE_SIZE).min(self.institutions) {
                events.push(
                    AllianceEvent::InstitutionJoinedAlliance {
                        alliance_id: format!("al{a}"),
                        institution_id: self.inst(m),
                    }
                    .into(),
                );
            }
            out.push((
                StreamId::new(Family::Alliance, format!("al{a}")),
                self.inst(lead),
                events,
            ));
        }
        for p in (0..self.patients_per_institution()).step_by(2) {
            let events: Vec<HubEvent> = (0..self.institutions)
                .map(|i| {
                    PatientEvent::PatientLinked {
                        regional_patient_id: World::regional(p),
                        institution_id: self.inst(i),
                        local_patient_id: format!("PID{p:07}"),
                        issuer_of_patient_id: None,
                    }
                    .into()
                })
                .collect();
            out.push((
                StreamId::new(Family::Patient, World::regional(p)),
                "hub".into(),
                events,
            ));
            // After the links: only an institution where the patient is linked records consent.
            if p.is_multiple_of(4) {
                let consent = uuid::Uuid::from_u64_pair(0xC0, p as u64);
                out.push((
                    StreamId::new(Family::Consent, consent),
                    self.inst(p),
                    vec![
                        ConsentEvent::ConsentRecorded {
                            consent_id: consent,
                            regional_patient_id: World::regional(p),
                            institution_id: self.inst(p),
                            by_patient: false,
                            policy: ConsentPolicy::AllianceMetadata,
                            v1_policy_text: None,
                        }
                        .into(),
                    ],
                ));
            }
        }
        out
    }

    /// The studies and the shares of the world.
    fn bulk(&self) -> Vec<(StreamId, String, Vec<HubEvent>)> {
        let mut out: Vec<(StreamId, String, Vec<HubEvent>)> = Vec::new();
        for i in 0..self.studies {
            out.push(self.study_stream(i));
        }
        for g in 0..self.grants {
            let (id, study, grantee, scope) = self.grant(g);
            let s = self.study(study);
            let h = splitmix(0xE0 + g as u64);
            out.push((
                StreamId::new(Family::Share, id),
                s.owner.clone(),
                vec![
                    ShareEvent::ShareGranted {
                        share_id: id,
                        study_uid: s.study_uid,
                        // One share in ten is of the study's single series.
                        series_uid: h
                            .is_multiple_of(10)
                            .then(|| format!("{}.1", World::study_uid(study))),
                        owner: s.owner,
                        grantee,
                        scope,
                        purpose: PurposeOfUse::Treatment,
                        expires_at: Some(self.now + chrono::Duration::days(30)),
                    }
                    .into(),
                ],
            ));
        }
        out
    }

    fn study_stream(&self, i: usize) -> (StreamId, String, Vec<HubEvent>) {
        let h = splitmix(i as u64);
        let s = self.study(i);
        let series = format!("{}.1", s.study_uid);
        let modality = MODALITIES[((h >> 40) % 8) as usize];
        let events: Vec<HubEvent> = vec![
            StudyEvent::StudyRegistered {
                study_uid: s.study_uid.clone(),
                owner: s.owner.clone(),
                patient_id: s.patient_id.clone(),
                patient_name: Some(format!("BENCH^PATIENT{}", i / self.institutions)),
                patient_birth_date: Some(day(h % DAYS).replacen("201", "195", 1)),
                patient_sex: Some(if h & 1 == 0 { "F" } else { "M" }.into()),
                study_date: Some(day((h >> 8) % DAYS)),
                study_time: Some(format!("{:02}{:02}00", (h >> 20) % 24, (h >> 28) % 60)),
                accession_number: Some(format!("ACC{i:08}")),
                study_description: Some("BENCH STUDY".into()),
                referring_physician: Some("REFERRER^BENCH".into()),
            }
            .into(),
            StudyEvent::InstancesStored {
                study_uid: s.study_uid.clone(),
                source: IngestSource::StowRs {
                    request_id: format!("bench-{i}"),
                },
                series: vec![SeriesInstances {
                    series_uid: series.clone(),
                    modality: Some(modality.into()),
                    series_number: Some(1),
                    series_description: Some("BENCH SERIES".into()),
                    instances: vec![StoredInstance {
                        sop_instance_uid: format!("{series}.1"),
                        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                        instance_number: Some(1),
                        blob_key: format!("studies/{}/{series}/{series}.1.dcm", s.study_uid),
                        size_bytes: 526_000,
                        sha256: "ab".repeat(32),
                    }],
                }],
            }
            .into(),
            StudyEvent::StudyStabilized {
                study_uid: s.study_uid.clone(),
                series_count: 1,
                instance_count: 1,
                modalities: vec![modality.into()],
            }
            .into(),
        ];
        (StreamId::new(Family::Study, &s.study_uid), s.owner, events)
    }
}

/// Writes the world into the log of `data` (not timed); returns the head position.
async fn write_world(world: World, data: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(data)?;
    let store = Arc::new(
        SqliteEventStore::open(
            &data.join("events.sqlite"),
            SqliteSync::Normal,
            StoreMetrics::unregistered(),
        )
        .await?,
    );
    // The registry first, in order: a share names what it registered.
    for (stream, tenant, events) in world.registry() {
        append(&*store, &stream, &tenant, &events).await?;
    }
    let rest = Arc::new(world.bulk());
    let writers = 4;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, rest) = (store.clone(), rest.clone());
        tasks.push(tokio::spawn(async move {
            for (stream, tenant, events) in rest.iter().skip(w).step_by(writers) {
                append(&*store, stream, tenant, events).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(store.head().await?)
}

async fn append(
    store: &dyn EventStore,
    stream: &StreamId,
    tenant: &str,
    events: &[HubEvent],
) -> anyhow::Result<()> {
    let meta = EventMetadata::new(tenant, "service:bench");
    let new: Vec<NewEvent> = events
        .iter()
        .map(|e| e.to_new_event(meta.clone()))
        .collect();
    store
        .append(stream, ExpectedVersion::NoStream, new)
        .await
        .with_context(|| format!("cannot append {stream}"))?;
    Ok(())
}

// ---- 1. Decisions -----------------------------------------------------------------------------

const DECISION_KINDS: [&str; 4] = [
    "own institution",
    "through a share",
    "other hospital (alliance or deny)",
    "patient",
];

/// Request `q`: who asks what of which study.
fn request(world: &World, q: usize) -> (usize, Subject, StudyRef, Act) {
    let h = splitmix(0xDEC1_5104 + q as u64);
    let kind = q % DECISION_KINDS.len();
    let act = if (h >> 60) & 1 == 0 {
        Act::ReadMetadata
    } else {
        Act::ReadImages
    };
    let staff = |inst: usize, role: Role| Subject {
        id: format!("u{}", (h >> 16) % USERS),
        role,
        institution: world.inst(inst),
    };
    let random_study = (h % world.studies as u64) as usize;
    match kind {
        0 => {
            let study = world.study(random_study);
            let owner = random_study % world.institutions;
            (kind, staff(owner, Role::Radiologist), study, act)
        }
        1 => {
            let (_, study, grantee, _) = world.grant((h % world.grants.max(1) as u64) as usize);
            let who = match grantee {
                Grantee::Institution(i) => Subject {
                    id: format!("u{}", (h >> 16) % USERS),
                    role: Role::Radiologist,
                    institution: i,
                },
                Grantee::Alliance(a) => {
                    let a: usize = a.trim_start_matches("al").parse().unwrap_or(0);
                    staff(
                        a * ALLIANCE_SIZE + (h >> 8) as usize % ALLIANCE_SIZE,
                        Role::Physician,
                    )
                }
                Grantee::User(u) => Subject {
                    id: u.subject,
                    role: Role::Physician,
                    institution: u.institution,
                },
                Grantee::UnscopedUser(u) => Subject {
                    id: u,
                    role: Role::Physician,
                    institution: world.inst((h >> 8) as usize),
                },
            };
            (kind, who, world.study(study), act)
        }
        2 => (
            kind,
            staff((h >> 8) as usize, Role::Radiologist),
            world.study(random_study),
            act,
        ),
        _ => {
            let p = (h >> 8) as usize % world.patients_per_institution();
            let patient = Subject {
                id: World::regional(p),
                role: Role::Patient,
                institution: world.inst(p),
            };
            (kind, patient, world.study(random_study), act)
        }
    }
}

struct Latencies {
    all: Vec<Duration>,
    by_kind: Vec<Vec<Duration>>,
    permits: Vec<usize>,
}

/// Prints p50/p99/max per kind and overall, in `unit` (`scale` of them per second).
fn print_latencies(kinds: &[&str], l: &mut Latencies, (unit, scale): (&str, f64)) {
    for (k, lat) in l.by_kind.iter_mut().enumerate() {
        lat.sort();
        if lat.is_empty() {
            continue;
        }
        println!(
            "   {:<36} p50 {:>8.2} {unit}  p99 {:>8.2} {unit}  max {:>9.2} {unit}  ({} of {} permitted)",
            kinds[k],
            percentile(lat, 0.5).as_secs_f64() * scale,
            percentile(lat, 0.99).as_secs_f64() * scale,
            lat.last().map_or(0.0, |d| d.as_secs_f64() * scale),
            l.permits[k],
            lat.len(),
        );
    }
    l.all.sort();
    println!(
        "   {:<36} p50 {:>8.2} {unit}  p99 {:>8.2} {unit}",
        "all",
        percentile(&l.all, 0.5).as_secs_f64() * scale,
        percentile(&l.all, 0.99).as_secs_f64() * scale,
    );
}

async fn decisions(
    args: &AccessArgs,
    world: &World,
    data: &Path,
    head: u64,
) -> anyhow::Result<(Duration, Duration)> {
    println!(
        "\n-- 1. Decision latency with {} active grants ({} studies)",
        args.grants, args.studies
    );
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(
            &data.join("events.sqlite"),
            SqliteSync::Normal,
            StoreMetrics::unregistered(),
        )
        .await?,
    );
    let clock_now = world.now;
    let access = Arc::new(AccessControl::with_engine(
        hub_policies::Engine::new().await?,
        Arc::new(move || clock_now),
    ));
    let (stop, stopped) = watch::channel(false);
    let follower = {
        let (access, store) = (access.clone(), store.clone());
        tokio::spawn(async move { access.follow(store, stopped).await })
    };
    let started = Instant::now();
    ensure!(
        access.wait_applied(head, Duration::from_secs(1800)).await,
        "the access facts did not reach position {head}"
    );
    let grants = access.with_facts(|f| f.active_grants(world.now));
    println!(
        "facts projected from {head} events in {:.1} s: {grants} active grants",
        started.elapsed().as_secs_f64()
    );
    ensure!(
        grants == args.grants,
        "the facts hold {grants} active grants, the log {}",
        args.grants
    );
    let mut l = Latencies {
        all: Vec::with_capacity(args.decisions),
        by_kind: vec![Vec::new(); DECISION_KINDS.len()],
        permits: vec![0; DECISION_KINDS.len()],
    };
    let warm_up = 1_000;
    for q in 0..warm_up + args.decisions {
        let (kind, subject, study, act) = request(world, q);
        let t = Instant::now();
        let decision = access.decide(&subject, &study, None, act)?;
        let elapsed = t.elapsed();
        if q >= warm_up {
            l.all.push(elapsed);
            l.by_kind[kind].push(elapsed);
            l.permits[kind] += decision.permit as usize;
        }
    }
    println!(
        "{} decisions, one at a time, each timed on its own (AccessControl::decide, as the \
         gateway asks it: the Casbin matcher over the facts, under their read lock):",
        args.decisions
    );
    print_latencies(&DECISION_KINDS, &mut l, ("µs", 1e6));
    ensure!(
        l.permits[0] == l.by_kind[0].len(),
        "an institution's own staff were denied their own studies"
    );
    ensure!(
        l.permits[1] > 0 && l.permits[3] < l.by_kind[3].len(),
        "the decisions are not what the world says (no share permitted, or every patient read \
         permitted)"
    );
    stop.send_replace(true);
    follower.await??;
    Ok((percentile(&l.all, 0.5), percentile(&l.all, 0.99)))
}

// ---- 2. and 3. Policy-filtered QIDO-RS --------------------------------------------------------

const QIDO_KINDS: [&str; 6] = [
    "radiologist: newest 100",
    "radiologist: PatientID",
    "radiologist: StudyDate 7 days",
    "radiologist: ModalitiesInStudy",
    "physician (user grants): newest",
    "patient: own studies",
];

/// Query `q`: the user and the QIDO-RS query string.
fn qido(world: &World, q: usize) -> (usize, Subject, StudyQuery, String) {
    let h = splitmix(0x0001_D0C0 + q as u64);
    let kind = q % QIDO_KINDS.len();
    // Radiologists of the first alliance's hospitals: their own studies, the alliance's
    // consented ones and what is shared with them.
    let radiologist = Subject {
        id: format!("rad{}", h % 7),
        role: Role::Radiologist,
        institution: world.inst((h >> 8) as usize % ALLIANCE_SIZE),
    };
    let mut query = StudyQuery {
        limit: 100,
        ..StudyQuery::default()
    };
    let (subject, text) = match kind {
        0 => (radiologist, "limit=100".to_owned()),
        1 => {
            let p = format!(
                "PID{:07}",
                (h >> 16) as usize % world.patients_per_institution()
            );
            query.patient_id = Some(p.clone());
            (radiologist, format!("PatientID={p}"))
        }
        2 => {
            let from = (h >> 16) % (DAYS - 7);
            query.study_date_from = Some(day(from));
            query.study_date_to = Some(day(from + 6));
            let text = format!("StudyDate={}-{}", day(from), day(from + 6));
            (radiologist, text)
        }
        3 => {
            let m = MODALITIES[((h >> 16) % 8) as usize];
            query.modality = Some(m.into());
            (radiologist, format!("ModalitiesInStudy={m}&limit=100"))
        }
        4 => (
            Subject {
                id: format!("u{}", (h >> 16) % USERS),
                role: Role::Physician,
                institution: world.inst((h >> 8) as usize),
            },
            "limit=100".to_owned(),
        ),
        _ => {
            let p = 2 * ((h >> 16) as usize % world.patients_per_institution().div_ceil(2));
            (
                Subject {
                    id: World::regional(p),
                    role: Role::Patient,
                    institution: world.inst(p),
                },
                "limit=100".to_owned(),
            )
        }
    };
    (kind, subject, query, text)
}

async fn wait_caught_up(hub: &Hub, head: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3600);
    let mut last_report = Instant::now();
    loop {
        hub.process.check_alive()?;
        let r = http_get(hub.http, "/metrics").await?;
        ensure!(r.status == 200, "GET /metrics answered {}", r.status);
        let text = r.body_text(usize::MAX);
        let positions: Vec<Option<f64>> = ["study_catalog", "access_index"]
            .iter()
            .map(|p| {
                metric(
                    &text,
                    &format!("hub_projection_position{{projection=\"{p}\"}}"),
                )
            })
            .collect();
        if positions
            .iter()
            .all(|p| p.is_some_and(|p| p >= head as f64))
        {
            println!(
                "hub started; the study catalog and the access index caught up with {head} \
                 events in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            println!(
                "   catching up: positions {positions:?} of {head} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        ensure!(
            Instant::now() < deadline,
            "the read models did not catch up within an hour"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn qido_http(
    args: &AccessArgs,
    world: &World,
    data: &Path,
    head: u64,
) -> anyhow::Result<(Duration, Duration)> {
    println!(
        "\n-- 2. Policy-filtered QIDO-RS over {} studies, `hub serve` with bearer tokens",
        args.studies
    );
    let secret = crate::token::load_or_create_secret(data)?;
    let exe = std::env::current_exe().context("cannot find the hub binary")?;
    let hub = Hub::start_with(&exe, data, "access", &["--auth", "jwt"]).await?;
    wait_caught_up(&hub, head).await?;
    let mut l = Latencies {
        all: Vec::with_capacity(args.queries),
        by_kind: vec![Vec::new(); QIDO_KINDS.len()],
        permits: vec![0; QIDO_KINDS.len()],
    };
    let warm_up = 50;
    for q in 0..warm_up + args.queries {
        let (kind, subject, _, text) = qido(world, q);
        let claims = Claims::new(
            &subject.id,
            subject.role,
            &subject.institution,
            chrono::Duration::hours(1),
        );
        let token = mint_hs256(&secret, &claims)?;
        let path = format!("/dicom-web/studies?{text}");
        let t = Instant::now();
        let r = http_get_as(hub.http, &path, Some(&token)).await?;
        let elapsed = t.elapsed();
        ensure!(
            r.status == 200,
            "QIDO-RS {path} as {subject:?} answered {}: {}",
            r.status,
            r.body_text(500)
        );
        let found = serde_json::from_slice::<serde_json::Value>(&r.body)?
            .as_array()
            .map_or(0, Vec::len);
        if q >= warm_up {
            l.all.push(elapsed);
            l.by_kind[kind].push(elapsed);
            // Here "permitted" counts queries that showed at least one study.
            l.permits[kind] += (found > 0) as usize;
        }
    }
    println!(
        "{} queries, one at a time, each on a new connection (connect + token check + policy \
         filter in SQL + audit event appended + whole response); \"permitted\" = showed a study:",
        args.queries
    );
    print_latencies(&QIDO_KINDS, &mut l, ("ms", 1e3));
    ensure!(
        l.permits[0] == l.by_kind[0].len() && l.permits[5] > 0,
        "radiologists saw no study, or no patient saw their own"
    );
    hub.process.check_alive()?;
    drop(hub);
    Ok((percentile(&l.all, 0.5), percentile(&l.all, 0.99)))
}

async fn qido_sql(args: &AccessArgs, world: &World, data: &Path) -> anyhow::Result<()> {
    println!("\n-- 3. The same searches in this process: SQL only (no HTTP, no audit append)");
    let db = ReadModelDb::open(&data.join("readmodels.sqlite")).await?;
    let engine = hub_policies::Engine::new().await?;
    let mut l = Latencies {
        all: Vec::with_capacity(args.queries),
        by_kind: vec![Vec::new(); QIDO_KINDS.len()],
        permits: vec![0; QIDO_KINDS.len()],
    };
    for q in 0..50 + args.queries {
        let (kind, subject, query, _) = qido(world, q);
        let viewer = Viewer {
            subject: subject.id.clone(),
            institution: subject.institution.clone(),
            relations: engine.search_relations(subject.role).to_vec(),
            now_micros: world.now.timestamp_micros(),
            consult_lead_micros: 0,
        };
        let t = Instant::now();
        let (rows, _) = StudyCatalog::search(db.pool(), &viewer, &query).await?;
        let elapsed = t.elapsed();
        if q >= 50 {
            l.all.push(elapsed);
            l.by_kind[kind].push(elapsed);
            l.permits[kind] += !rows.is_empty() as usize;
        }
    }
    print_latencies(&QIDO_KINDS, &mut l, ("ms", 1e3));
    Ok(())
}

async fn run(args: AccessArgs) -> anyhow::Result<()> {
    ensure!(
        args.studies > 0 && args.institutions > 0,
        "--studies and --institutions must be positive"
    );
    let root = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .context("cannot create a temporary directory")?;
    let data = root.path().join("hub-access");
    let world = World {
        institutions: args.institutions,
        studies: args.studies,
        grants: args.grants,
        now: Utc::now(),
    };
    let started = Instant::now();
    let head = write_world(world, &data).await?;
    println!(
        "wrote the world into a fresh log in {:.1} s (not timed): {} institutions in {} \
         alliances, {} studies (3 events each), {} patients linked at every institution (a \
         half of them consenting), {} active shares; {head} events",
        started.elapsed().as_secs_f64(),
        world.institutions,
        world.alliances(),
        world.studies,
        world.patients_per_institution().div_ceil(2),
        world.grants,
    );
    let (d50, d99) = decisions(&args, &world, &data, head).await?;
    let qido = if args.skip_qido {
        None
    } else {
        let figures = qido_http(&args, &world, &data, head).await?;
        qido_sql(&args, &world, &data).await?;
        Some(figures)
    };
    if args.keep {
        let kept = root.keep();
        println!(
            "\nkept the data directory {}",
            kept.join("hub-access").display()
        );
    }
    println!("\n| figure | measured | target |\n|---|---|---|");
    println!(
        "| decision, {} active grants | p50 {:.2} µs, p99 {:.2} µs | p99 < 20 µs: {} |",
        args.grants,
        d50.as_secs_f64() * 1e6,
        d99.as_secs_f64() * 1e6,
        verdict(d99 < Duration::from_micros(20), args.grants >= 100_000)
    );
    if let Some((q50, q99)) = qido {
        println!(
            "| policy-filtered QIDO-RS, {} studies | p50 {:.2} ms, p99 {:.2} ms | p99 < 10 ms: {} |",
            args.studies,
            q50.as_secs_f64() * 1e3,
            q99.as_secs_f64() * 1e3,
            verdict(q99 < Duration::from_millis(10), args.studies >= 100_000)
        );
    }
    Ok(())
}

fn verdict(met: bool, full_size: bool) -> &'static str {
    match (met, full_size) {
        (_, false) => "not measured at full size",
        (true, true) => "met",
        (false, true) => "**missed**",
    }
}
