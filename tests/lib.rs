//! Helpers for the end-to-end tests in `tests/e2e_*.rs`: they run the built `hub` binary as a
//! user would, on a free port and a temporary data directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `hub` binary of this build (`target/<profile>/hub`), built by `tests/run.sh` (or
/// `cargo build -p hub`) before the tests run.
pub fn hub_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/hub
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("hub"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p hub` (tests/run.sh does)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs `hub ARGS` to completion.
pub fn hub(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(hub_binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run hub")
}

/// A running `hub serve`, stopped with SIGTERM (and killed if it does not stop) on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The DIMSE (C-ECHO, C-STORE) address; AE title `HUB`.
    pub dimse: SocketAddr,
    pub data_dir: PathBuf,
    /// A `hub_admin` token: the tests read the event log as the hub's operator.
    pub operator: String,
}

impl Server {
    /// Starts `hub serve` where requests without a token act as the development identity (a
    /// hospital_admin of `dev-hospital`): the DICOM conformance tests drive it with clients
    /// that send no token.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// [`Server::start`] with extra flags.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--auth", "development"];
        args.extend_from_slice(extra);
        Server::start_secure(data_dir, &args)
    }

    /// Starts `hub serve` as deployed: every request needs a bearer token.
    pub fn start_secure(data_dir: &Path, extra: &[&str]) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let dimse: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new(hub_binary())
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--http", &addr.to_string(), "--dimse", &dimse.to_string()])
            .args(extra)
            .env("HUB_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hub serve");
        let mut server = Server {
            child,
            addr,
            dimse,
            data_dir: data_dir.to_owned(),
            operator: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = server.try_get("/healthz") {
                server.operator = server.token("operator", "hub_admin", "hub");
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "hub serve did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_request(self.addr, "GET", path, Some(&self.operator), None)
    }

    /// A development token from `hub token`, signed with this data directory's secret.
    pub fn token(&self, sub: &str, role: &str, institution: &str) -> String {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let out = hub(
            &[
                "token",
                "--data-dir",
                &data_dir,
                "--sub",
                sub,
                "--role",
                role,
                "--institution",
                institution,
            ],
            &[],
        );
        assert!(
            out.status.success(),
            "hub token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).expect("HTTP GET")
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hub serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET (no client library needed for a status line and a body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, None, None)
}

/// A minimal HTTP/1.1 request with an optional bearer token and JSON body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if json.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    let answer = exchange(addr, &head, json.unwrap_or("").as_bytes())?;
    Ok((
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    ))
}

/// An HTTP answer as [`exchange`] read it.
pub struct Answer {
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `head` (request line and headers, each ending in CRLF, no blank line; a
/// Content-Length is added for a non-empty `body`) and `body`, and reads the whole answer.
pub fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    stream.write_all(format!("{head}{length}\r\n").as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = raw.get(split + 4..).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok(Answer {
        status,
        body: if chunked {
            dechunk(rest)
        } else {
            rest.to_vec()
        },
        head,
    })
}

/// STOW-RS of Part 10 `instances` in one multipart/related request, as the development
/// identity (no token) or with `token`.
pub fn stow(
    addr: SocketAddr,
    token: Option<&str>,
    instances: &[Vec<u8>],
) -> std::io::Result<Answer> {
    let boundary = "e2eboundary";
    let mut body = Vec::new();
    for instance in instances {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(instance);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut head = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={boundary}\r\n\
         Accept: application/dicom+json\r\n"
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    exchange(addr, &head, &body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..end]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &body[end + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}
