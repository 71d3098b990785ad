//! Configuration: defaults < optional TOML file < environment variables < command-line flags.
//! Every value is validated here, and a bad one stops the hub with a message that names the key,
//! where the value came from, and what is expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hub_events::SqliteSync;

/// How requests without a bearer token are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Refused (401).
    Jwt,
    /// Acted as a hospital_admin of `dev_institution` (development only).
    Development,
}

/// The resolved configuration of the embedded hub.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub sqlite_sync: SqliteSync,
    pub log: String,
    /// The institution the development identity acts for (until authentication, issue 4).
    pub dev_institution: String,
    /// Whether requests without a token are refused or act as the development identity.
    pub auth: AuthMode,
    /// Largest STOW-RS request body accepted, in bytes.
    pub stow_max_bytes: u64,
    /// The URL clients reach the hub's HTTP API at, without a trailing slash (behind a reverse
    /// proxy or an ingress: `https://imaging.example.org/hub`); RetrieveURLs and BulkDataURIs
    /// start with it. `None`: `http://` and the request's Host header.
    pub public_url: Option<String>,
    /// How long an HTTP client may take: request head, body gaps, an idle connection.
    pub http_header_timeout: std::time::Duration,
    pub http_body_idle_timeout: std::time::Duration,
    pub http_idle_timeout: std::time::Duration,
    /// DIMSE (C-ECHO, C-STORE) listen address.
    pub dimse: SocketAddr,
    /// The hub's own AE title.
    pub dimse_ae_title: String,
    /// Calling AE title → institution; empty: every caller pushes for `dev_institution`.
    pub dimse_ae_map: BTreeMap<String, String>,
    /// Quiet period after which a study that stopped receiving instances is stabilized.
    pub stabilize_after: std::time::Duration,
    /// How long before a consultation's slot its participants may open the study.
    pub consult_lead: chrono::Duration,
    /// The HS256 secret of bearer tokens; `None` (and no `jwt_jwks`): the embedded hub's
    /// development secret, generated once in `<data_dir>/jwt.secret` (see `token.rs`).
    pub jwt_secret: Option<Secret>,
    /// Where the RS256 verification keys of bearer tokens come from (production, an identity
    /// provider); `None`: HS256 with `jwt_secret`.
    pub jwt_jwks: Option<JwksSource>,
    /// The ONNX Runtime library (`libonnxruntime.so.*`); `None`: inference is off.
    pub ort_dylib: Option<PathBuf>,
    /// The model registry folder (TOML manifests and their ONNX files).
    pub inference_models: PathBuf,
    pub inference_workers: usize,
    pub inference_queue: usize,
    pub inference_threads: usize,
    /// The PostgreSQL event log (distributed mode); `None`: the embedded SQLite log.
    pub database_url: Option<Secret>,
    /// The PostgreSQL read models, filled by `hub run projector` and read by the gateways
    /// (distributed mode); `None`: each process's own SQLite read models in `data_dir`.
    pub read_models_url: Option<Secret>,
    /// The Kafka transport (distributed mode); `None` when no brokers are configured.
    pub kafka: Option<hub_events::kafka::KafkaConfig>,
    /// Where the original DICOM files are kept.
    pub blob_dir: PathBuf,
    /// An S3-compatible bucket for them instead (`s3://BUCKET[/PREFIX]`); `None`: `blob_dir`.
    pub blob_url: Option<String>,
    /// Keys of regional patient ids and de-identified UIDs; `None`: the data directory's files.
    pub patient_key: Option<Secret>,
    pub deid_key: Option<Secret>,
}

/// A secret value: compared and cloned like a string, but never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn expose_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Shortest HS256 secret accepted, in bytes (RFC 7518 section 3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Where a JWKS document is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    /// An `http://` URL (fetched once at start; no TLS client).
    Url(String),
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "{}", p.display()),
            JwksSource::Url(u) => f.write_str(u),
        }
    }
}

/// One configuration key: its name in the TOML file, its environment variable, its flag, what it
/// expects, and its default.
struct Key {
    name: &'static str,
    env: &'static str,
    flag: &'static str,
    expected: &'static str,
    default: &'static str,
}

