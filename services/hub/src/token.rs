//! `hub token`: mints HS256 development tokens; and where the hub's token keys come from.
//!
//! Which tokens a hub accepts follows from its configuration:
//!
//! - `jwt_jwks` set: RS256 tokens of an identity provider (production). The hub holds only the
//!   public keys; `hub token` refuses to mint.
//! - `jwt_secret` set: HS256 tokens signed with that secret.
//! - neither (the development default): HS256 with a random secret generated once and kept in
//!   `<data_dir>/jwt.secret` (mode 0600). `hub token` reads the same file, so a token it prints
//!   is accepted by a `hub serve` on the same data directory with no setup.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use hub_gateway::token::{Claims, Role, TokenVerifier, mint_hs256};

use crate::config::{Config, ConfigFlags, JwksSource, MIN_SECRET_BYTES};

/// The development secret's file name inside the data directory.
pub const SECRET_FILE: &str = "jwt.secret";

/// Longest `--ttl` accepted.
const MAX_TTL_DAYS: i64 = 365;

/// `hub token`: prints a signed HS256 token, alone on stdout.
#[derive(clap::Args)]
pub struct TokenArgs {
    /// Who the token is for: a user name; for role `patient`, the regional patient id (the keyed
    /// hash, never a national id)
    #[arg(long, value_name = "SUBJECT")]
    pub sub: String,
    /// hospital_admin, radiologist, physician, patient, commission_analyst, ai_service or
    /// hub_admin
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// The institution the bearer acts for (for a patient: the one that issued the login)
    #[arg(long, value_name = "ID")]
    pub institution: String,
    /// How long the token is valid: a whole number with s, m, h or d, such as 30m, 8h or 7d
    #[arg(long, value_parser = parse_ttl, default_value = "8h")]
    pub ttl: chrono::Duration,
    /// Display name, for audit lines and user interfaces
    #[arg(long)]
    pub name: Option<String>,
    /// Sign with this secret instead of the configured one (`jwt_secret`, else DATA/jwt.secret)
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    #[command(flatten)]
    pub config: ConfigFlags,
}

/// `hub token`.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let token = mint(&args, &config)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}").context("cannot write the token to stdout")?;
    Ok(())
}

/// The token `hub token` prints for `args` under `config`.
fn mint(args: &TokenArgs, config: &Config) -> anyhow::Result<String> {
    let secret = match &args.secret {
        Some(s) if s.len() < MIN_SECRET_BYTES => bail!(
            "--secret must be at least {MIN_SECRET_BYTES} bytes (the hub refuses shorter \
             secrets); got {} bytes",
            s.len()
        ),
        Some(s) => s.as_bytes().to_vec(),
        None => signing_secret(config)?,
    };
    if args.sub.trim().is_empty() {
        bail!("--sub must not be empty");
    }
    if args.institution.trim().is_empty() {
        bail!("--institution must not be empty");
    }
    let mut claims = Claims::new(&args.sub, args.role, &args.institution, args.ttl);
    claims.name = args.name.clone();
    Ok(mint_hs256(&secret, &claims)?)
}

/// The HS256 secret this configuration signs and verifies with.
fn signing_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.expose().to_vec());
    }
    if let Some(jwks) = &config.jwt_jwks {
        bail!(
            "this hub verifies RS256 tokens with the keys of `jwt_jwks` ({jwks}), and `hub token` \
             mints HS256 development tokens only: get a token from the identity provider, or \
             pass --secret to mint for another hub that uses that secret"
        );
    }
    load_or_create_secret(&config.data_dir)
}

/// The verifier of bearer tokens this configuration describes: RS256 with the keys of
/// `jwt_jwks` (read now: a URL is fetched once), else HS256 with `jwt_secret`, else HS256 with
/// the development secret of `<data_dir>/jwt.secret` (created if missing).
pub async fn load_verifier(config: &Config) -> anyhow::Result<TokenVerifier> {
    match &config.jwt_jwks {
        Some(JwksSource::File(path)) => TokenVerifier::rs256_from_jwks_file(path)
            .context("cannot load the token keys (config key `jwt_jwks`)"),
        Some(JwksSource::Url(url)) => TokenVerifier::rs256_from_jwks_url(url)
            .await
            .context("cannot load the token keys (config key `jwt_jwks`)"),
        None => Ok(TokenVerifier::hs256(&signing_secret(config)?)),
    }
}