const KEYS: &[Key] = &[
    Key {
        name: "data_dir",
        env: "HUB_DATA_DIR",
        flag: "--data-dir",
        expected: "a directory path",
        default: "./data",
    },
    Key {
        name: "http",
        env: "HUB_HTTP",
        flag: "--http",
        expected: "a socket address such as 127.0.0.1:8080",
        default: "127.0.0.1:8080",
    },
    Key {
        name: "public_url",
        env: "HUB_PUBLIC_URL",
        flag: "--public-url",
        expected: "the http:// or https:// URL clients reach the hub at, such as \
                   https://imaging.example.org/hub, with no query or fragment (empty: http:// and \
                   the request's Host header)",
        default: "",
    },
    Key {
        name: "sqlite_sync",
        env: "HUB_SQLITE_SYNC",
        flag: "--sqlite-sync",
        expected: "`full` (fsync every commit) or `normal` (fsync at checkpoints)",
        default: "full",
    },
    Key {
        name: "auth",
        env: "HUB_AUTH",
        flag: "--auth",
        expected: "`jwt` (every request needs a bearer token) or `development` (requests without \
                   a token act as a hospital_admin of dev_institution)",
        default: "jwt",
    },
    Key {
        name: "dev_institution",
        env: "HUB_DEV_INSTITUTION",
        flag: "--dev-institution",
        expected: "an institution id (letters, digits, `-`, `_`, `.`)",
        default: "dev-hospital",
    },
    Key {
        name: "stow_max_bytes",
        env: "HUB_STOW_MAX_BYTES",
        flag: "--stow-max-bytes",
        expected: "a whole number of bytes greater than 0",
        default: "8589934592",
    },
    Key {
        name: "http_header_timeout_secs",
        env: "HUB_HTTP_HEADER_TIMEOUT_SECS",
        flag: "--http-header-timeout-secs",
        expected: "a number of seconds from 0.1 to 3600: how long a request's line and headers \
                   may take to arrive, counted from when the connection waits for them (so also \
                   how long a keep-alive connection may wait for its next request)",
        default: "30",
    },
    Key {
        name: "http_body_idle_timeout_secs",
        env: "HUB_HTTP_BODY_IDLE_TIMEOUT_SECS",
        flag: "--http-body-idle-timeout-secs",
        expected: "a number of seconds from 0.1 to 3600: the longest gap between two bytes of a \
                   request body being read (not a limit on the whole body: a large upload takes \
                   as long as bytes keep coming)",
        default: "60",
    },
    Key {
        name: "http_idle_timeout_secs",
        env: "HUB_HTTP_IDLE_TIMEOUT_SECS",
        flag: "--http-idle-timeout-secs",
        expected: "a number of seconds from 0.1 to 3600: a connection on which no byte moves \
                   either way for this long, while no request is being handled, is closed (a \
                   client that stops reading its answer)",
        default: "120",
    },
    Key {
        name: "dimse",
        env: "HUB_DIMSE",
        flag: "--dimse",
        expected: "a socket address such as 127.0.0.1:11112",
        default: "127.0.0.1:11112",
    },
    Key {
        name: "dimse_ae_title",
        env: "HUB_DIMSE_AE_TITLE",
        flag: "--dimse-ae-title",
        expected: "an AE title of 1 to 16 characters, no backslash",
        default: "HUB",
    },
    Key {
        name: "dimse_ae_map",
        env: "HUB_DIMSE_AE_MAP",
        flag: "--dimse-ae-map",
        expected: "a comma-separated list of CALLING_AE=institution (empty: every caller pushes for dev_institution)",
        default: "",
    },
    Key {
        name: "stabilize_after_secs",
        env: "HUB_STABILIZE_AFTER_SECS",
        flag: "--stabilize-after-secs",
        expected: "a number of seconds greater than 0, such as 30 or 0.5",
        default: "30",
    },
    Key {
        name: "consult_lead_minutes",
        env: "HUB_CONSULT_LEAD_MINUTES",
        flag: "--consult-lead-minutes",
        expected: "a whole number of minutes from 0 to 1440: how long before a consultation's \
                   slot its participants may open the study",
        default: "30",
    },
    Key {
        name: "jwt_secret",
        env: "HUB_JWT_SECRET",
        flag: "--jwt-secret",
        expected: "a shared secret of at least 32 bytes for HS256 bearer tokens (empty: a random \
                   secret generated once in <data_dir>/jwt.secret)",
        default: "",
    },
    Key {
        name: "jwt_jwks",
        env: "HUB_JWT_JWKS",
        flag: "--jwt-jwks",
        expected: "the path of a JWKS file or an http:// URL serving one, for RS256 bearer \
                   tokens (empty: HS256 with jwt_secret)",
        default: "",
    },
    Key {
        name: "ort_dylib",
        env: "ORT_DYLIB_PATH",
        flag: "--ort-dylib",
        expected: "the path of ONNX Runtime's shared library, libonnxruntime.so.* (from `pip \
                   install onnxruntime`: site-packages/onnxruntime/capi/); empty: inference off",
        default: "",
    },
    Key {
        name: "inference_models",
        env: "HUB_INFERENCE_MODELS",
        flag: "--inference-models",
        expected: "the folder of model manifests (*.toml) and their ONNX files",
        default: "services/inference/models",
    },
    Key {
        name: "inference_workers",
        env: "HUB_INFERENCE_WORKERS",
        flag: "--inference-workers",
        expected: "a whole number of inference worker threads from 1 to 64",
        default: "2",
    },
    Key {
        name: "inference_queue",
        env: "HUB_INFERENCE_QUEUE",
        flag: "--inference-queue",
        expected: "a whole number of queued inference jobs from 1 to 1024 (beyond it, producers wait)",
        default: "8",
    },
    Key {
        name: "inference_threads",
        env: "HUB_INFERENCE_THREADS",
        flag: "--inference-threads",
        expected: "a whole number of ONNX Runtime threads per inference worker from 1 to 64",
        default: "1",
    },
    Key {
        name: "database_url",
        env: "HUB_DATABASE_URL",
        flag: "--database-url",
        expected: "a postgres:// URL of the event log (distributed mode, `hub run`; empty: the \
                   embedded SQLite log in data_dir)",
        default: "",
    },
    Key {
        name: "read_models_url",
        env: "HUB_READ_MODELS_URL",
        flag: "--read-models-url",
        expected: "a postgres:// URL of the read models that `hub run projector` fills and the \
                   gateways read (distributed mode; empty: each gateway projects into its own \
                   SQLite file in data_dir)",
        default: "",
    },
    Key {
        name: "kafka_brokers",
        env: "HUB_KAFKA_BROKERS",
        flag: "--kafka-brokers",
        expected: "a comma-separated list of Kafka brokers host:port (distributed mode)",
        default: "",
    },
    Key {
        name: "kafka_topic_prefix",
        env: "HUB_KAFKA_TOPIC_PREFIX",
        flag: "--kafka-topic-prefix",
        expected: "a topic name prefix (letters, digits, `.`, `_`, `-`)",
        default: "hub",
    },
    Key {
        name: "kafka_partitions",
        env: "HUB_KAFKA_PARTITIONS",
        flag: "--kafka-partitions",
        expected: "a whole number of partitions from 1 to 1024 for the topics the hub creates",
        default: "3",
    },
    Key {
        name: "kafka_replication",
        env: "HUB_KAFKA_REPLICATION",
        flag: "--kafka-replication",
        expected: "a replication factor from 1 to 16 for the topics the hub creates",
        default: "1",
    },
    Key {
        name: "blob_dir",
        env: "HUB_BLOB_DIR",
        flag: "--blob-dir",
        expected: "the directory of the original DICOM files (empty: <data_dir>/blobs); in the \
                   distributed mode a directory every service mounts",
        default: "",
    },
    Key {
        name: "blob_url",
        env: "HUB_BLOB_URL",
        flag: "--blob-url",
        expected: "s3://BUCKET[/PREFIX] of an S3-compatible object store for the original DICOM \
                   files (empty: `blob_dir`); credentials, region and endpoint from AWS_ACCESS_KEY_ID, \
                   AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP",
        default: "",
    },
    Key {
        name: "patient_key",
        env: "HUB_PATIENT_KEY",
        flag: "--patient-key",
        expected: "a secret of at least 32 bytes keying regional patient ids (empty: generated \
                   once in <data_dir>/patient.key; required by `hub run`)",
        default: "",
    },
    Key {
        name: "deid_key",
        env: "HUB_DEID_KEY",
        flag: "--deid-key",
        expected: "a secret of at least 32 bytes keying de-identified UIDs (empty: generated \
                   once in <data_dir>/deid.key; required by `hub run`)",
        default: "",
    },
    Key {
        name: "log",
        env: "HUB_LOG",
        flag: "--log",
        expected: "a tracing filter such as `info` or `hub=debug,sqlx=warn`",
        default: "info",
    },
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Values given on the command line (`None` = not given).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigFlags {
    /// Directory of the SQLite files and the blob store [env: HUB_DATA_DIR] [default: ./data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// HTTP listen address [env: HUB_HTTP] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// SQLite durability: full or normal [env: HUB_SQLITE_SYNC] [default: full]
    #[arg(long, value_name = "MODE")]
    pub sqlite_sync: Option<String>,
    /// jwt: every request needs a bearer token; development: requests without one act as a
    /// hospital_admin of dev_institution [env: HUB_AUTH] [default: jwt]
    #[arg(long, value_name = "MODE")]
    pub auth: Option<String>,
    /// Institution of the development identity [env: HUB_DEV_INSTITUTION] [default: dev-hospital]
    #[arg(long, value_name = "ID")]
    pub dev_institution: Option<String>,
    /// The URL clients reach the hub at behind a proxy, e.g. https://imaging.example.org/hub;
    /// RetrieveURLs and BulkDataURIs start with it [env: HUB_PUBLIC_URL] [default: the Host header]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Largest STOW-RS body in bytes [env: HUB_STOW_MAX_BYTES] [default: 8589934592]
    #[arg(long, value_name = "BYTES")]
    pub stow_max_bytes: Option<String>,
    /// Seconds a request's head may take to arrive [env: HUB_HTTP_HEADER_TIMEOUT_SECS] [default: 30]
    #[arg(long, value_name = "SECS")]
    pub http_header_timeout_secs: Option<String>,
    /// Longest gap between request body bytes, seconds [env: HUB_HTTP_BODY_IDLE_TIMEOUT_SECS]
    /// [default: 60]
    #[arg(long, value_name = "SECS")]
    pub http_body_idle_timeout_secs: Option<String>,
    /// Seconds a connection may stay without a byte moving and no request handled
    /// [env: HUB_HTTP_IDLE_TIMEOUT_SECS] [default: 120]
    #[arg(long, value_name = "SECS")]
    pub http_idle_timeout_secs: Option<String>,
    /// DIMSE listen address [env: HUB_DIMSE] [default: 127.0.0.1:11112]
    #[arg(long, value_name = "ADDR")]
    pub dimse: Option<String>,
    /// The hub's AE title [env: HUB_DIMSE_AE_TITLE] [default: HUB]
    #[arg(long, value_name = "AE")]
    pub dimse_ae_title: Option<String>,
    /// Calling AE → institution, e.g. CT01=hosp-a,PACS=hosp-b [env: HUB_DIMSE_AE_MAP]
    #[arg(long, value_name = "MAP")]
    pub dimse_ae_map: Option<String>,
    /// Quiet period before a study is stabilized, seconds [env: HUB_STABILIZE_AFTER_SECS] [default: 30]
    #[arg(long, value_name = "SECS")]
    pub stabilize_after_secs: Option<String>,
    /// Minutes before a consultation's slot its participants may open the study
    /// [env: HUB_CONSULT_LEAD_MINUTES] [default: 30]
    #[arg(long, value_name = "MINUTES")]
    pub consult_lead_minutes: Option<String>,
    /// HS256 secret of bearer tokens, at least 32 bytes (prefer the environment: flags show in
    /// `ps`) [env: HUB_JWT_SECRET] [default: a random secret kept in DATA/jwt.secret]
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// JWKS file or http:// URL with the RS256 keys of bearer tokens [env: HUB_JWT_JWKS]
    #[arg(long, value_name = "FILE|URL")]
    pub jwt_jwks: Option<String>,
    /// ONNX Runtime library, libonnxruntime.so.*; empty: inference off [env: ORT_DYLIB_PATH]
    #[arg(long, value_name = "FILE")]
    pub ort_dylib: Option<String>,
    /// Folder of model manifests [env: HUB_INFERENCE_MODELS] [default: services/inference/models]
    #[arg(long, value_name = "DIR")]
    pub inference_models: Option<String>,
    /// Inference worker threads [env: HUB_INFERENCE_WORKERS] [default: 2]
    #[arg(long, value_name = "N")]
    pub inference_workers: Option<String>,
    /// Inference jobs queued before producers wait [env: HUB_INFERENCE_QUEUE] [default: 8]
    #[arg(long, value_name = "N")]
    pub inference_queue: Option<String>,
    /// ONNX Runtime threads per inference worker [env: HUB_INFERENCE_THREADS] [default: 1]
    #[arg(long, value_name = "N")]
    pub inference_threads: Option<String>,
    /// PostgreSQL URL of the event log (distributed mode) [env: HUB_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// PostgreSQL URL of the shared read models (distributed mode) [env: HUB_READ_MODELS_URL]
    #[arg(long, value_name = "URL")]
    pub read_models_url: Option<String>,
    /// Kafka brokers host:port,... (distributed mode) [env: HUB_KAFKA_BROKERS]
    #[arg(long, value_name = "BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Prefix of the hub's topic names [env: HUB_KAFKA_TOPIC_PREFIX] [default: hub]
    #[arg(long, value_name = "PREFIX")]
    pub kafka_topic_prefix: Option<String>,
    /// Partitions of the topics the hub creates [env: HUB_KAFKA_PARTITIONS] [default: 3]
    #[arg(long, value_name = "N")]
    pub kafka_partitions: Option<String>,
    /// Replication factor of the topics the hub creates [env: HUB_KAFKA_REPLICATION] [default: 1]
    #[arg(long, value_name = "N")]
    pub kafka_replication: Option<String>,
    /// Directory of the original DICOM files [env: HUB_BLOB_DIR] [default: DATA/blobs]
    #[arg(long, value_name = "DIR")]
    pub blob_dir: Option<String>,
    /// S3-compatible bucket of the original DICOM files, s3://BUCKET[/PREFIX] [env: HUB_BLOB_URL]
    #[arg(long, value_name = "URL")]
    pub blob_url: Option<String>,
    /// Secret keying regional patient ids [env: HUB_PATIENT_KEY] [default: DATA/patient.key]
    #[arg(long, value_name = "SECRET")]
    pub patient_key: Option<String>,
    /// Secret keying de-identified UIDs [env: HUB_DEID_KEY] [default: DATA/deid.key]
    #[arg(long, value_name = "SECRET")]
    pub deid_key: Option<String>,
    /// Log filter [env: HUB_LOG] [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Optional TOML file with any of the keys above [env: HUB_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigFlags {
    fn get(&self, key: &str) -> Option<&String> {
        match key {
            "data_dir" => self.data_dir.as_ref(),
            "http" => self.http.as_ref(),
            "sqlite_sync" => self.sqlite_sync.as_ref(),
            "log" => self.log.as_ref(),
            "dev_institution" => self.dev_institution.as_ref(),
            "auth" => self.auth.as_ref(),
            "stow_max_bytes" => self.stow_max_bytes.as_ref(),
            "public_url" => self.public_url.as_ref(),
            "http_header_timeout_secs" => self.http_header_timeout_secs.as_ref(),
            "http_body_idle_timeout_secs" => self.http_body_idle_timeout_secs.as_ref(),
            "http_idle_timeout_secs" => self.http_idle_timeout_secs.as_ref(),
            "dimse" => self.dimse.as_ref(),
            "dimse_ae_title" => self.dimse_ae_title.as_ref(),
            "dimse_ae_map" => self.dimse_ae_map.as_ref(),
            "stabilize_after_secs" => self.stabilize_after_secs.as_ref(),
            "consult_lead_minutes" => self.consult_lead_minutes.as_ref(),
            "jwt_secret" => self.jwt_secret.as_ref(),
            "jwt_jwks" => self.jwt_jwks.as_ref(),
            "ort_dylib" => self.ort_dylib.as_ref(),
            "inference_models" => self.inference_models.as_ref(),
            "inference_workers" => self.inference_workers.as_ref(),
            "inference_queue" => self.inference_queue.as_ref(),
            "inference_threads" => self.inference_threads.as_ref(),
            "database_url" => self.database_url.as_ref(),
            "read_models_url" => self.read_models_url.as_ref(),
            "kafka_brokers" => self.kafka_brokers.as_ref(),
            "kafka_topic_prefix" => self.kafka_topic_prefix.as_ref(),
            "kafka_partitions" => self.kafka_partitions.as_ref(),
            "kafka_replication" => self.kafka_replication.as_ref(),
            "blob_dir" => self.blob_dir.as_ref(),
            "blob_url" => self.blob_url.as_ref(),
            "patient_key" => self.patient_key.as_ref(),
            "deid_key" => self.deid_key.as_ref(),
            _ => None,
        }
    }
}

/// `public_url`: empty, or an absolute http(s) URL with a host and no query or fragment; the
/// trailing slash is dropped, so paths are appended as `{url}/dicom-web/...`.
fn parse_public_url(v: &str) -> Result<Option<String>, &'static str> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or("it must start with http:// or https://")?;
    if rest.contains(['?', '#']) {
        return Err("no query or fragment");
    }
    if rest.split('/').next().unwrap_or("").is_empty() {
        return Err("no host");
    }
    if rest.contains(char::is_whitespace) {
        return Err("no spaces");
    }
    Ok(Some(v.trim_end_matches('/').to_owned()))
}

impl Config {
    /// Resolves flags over the process environment over the optional file over defaults.
    pub fn load(flags: &ConfigFlags) -> Result<Config, ConfigError> {
        Config::resolve(flags, |k| std::env::var(k).ok())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn resolve(
        flags: &ConfigFlags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file_path = flags
            .config
            .clone()
            .or_else(|| env("HUB_CONFIG").map(PathBuf::from));
        let file = match &file_path {
            Some(p) => read_file(p)?,
            None => BTreeMap::new(),
        };
        let mut values: BTreeMap<&'static str, (String, Source)> = BTreeMap::new();
        for key in KEYS {
            let chosen = if let Some(v) = flags.get(key.name) {
                (v.clone(), Source::Flag(key.flag))
            } else if let Some(v) = env(key.env) {
                (v, Source::Env(key.env))
            } else if let (Some(v), Some(p)) = (file.get(key.name), &file_path) {
                (v.clone(), Source::File(p.clone()))
            } else {
                (key.default.to_owned(), Source::Default)
            };
            values.insert(key.name, chosen);
        }
        let get = |name: &'static str| -> Result<(&str, &Source, &Key), ConfigError> {
            let key = KEYS.iter().find(|k| k.name == name).ok_or_else(|| {
                ConfigError(format!("internal: unknown configuration key {name}"))
            })?;
            let (v, s) = values
                .get(name)
                .ok_or_else(|| ConfigError(format!("internal: no value for {name}")))?;
            Ok((v.as_str(), s, key))
        };
        let bad = |key: &Key, value: &str, source: &Source, why: String| {
            ConfigError(format!(
                "`{}` (from {source}) must be {}; got {value:?}{why}",
                key.name, key.expected
            ))
        };

        let (v, s, k) = get("data_dir")?;
        if v.trim().is_empty() {
            return Err(bad(k, v, s, String::new()));
        }
        let data_dir = PathBuf::from(v);

        let (v, s, k) = get("http")?;
        let http: SocketAddr = v.parse().map_err(|_| bad(k, v, s, String::new()))?;

        let (v, s, k) = get("public_url")?;
        let public_url = parse_public_url(v).map_err(|why| bad(k, v, s, format!(" ({why})")))?;

        let (v, s, k) = get("sqlite_sync")?;
        let sqlite_sync: SqliteSync = v.parse().map_err(|_| bad(k, v, s, String::new()))?;

        let (v, s, k) = get("log")?;
        tracing_subscriber::EnvFilter::try_new(v).map_err(|e| bad(k, v, s, format!(" ({e})")))?;
        let log = v.to_owned();

        let (v, s, k) = get("dev_institution")?;
        if v.is_empty()
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(k, v, s, String::new()));
        }
        let dev_institution = v.to_owned();

        let (v, s, k) = get("auth")?;
        let auth = match v {
            "jwt" => AuthMode::Jwt,
            "development" => AuthMode::Development,
            _ => return Err(bad(k, v, s, String::new())),
        };

        let (v, s, k) = get("stow_max_bytes")?;
        let stow_max_bytes: u64 = v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(k, v, s, String::new()))?;

        let timeout = |name: &'static str| -> Result<std::time::Duration, ConfigError> {
            let (v, s, k) = get(name)?;
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|secs| (0.1..=3600.0).contains(secs))
                .map(std::time::Duration::from_secs_f64)
                .ok_or_else(|| bad(k, v, s, String::new()))
        };
        let http_header_timeout = timeout("http_header_timeout_secs")?;
        let http_body_idle_timeout = timeout("http_body_idle_timeout_secs")?;
        let http_idle_timeout = timeout("http_idle_timeout_secs")?;

        let (v, s, k) = get("dimse")?;
        let dimse: SocketAddr = v.parse().map_err(|_| bad(k, v, s, String::new()))?;

        let (v, s, k) = get("dimse_ae_title")?;
        let ae_ok = |ae: &str| (1..=16).contains(&ae.len()) && !ae.contains('\\') && ae.is_ascii();
        if !ae_ok(v.trim()) {
            return Err(bad(k, v, s, String::new()));
        }
        let dimse_ae_title = v.trim().to_owned();

        let (v, s, k) = get("dimse_ae_map")?;
        let mut dimse_ae_map = BTreeMap::new();
        for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.split_once('=') {
                Some((ae, inst)) if ae_ok(ae.trim()) && !inst.trim().is_empty() => {
                    dimse_ae_map.insert(ae.trim().to_owned(), inst.trim().to_owned());
                }
                _ => return Err(bad(k, v, s, format!(" (entry {entry:?})"))),
            }
        }

        let (v, s, k) = get("stabilize_after_secs")?;
        let stabilize_after = v
            .parse::<f64>()
            .ok()
            .filter(|secs| secs.is_finite() && *secs > 0.0 && *secs < 1e9)
            .map(std::time::Duration::from_secs_f64)
            .ok_or_else(|| bad(k, v, s, String::new()))?;

        let (v, s, k) = get("consult_lead_minutes")?;
        let consult_lead = v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|m| (0..=1440).contains(m))
            .map(chrono::Duration::minutes)
            .ok_or_else(|| bad(k, v, s, String::new()))?;

        let (v, secret_source, k) = get("jwt_secret")?;
        let jwt_secret = if v.is_empty() {
            None
        } else if v.len() < MIN_SECRET_BYTES {
            // Never the value itself: it is a secret, even a bad one.
            return Err(ConfigError(format!(
                "`{}` (from {secret_source}) must be {}; got {} bytes",
                k.name,
                k.expected,
                v.len()
            )));
        } else {
            Some(Secret(v.to_owned()))
        };

        let (v, jwks_source, k) = get("jwt_jwks")?;
        let v = v.trim();
        let jwt_jwks = if v.is_empty() {
            None
        } else if let Some(rest) = v.strip_prefix("http://") {
            if rest.is_empty() {
                return Err(bad(k, v, jwks_source, String::new()));
            }
            Some(JwksSource::Url(v.to_owned()))
        } else if v.starts_with("https://") {
            return Err(bad(
                k,
                v,
                jwks_source,
                " (https is not fetched: the hub has no TLS client; use the identity \
                 provider's in-cluster http:// endpoint or a saved file)"
                    .into(),
            ));
        } else if v.contains("://") {
            return Err(bad(k, v, jwks_source, String::new()));
        } else {
            Some(JwksSource::File(PathBuf::from(v)))
        };
        if jwt_secret.is_some() && jwt_jwks.is_some() {
            return Err(ConfigError(format!(
                "`jwt_secret` (from {secret_source}) and `jwt_jwks` (from {jwks_source}) are both \
                 set; set one: `jwt_secret` for HS256 tokens, `jwt_jwks` for RS256 tokens from an \
                 identity provider"
            )));
        }

        let (v, _, _) = get("ort_dylib")?;
        let ort_dylib = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));

        let (v, s, k) = get("inference_models")?;
        if v.trim().is_empty() {
            return Err(bad(k, v, s, String::new()));
        }
        let inference_models = PathBuf::from(v.trim());

        let count = |name: &'static str, max: usize| -> Result<usize, ConfigError> {
            let (v, s, k) = get(name)?;
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| bad(k, v, s, String::new()))
        };
        let inference_workers = count("inference_workers", 64)?;
        let inference_queue = count("inference_queue", 1024)?;
        let inference_threads = count("inference_threads", 64)?;

        let postgres_url = |name: &'static str| -> Result<Option<Secret>, ConfigError> {
            let (v, s, k) = get(name)?;
            let v = v.trim();
            if v.is_empty() {
                Ok(None)
            } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
                Ok(Some(Secret(v.to_owned())))
            } else {
                // The URL may carry a password: name the scheme only.
                let scheme = v.split("://").next().unwrap_or("");
                Err(ConfigError(format!(
                    "`{}` (from {s}) must be {}; got a value with scheme {scheme:?}",
                    k.name, k.expected
                )))
            }
        };
        let database_url = postgres_url("database_url")?;
        let read_models_url = postgres_url("read_models_url")?;

        let (v, s, k) = get("kafka_topic_prefix")?;
        let prefix = v.trim();
        if prefix.is_empty()
            || prefix.len() > 100
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad(k, v, s, String::new()));
        }
        let topic_prefix = prefix.to_owned();
        let kafka_partitions = count("kafka_partitions", 1024)? as i32;
        let kafka_replication = count("kafka_replication", 16)? as i32;
        let (v, s, k) = get("kafka_brokers")?;
        let brokers: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.iter().any(|b| {
            b.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        }) {
            return Err(bad(k, v, s, String::new()));
        }
        let kafka = (!brokers.is_empty()).then(|| hub_events::kafka::KafkaConfig {
            brokers: brokers.join(","),
            topic_prefix,
            partitions: kafka_partitions,
            replication: kafka_replication,
        });

        let (v, _, _) = get("blob_dir")?;
        let blob_dir = if v.trim().is_empty() {
            data_dir.join("blobs")
        } else {
            PathBuf::from(v.trim())
        };

        let (v, s, k) = get("blob_url")?;
        let v = v.trim();
        let blob_url = if v.is_empty() {
            None
        } else if v
            .strip_prefix("s3://")
            .is_some_and(|rest| !rest.split('/').next().unwrap_or("").is_empty())
        {
            Some(v.to_owned())
        } else {
            return Err(bad(k, v, s, String::new()));
        };

        let secret = |name: &'static str| -> Result<Option<Secret>, ConfigError> {
            let (v, s, k) = get(name)?;
            if v.is_empty() {
                Ok(None)
            } else if v.len() < MIN_SECRET_BYTES {
                Err(ConfigError(format!(
                    "`{}` (from {s}) must be {}; got {} bytes",
                    k.name,
                    k.expected,
                    v.len()
                )))
            } else {
                Ok(Some(Secret(v.to_owned())))
            }
        };
        let patient_key = secret("patient_key")?;
        let deid_key = secret("deid_key")?;

        Ok(Config {
            database_url,
            read_models_url,
            kafka,
            blob_dir,
            blob_url,
            patient_key,
            deid_key,
            data_dir,
            http,
            sqlite_sync,
            log,
            dev_institution,
            auth,
            stow_max_bytes,
            public_url,
            http_header_timeout,
            http_body_idle_timeout,
            http_idle_timeout,
            dimse,
            dimse_ae_title,
            dimse_ae_map,
            stabilize_after,
            consult_lead,
            jwt_secret,
            jwt_jwks,
            ort_dylib,
            inference_models,
            inference_workers,
            inference_queue,
            inference_threads,
        })
    }

    /// The HTTP server's time limits.
    pub fn http_limits(&self) -> hub_gateway::server::ConnectionLimits {
        hub_gateway::server::ConnectionLimits {
            header_timeout: self.http_header_timeout,
            body_idle_timeout: self.http_body_idle_timeout,
            idle_timeout: self.http_idle_timeout,
        }
    }

    pub fn events_db(&self) -> PathBuf {
        self.data_dir.join("events.sqlite")
    }

    pub fn read_models_db(&self) -> PathBuf {
        self.data_dir.join("readmodels.sqlite")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.data_dir.join("hub.lock")
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    let table: toml::Table = text.parse().map_err(|e| {
        ConfigError(format!(
            "config file {} is not valid TOML: {e}",
            path.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let Some(key) = KEYS.iter().find(|k| k.name == name) else {
            let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            return Err(ConfigError(format!(
                "unknown key `{name}` in config file {}; known keys: {}",
                path.display(),
                known.join(", ")
            )));
        };
        let toml::Value::String(s) = value else {
            let got = if name == "jwt_secret" {
                format!("a TOML {}", value.type_str())
            } else {
                value.to_string()
            };
            return Err(ConfigError(format!(
                "`{name}` (from config file {}) must be {}, written as a TOML string; got {got}",
                path.display(),
                key.expected
            )));
        };
        out.insert(name, s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults are valid");
        assert_eq!(c.http, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.sqlite_sync, SqliteSync::Full);
    }

    #[test]
    fn inference_is_off_by_default_and_its_keys_are_checked() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults are valid");
        assert_eq!(c.ort_dylib, None);
        assert_eq!(
            (c.inference_workers, c.inference_queue, c.inference_threads),
            (2, 8, 1)
        );
        let env = |k: &str| match k {
            "ORT_DYLIB_PATH" => Some("/opt/ort/libonnxruntime.so.1.32.0".to_string()),
            "HUB_INFERENCE_WORKERS" => Some("4".to_string()),
            _ => None,
        };
        let c = Config::resolve(&ConfigFlags::default(), env).expect("valid");
        assert_eq!(
            c.ort_dylib,
            Some(PathBuf::from("/opt/ort/libonnxruntime.so.1.32.0"))
        );
        assert_eq!(c.inference_workers, 4);
        let flags = ConfigFlags {
            inference_queue: Some("0".into()),
            ..ConfigFlags::default()
        };
        let msg = Config::resolve(&flags, no_env)
            .expect_err("a queue of 0")
            .to_string();
        assert!(
            msg.contains("`inference_queue`") && msg.contains("--inference-queue"),
            "{msg}"
        );
    }

    #[test]
    fn the_http_time_limits_default_and_refuse_what_is_not_seconds() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults are valid");
        let limits = c.http_limits();
        assert_eq!(limits.header_timeout, std::time::Duration::from_secs(30));
        assert_eq!(limits.body_idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(limits.idle_timeout, std::time::Duration::from_secs(120));
        let env = |k: &str| (k == "HUB_HTTP_BODY_IDLE_TIMEOUT_SECS").then(|| "2.5".to_string());
        let c = Config::resolve(&ConfigFlags::default(), env).expect("valid");
        assert_eq!(
            c.http_body_idle_timeout,
            std::time::Duration::from_millis(2500)
        );
        for bad in ["0", "-1", "soon", "7200"] {
            let flags = ConfigFlags {
                http_header_timeout_secs: Some(bad.into()),
                ..ConfigFlags::default()
            };
            let msg = Config::resolve(&flags, no_env)
                .expect_err("not a timeout")
                .to_string();
            assert!(
                msg.contains("`http_header_timeout_secs`")
                    && msg.contains("--http-header-timeout-secs"),
                "{msg}"
            );
        }
    }

    #[test]
    fn flags_win_over_environment_over_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hub.toml");
        std::fs::write(
            &file,
            "http = \"127.0.0.1:1\"\ndata_dir = \"/from/file\"\nsqlite_sync = \"normal\"\n",
        )
        .expect("write");
        let flags = ConfigFlags {
            http: Some("127.0.0.1:3".into()),
            config: Some(file),
            ..ConfigFlags::default()
        };
        let env = |k: &str| match k {
            "HUB_HTTP" => Some("127.0.0.1:2".to_string()),
            "HUB_DATA_DIR" => Some("/from/env".to_string()),
            _ => None,
        };
        let c = Config::resolve(&flags, env).expect("valid");
        assert_eq!(c.http, "127.0.0.1:3".parse().expect("addr"));
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.sqlite_sync, SqliteSync::Normal);
    }

    #[test]
    fn the_consult_lead_defaults_to_30_minutes_and_refuses_what_is_not_minutes() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults");
        assert_eq!(c.consult_lead, chrono::Duration::minutes(30));
        let env = |k: &str| (k == "HUB_CONSULT_LEAD_MINUTES").then(|| "0".to_string());
        let c = Config::resolve(&ConfigFlags::default(), env).expect("zero is allowed");
        assert_eq!(c.consult_lead, chrono::Duration::zero());
        for bad in ["-5", "90s", "1441"] {
            let flags = ConfigFlags {
                consult_lead_minutes: Some(bad.into()),
                ..ConfigFlags::default()
            };
            let msg = Config::resolve(&flags, no_env)
                .expect_err("bad lead")
                .to_string();
            assert!(
                msg.contains("`consult_lead_minutes`") && msg.contains("--consult-lead-minutes"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_bad_value_names_the_key_its_source_and_what_is_expected() {
        let env = |k: &str| (k == "HUB_HTTP").then(|| "localhost".to_string());
        let err = Config::resolve(&ConfigFlags::default(), env).expect_err("bad http");
        let msg = err.to_string();
        assert!(msg.contains("`http`") && msg.contains("HUB_HTTP"), "{msg}");
        assert!(
            msg.contains("127.0.0.1:8080") && msg.contains("\"localhost\""),
            "{msg}"
        );

        let flags = ConfigFlags {
            sqlite_sync: Some("sometimes".into()),
            ..ConfigFlags::default()
        };
        let msg = Config::resolve(&flags, no_env)
            .expect_err("bad sync")
            .to_string();
        assert!(
            msg.contains("`sqlite_sync`") && msg.contains("--sqlite-sync"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_config_file_is_refused_with_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hub.toml");
        let flags = ConfigFlags {
            config: Some(file.clone()),
            ..ConfigFlags::default()
        };
        std::fs::write(&file, "htp = \"127.0.0.1:1\"\n").expect("write");
        let msg = Config::resolve(&flags, no_env)
            .expect_err("typo")
            .to_string();
        assert!(
            msg.contains("unknown key `htp`") && msg.contains("http"),
            "{msg}"
        );
        std::fs::write(&file, "http = 8080\n").expect("write");
        let msg = Config::resolve(&flags, no_env)
            .expect_err("type")
            .to_string();
        assert!(
            msg.contains("`http`") && msg.contains("TOML string"),
            "{msg}"
        );
        std::fs::write(&file, "http = \n").expect("write");
        let msg = Config::resolve(&flags, no_env)
            .expect_err("syntax")
            .to_string();
        assert!(msg.contains("not valid TOML"), "{msg}");
    }

    #[test]
    fn jwt_keys_are_layered_and_the_secret_is_never_printed() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults");
        assert_eq!((c.jwt_secret, c.jwt_jwks), (None, None));

        let secret = "s3cret-s3cret-s3cret-s3cret-s3cret";
        let env = |k: &str| (k == "HUB_JWT_SECRET").then(|| secret.to_string());
        let c = Config::resolve(&ConfigFlags::default(), env).expect("secret");
        assert_eq!(
            c.jwt_secret.as_ref().map(Secret::expose),
            Some(secret.as_bytes())
        );
        assert!(!format!("{c:?}").contains(secret), "Debug shows the secret");

        let flags = ConfigFlags {
            jwt_secret: Some("short-s3cret".into()),
            ..ConfigFlags::default()
        };
        let msg = Config::resolve(&flags, env).expect_err("short").to_string();
        assert!(
            msg.contains("`jwt_secret`") && msg.contains("--jwt-secret"),
            "{msg}"
        );
        assert!(
            msg.contains("at least 32 bytes") && msg.contains("got 12 bytes"),
            "{msg}"
        );
        assert!(
            !msg.contains("short-s3cret"),
            "the error shows the secret: {msg}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hub.toml");
        std::fs::write(&file, "jwt_secret = 1234567\n").expect("write");
        let flags = ConfigFlags {
            config: Some(file),
            ..ConfigFlags::default()
        };
        let msg = Config::resolve(&flags, no_env)
            .expect_err("type")
            .to_string();
        assert!(
            msg.contains("`jwt_secret`") && !msg.contains("1234567"),
            "{msg}"
        );
    }

    #[test]
    fn jwt_jwks_is_a_file_or_an_http_url_and_excludes_a_secret() {
        let jwks = |v: &'static str| move |k: &str| (k == "HUB_JWT_JWKS").then(|| v.to_string());
        let c = Config::resolve(&ConfigFlags::default(), jwks("/etc/hub/jwks.json")).expect("file");
        assert_eq!(
            c.jwt_jwks,
            Some(JwksSource::File(PathBuf::from("/etc/hub/jwks.json")))
        );
        let url = "http://keycloak:8080/realms/hub/protocol/openid-connect/certs";
        let c = Config::resolve(&ConfigFlags::default(), jwks(url)).expect("url");
        assert_eq!(c.jwt_jwks, Some(JwksSource::Url(url.into())));

        let msg = Config::resolve(&ConfigFlags::default(), jwks("https://idp/certs"))
            .expect_err("https")
            .to_string();
        assert!(
            msg.contains("`jwt_jwks`") && msg.contains("HUB_JWT_JWKS") && msg.contains("TLS"),
            "{msg}"
        );
        let msg = Config::resolve(&ConfigFlags::default(), jwks("ftp://idp/certs"))
            .expect_err("ftp")
            .to_string();
        assert!(msg.contains("http:// URL"), "{msg}");

        let flags = ConfigFlags {
            jwt_secret: Some("s3cret-s3cret-s3cret-s3cret-s3cret".into()),
            ..ConfigFlags::default()
        };
        let msg = Config::resolve(&flags, jwks("/etc/hub/jwks.json"))
            .expect_err("both")
            .to_string();
        assert!(
            msg.contains("both") && msg.contains("--jwt-secret") && msg.contains("HUB_JWT_JWKS"),
            "{msg}"
        );
    }

    #[test]
    fn public_url_is_an_http_url_without_its_trailing_slash_and_a_bad_one_names_the_key() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults");
        assert_eq!(c.public_url, None, "the default is the Host header");
        let url = |v: &'static str| move |k: &str| (k == "HUB_PUBLIC_URL").then(|| v.to_string());
        for (given, kept) in [
            (
                "https://imaging.example.org/hub/",
                "https://imaging.example.org/hub",
            ),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
        ] {
            let c = Config::resolve(&ConfigFlags::default(), url(given)).expect(given);
            assert_eq!(c.public_url.as_deref(), Some(kept));
        }
        for bad in [
            "imaging.example.org",
            "ftp://imaging.example.org",
            "https://",
            "https:///hub",
            "https://imaging.example.org/hub?x=1",
            "https://imaging.example.org/#top",
        ] {
            let msg = Config::resolve(&ConfigFlags::default(), url(bad))
                .expect_err(bad)
                .to_string();
            assert!(
                msg.contains("public_url") && msg.contains("HUB_PUBLIC_URL"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn blob_url_is_an_s3_bucket_or_unset_and_a_bad_one_names_the_key() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults");
        assert_eq!(
            c.blob_url, None,
            "the embedded default is the blob directory"
        );
        let url = |v: &'static str| move |k: &str| (k == "HUB_BLOB_URL").then(|| v.to_string());
        let c = Config::resolve(&ConfigFlags::default(), url("s3://hub-blobs/originals"))
            .expect("an S3 bucket with a prefix");
        assert_eq!(c.blob_url.as_deref(), Some("s3://hub-blobs/originals"));
        for bad in ["/var/lib/blobs", "s3://", "s3:///prefix", "gs://bucket"] {
            let msg = Config::resolve(&ConfigFlags::default(), url(bad))
                .expect_err(bad)
                .to_string();
            assert!(
                msg.contains("blob_url") && msg.contains("HUB_BLOB_URL") && msg.contains("s3://"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn read_models_url_is_postgres_or_unset_and_a_bad_one_names_the_key_not_the_password() {
        let c = Config::resolve(&ConfigFlags::default(), no_env).expect("defaults");
        assert_eq!(c.read_models_url, None, "the default is per-process SQLite");
        let url =
            |v: &'static str| move |k: &str| (k == "HUB_READ_MODELS_URL").then(|| v.to_string());
        let c = Config::resolve(
            &ConfigFlags::default(),
            url("postgres://hub:pw@db:5432/readmodels"),
        )
        .expect("a PostgreSQL URL");
        assert_eq!(
            c.read_models_url.as_ref().map(Secret::expose_str),
            Some("postgres://hub:pw@db:5432/readmodels")
        );
        let msg = Config::resolve(&ConfigFlags::default(), url("mysql://hub:s3cret@db/rm"))
            .expect_err("not PostgreSQL")
            .to_string();
        assert!(
            msg.contains("read_models_url") && msg.contains("HUB_READ_MODELS_URL"),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"), "the password is printed: {msg}");
    }
}