/// The development HS256 secret of `data_dir`: read from `<data_dir>/jwt.secret`, or generated
/// (32 random bytes, written as 64 hex digits) and stored there with mode 0600 the first time.
/// The secret is the file's text, so `HUB_JWT_SECRET=$(cat DATA/jwt.secret)` is the same secret.
///
/// Two processes starting at once agree: the file is written aside and linked into place only
/// if no other process got there first. A file readable by other users is refused.
pub fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    data_dir_secret(data_dir, SECRET_FILE)
}

/// A secret of the embedded hub kept in `<data_dir>/<file>` (the token secret, the patient-id
/// key, the de-identification key), created as [`load_or_create_secret`] describes.
pub fn data_dir_secret(data_dir: &Path, file: &str) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join(file);
    if let Some(secret) = read_secret(&path)? {
        return Ok(secret);
    }
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "cannot create data directory {} (config key `data_dir`)",
            data_dir.display()
        )
    })?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system gave no random bytes: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();

    // tempfile creates the file with mode 0600 and links it into place without replacing.
    let mut staged = tempfile::Builder::new()
        .prefix(&format!(".{file}."))
        .tempfile_in(data_dir)
        .with_context(|| format!("cannot write in {}", data_dir.display()))?;
    staged
        .write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| staged.as_file().sync_all())
        .with_context(|| format!("cannot write {}", staged.path().display()))?;
    match staged.persist_noclobber(&path) {
        Ok(_) => {
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            Ok(hex.into_bytes())
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process created it meanwhile: use theirs.
            read_secret(&path)?.with_context(|| format!("{} vanished", path.display()))
        }
        Err(e) => Err(e.error).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The secret in `path`, `None` if there is no such file.
fn read_secret(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by other users (mode {:04o}): anyone who reads it can mint tokens; \
                 run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
    let secret = text.trim();
    if secret.len() < MIN_SECRET_BYTES {
        bail!(
            "{} holds no usable secret (fewer than {MIN_SECRET_BYTES} characters); delete it and \
             a new one is generated (tokens signed with the old one stop verifying)",
            path.display()
        );
    }
    Ok(Some(secret.as_bytes().to_vec()))
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: hub_policies::UnknownRole| e.to_string())
}

/// `30m`, `8h`, `7d` (and `45s`): a whole number greater than 0 and a unit, at most 365 days.
fn parse_ttl(s: &str) -> Result<chrono::Duration, String> {
    let bad = || {
        format!(
            "{s:?} is not a token lifetime: expected a whole number greater than 0 followed by \
             s, m, h or d, such as 30m, 8h or 7d (at most {MAX_TTL_DAYS}d)"
        )
    };
    let unit_at = s.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = (
        s.get(..unit_at).ok_or_else(bad)?,
        s.get(unit_at..).ok_or_else(bad)?,
    );
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(seconds_per).ok_or_else(bad)?;
    if secs <= 0 || secs > MAX_TTL_DAYS * 86_400 {
        return Err(bad());
    }
    chrono::Duration::try_seconds(secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        let flags = ConfigFlags {
            data_dir: Some(dir.display().to_string()),
            ..ConfigFlags::default()
        };
        Config::resolve(&flags, |_| None).expect("config")
    }

    fn args(config: ConfigFlags) -> TokenArgs {
        TokenArgs {
            sub: "alice".into(),
            role: Role::Radiologist,
            institution: "hosp-a".into(),
            ttl: chrono::Duration::hours(8),
            name: Some("Dr Alice".into()),
            secret: None,
            config,
        }
    }

    #[test]
    fn ttl_accepts_seconds_minutes_hours_days() {
        for (s, secs) in [
            ("45s", 45),
            ("30m", 1800),
            ("8h", 8 * 3600),
            ("7d", 7 * 86_400),
            ("365d", 365 * 86_400),
        ] {
            assert_eq!(parse_ttl(s).expect(s).num_seconds(), secs, "{s}");
        }
    }

    #[test]
    fn a_bad_ttl_is_refused_naming_it() {
        for s in [
            "",
            "8",
            "h",
            "8x",
            "8H",
            "-1h",
            "+1h",
            "0h",
            "1.5h",
            "8 h",
            " 8h",
            "366d",
            "99999999999999999999d",
            "7д",
        ] {
            let msg = parse_ttl(s).expect_err(s);
            assert!(
                msg.starts_with(&format!("{s:?} is not a token lifetime")),
                "{msg}"
            );
            assert!(msg.contains("30m, 8h or 7d"), "{msg}");
        }
    }

    #[test]
    fn a_bad_role_lists_the_valid_ones() {
        let msg = parse_role("doctor").expect_err("doctor");
        assert!(msg.contains("'doctor'"), "{msg}");
        for role in Role::ALL {
            assert!(msg.contains(role.as_str()), "{msg}");
        }
        assert_eq!(parse_role("ai_service"), Ok(Role::AiService));
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn the_development_secret_is_created_once_0600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data"); // does not exist yet
        let path = data_dir.join(SECRET_FILE);

        let first = load_or_create_secret(&data_dir).expect("create");
        assert_eq!(first.len(), 64, "32 random bytes as hex");
        let text = std::fs::read_to_string(&path).expect("file exists");
        assert_eq!(text.trim().as_bytes(), first.as_slice());
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);

        let second = load_or_create_secret(&data_dir).expect("reuse");
        assert_eq!(second, first);
        assert_eq!(
            std::fs::read_to_string(&path).expect("file"),
            text,
            "rewritten"
        );
        // Nothing staged is left behind.
        let names: Vec<_> = std::fs::read_dir(&data_dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)]);

        // Another data directory gets another secret.
        let other = load_or_create_secret(&dir.path().join("other")).expect("other");
        assert_ne!(other, first);
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create_secret(dir.path()).expect("create");
        let path = dir.path().join(SECRET_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let msg = load_or_create_secret(dir.path())
            .expect_err("0644")
            .to_string();
        assert!(msg.contains("chmod 600") && msg.contains("0644"), "{msg}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "short\n").expect("write");
        let msg = load_or_create_secret(dir.path())
            .expect_err("short")
            .to_string();
        assert!(msg.contains("no usable secret"), "{msg}");
    }

    #[tokio::test]
    async fn a_minted_token_verifies_against_the_hub_of_the_same_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(dir.path());
        let flags = ConfigFlags {
            data_dir: Some(dir.path().display().to_string()),
            ..ConfigFlags::default()
        };
        let token = mint(&args(flags), &config).expect("mint");
        assert!(dir.path().join(SECRET_FILE).exists());
        let claims = load_verifier(&config)
            .await
            .expect("verifier")
            .verify(&token)
            .expect("verify");
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.role,
                claims.institution.as_str()
            ),
            ("alice", Role::Radiologist, "hosp-a")
        );
        assert_eq!(claims.name.as_deref(), Some("Dr Alice"));
        assert_eq!(claims.exp - claims.iat, 8 * 3600);

        // A configured secret wins over the file; --secret over both.
        let secret = "configured-secret-configured-secret";
        let env = |k: &str| (k == "HUB_JWT_SECRET").then(|| secret.to_string());
        let configured =
            Config::resolve(&ConfigFlags::default(), env).expect("config with a secret");
        let token = mint(&args(ConfigFlags::default()), &configured).expect("mint");
        TokenVerifier::hs256(secret.as_bytes())
            .verify(&token)
            .expect("signed with the configured secret");
        let mut explicit = args(ConfigFlags::default());
        explicit.secret = Some("explicit-secret-explicit-secret-explicit".into());
        let token = mint(&explicit, &configured).expect("mint");
        assert!(
            TokenVerifier::hs256(secret.as_bytes())
                .verify(&token)
                .is_err()
        );
        explicit.secret = Some("short".into());
        let msg = mint(&explicit, &configured).expect_err("short").to_string();
        assert!(
            msg.contains("--secret") && msg.contains("32 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn an_rs256_hub_does_not_mint() {
        let env = |k: &str| (k == "HUB_JWT_JWKS").then(|| "/etc/hub/jwks.json".to_string());
        let config = Config::resolve(&ConfigFlags::default(), env).expect("config");
        let msg = mint(&args(ConfigFlags::default()), &config)
            .expect_err("rs256")
            .to_string();
        assert!(msg.contains("RS256") && msg.contains("jwt_jwks"), "{msg}");
    }
}
