//! One signed-in reader must not be able to exhaust `hub serve` (issue 24, class 7): a frame
//! list of thousands of repeats stays in bounded memory, slow clients are cut off while the
//! others are served, every rejection is problem+json naming the parameter, a control character
//! in a UID never reaches the log, and a missing original is a problem before the first byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hub_e2e::{Answer, Server, exchange, http_request, stow};
use hub_inference::synthetic::HeadCt;

/// One 512×512 16-bit CT slice (512 KiB of pixel data).
fn ct(study_uid: &str) -> (HeadCt, Vec<u8>) {
    let ct = HeadCt {
        study_uid: study_uid.into(),
        series_uid: format!("{study_uid}.1"),
        patient_id: "ABUSE-1".into(),
        modality: "CT",
        slices: 1,
        side: 512,
        lesion: None,
    };
    let part10 = ct.instance(0).expect("a synthetic CT slice");
    (ct, part10)
}

fn stored(server: &Server, part10: Vec<u8>) {
    let answer = stow(server.addr, None, &[part10]).expect("STOW-RS");
    assert_eq!(
        answer.status,
        200,
        "STOW-RS: {}",
        String::from_utf8_lossy(&answer.body)
    );
}

fn get(addr: SocketAddr, path: &str, accept: &str) -> Answer {
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: {accept}\r\n");
    exchange(addr, &head, b"").expect("HTTP exchange")
}

/// The peak resident set of process `pid` so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// The issue measured 2.09 GB of peak RSS for 2,000 repeats of frame 1 of this CT: the whole
/// multipart body built in memory. Repeats are now answered once, and the parts are streamed.
#[test]
fn a_frame_list_of_thousands_of_repeats_stays_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let study = "1.2.826.0.1.3680043.10.1437.24.7";
    let (ct, part10) = ct(study);
    stored(&server, part10);
    let sop = ct.sop_instance_uid(0);
    let pid = server.child.id();
    let before = peak_rss_kib(pid);
    let list = vec!["1"; 2000].join(",");
    let path = format!(
        "/dicom-web/studies/{study}/series/{}/instances/{sop}/frames/{list}",
        ct.series_uid
    );
    let started = Instant::now();
    let answer = get(
        server.addr,
        &path,
        "multipart/related; type=\"application/octet-stream\"",
    );
    let took = started.elapsed();
    let after = peak_rss_kib(pid);
    println!(
        "peak RSS of hub serve: {} MiB before, {} MiB after 2,000 repeats of frame 1 ({:?})",
        before / 1024,
        after / 1024,
        took
    );
    assert!(
        after < 200 * 1024,
        "peak RSS {} MiB after the frame request (before: {} MiB)",
        after / 1024,
        before / 1024
    );
    assert_eq!(answer.status, 200, "{}", answer.head);
    let boundary = answer
        .header("content-type")
        .and_then(|c| c.split("boundary=").nth(1))
        .expect("a multipart boundary")
        .to_owned();
    let text = String::from_utf8_lossy(&answer.body);
    let parts = text.matches(&format!("--{boundary}\r\n")).count();
    assert_eq!(parts, 1, "2,000 repeats of frame 1 are answered once");
    assert!(
        answer.body.len() > 512 * 512 * 2,
        "the frame's 512 KiB are served"
    );
    assert!(server.stop().success());
}

/// Reads until the server closes the connection or `limit` passes; returns what was read and
/// whether the server closed it.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Headers trickled in (a line every 300 ms) are cut off at the header timeout, a half-sent
/// body at the body idle timeout, and a keep-alive connection that sends nothing more is closed;
/// meanwhile every other client is answered at once.
#[test]
fn a_slow_client_is_cut_off_and_the_others_are_still_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            "--http-header-timeout-secs",
            "2",
            "--http-body-idle-timeout-secs",
            "1",
            "--http-idle-timeout-secs",
            "3",
        ],
    );
    let addr = server.addr;

    // Trickled headers.
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let started = Instant::now();
        let mut sent = s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes());
        let mut n = 0;
        while sent.is_ok() && started.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(300));
            n += 1;
            sent = s.write_all(format!("X-Slow-{n}: 1\r\n").as_bytes());
            s.set_read_timeout(Some(Duration::from_millis(1))).ok();
            let mut probe = [0u8; 512];
            match s.read(&mut probe) {
                Ok(0) => break,
                Ok(k) => return (started.elapsed(), probe[..k].to_vec()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        (started.elapsed(), Vec::new())
    });
    // Others are served while it trickles.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = http_request(addr, "GET", "/healthz", None, None).expect("GET");
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (took, answer) = trickler.join().expect("trickler");
    assert!(
        took < Duration::from_secs(5),
        "trickled headers held the connection for {took:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "trickled headers were answered: {}",
        String::from_utf8_lossy(&answer)
    );

    // A half-sent STOW-RS body: an answer (the part is truncated) and the connection closed.
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST /dicom-web/studies HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/related; \
         type=\"application/dicom\"; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n\
         Content-Type: application/dicom\r\n\r\nDICM"
    )
    .expect("half a body");
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(8));
    let got = String::from_utf8_lossy(&got);
    assert!(
        closed && started.elapsed() < Duration::from_secs(5),
        "a half-sent body held its connection for {:?}: {got}",
        started.elapsed()
    );
    assert!(
        got.starts_with("HTTP/1.1 "),
        "the half-sent body is answered: {got}"
    );
    let (status, _) = http_request(addr, "GET", "/healthz", None, None).expect("GET");
    assert_eq!(status, 200);

    // A keep-alive connection that sends no next request.
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(8));
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(
        closed && started.elapsed() < Duration::from_secs(5),
        "an idle keep-alive connection stayed open {:?}",
        started.elapsed()
    );
    assert!(server.stop().success());
}

/// A client that asks for a 12 MiB study and then reads nothing loses its connection after the
/// idle timeout, instead of holding it (and the answer being written) for as long as it likes;
/// others are served meanwhile.
#[test]
fn a_client_that_stops_reading_its_answer_loses_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(&dir.path().join("data"), &["--http-idle-timeout-secs", "1"]);
    let study = "1.2.826.0.1.3680043.10.1437.24.9";
    let (ct, _) = ct(study);
    let slices = 24;
    let ct = HeadCt { slices, ..ct };
    let instances: Vec<Vec<u8>> = (0..slices)
        .map(|i| ct.instance(i).expect("a synthetic CT slice"))
        .collect();
    let whole: usize = instances.iter().map(Vec::len).sum();
    let answer = stow(server.addr, None, &instances).expect("STOW-RS");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );

    let addr = server.addr;
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /dicom-web/studies/{study} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Accept: multipart/related; type=\"application/dicom\"\r\n\r\n"
    )
    .expect("request");
    std::thread::sleep(Duration::from_secs(4));
    let (status, _) = http_request(addr, "GET", "/healthz", None, None).expect("GET");
    assert_eq!(status, 200, "others are served");
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(closed, "the connection is closed");
    assert!(
        got.len() < whole,
        "the stalled answer was cut: {} of at least {whole} bytes",
        got.len()
    );
    assert!(server.stop().success());
}

/// Asserts a problem+json answer of `status` whose detail names `name`.
fn assert_problem(what: &str, answer: &Answer, status: u16, name: &str) {
    if let Err(why) = problem_naming(answer, status, name) {
        panic!("{what}: {why}");
    }
}

/// Whether `answer` is a problem+json of `status` whose detail names `name`, or why not.
fn problem_naming(answer: &Answer, status: u16, name: &str) -> Result<(), String> {
    let body = String::from_utf8_lossy(&answer.body);
    let content_type = answer.header("content-type").unwrap_or_default();
    if answer.status != status || content_type != "application/problem+json" {
        return Err(format!("{} ({content_type}): {body}", answer.status));
    }
    let problem: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    let detail = problem["detail"].as_str().unwrap_or_default();
    if !detail.contains(name) || problem["status"] != status {
        return Err(format!("the detail does not name {name}: {body}"));
    }
    Ok(())
}

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Answer {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    exchange(addr, &head, body.unwrap_or("").as_bytes()).expect("HTTP exchange")
}

/// Bad path parameters, query strings and bodies, unknown routes and methods: all
/// problem+json, each naming what was wrong. A CR LF in a STOW-RS study UID is refused before
/// anything logs it.
#[test]
fn every_rejection_is_problem_json_naming_the_parameter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let addr = server.addr;
    let consult = "0190f5c2-7d3a-7b4e-8f00-000000000001";
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("DELETE", "/consents/..", None, 400, "consent"),
        ("DELETE", "/consents/not-a-uuid", None, 400, "consent"),
        ("GET", "/dicom-web/studies/%ff", None, 400, "study"),
        (
            "GET",
            "/dicom-web/studies/1.2.3/series/%ff/metadata",
            None,
            400,
            "series",
        ),
        ("GET", "/views/hospital?limit=-1", None, 400, "limit"),
        ("GET", "/views/hospital?limit=1&limit=2", None, 400, "limit"),
        ("GET", "/shares", None, 400, "study"),
        ("GET", "/audit?study=1.2&offset=x", None, 400, "offset"),
        (
            "GET",
            "/consults/queue?direction=a&direction=b",
            None,
            400,
            "direction",
        ),
        (
            "POST",
            &format!("/consults/{consult}/accept"),
            Some("{"),
            400,
            "request body",
        ),
        (
            "POST",
            &format!("/consults/{consult}/complete"),
            Some(r#"{"report_id": 7}"#),
            400,
            "report_id",
        ),
        ("GET", "/consults/not-a-uuid", None, 400, "consult"),
        ("PUT", "/healthz", None, 405, "/healthz"),
        ("GET", "/no/such/route", None, 404, "/no/such/route"),
        (
            "GET",
            "/wado?requestType=WADO&studyUID=1%0d%0a2&seriesUID=1&objectUID=1",
            None,
            400,
            "studyUID",
        ),
    ];
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|(method, path, body, status, name)| {
            let answer = request(addr, method, path, *body);
            problem_naming(&answer, *status, name)
                .err()
                .map(|why| format!("{method} {path}: {why}"))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The issue's STOW-RS, a well-formed multipart request to a study UID with CR LF in it.
    let head = format!(
        "POST /dicom-web/studies/%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: close\r\nContent-Type: multipart/related; type=\"application/dicom\"; \
         boundary=b\r\n"
    );
    let body = b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--b--\r\n";
    let answer = exchange(addr, &head, body).expect("STOW-RS");
    assert_problem("STOW-RS to a study UID with CR LF", &answer, 400, "study");
    assert!(server.stop().success());
}

/// WADO-RS of a study whose original is gone from the blob store: a 500 problem naming the SOP
/// Instance UID and the blob key, before any byte of a 200 (it used to answer 200 and cut the
/// stream); frames of it the same.
#[test]
fn a_missing_original_is_a_problem_before_the_first_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let study = "1.2.826.0.1.3680043.10.1437.24.8";
    let (ct, part10) = ct(study);
    stored(&server, part10);
    let sop = ct.sop_instance_uid(0);
    let page = server.get_json("/events?after=0&limit=100");
    let key = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event_type"] == "InstancesStored")
        .flat_map(|e| e["data"]["series"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .find(|i| i["sop_instance_uid"] == sop.as_str())
        .and_then(|i| i["blob_key"].as_str().map(str::to_owned))
        .expect("the instance's blob key");
    std::fs::remove_file(data.join("blobs").join(&key)).expect("remove the original");
    let series = &ct.series_uid;
    for path in [
        format!("/dicom-web/studies/{study}"),
        format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}"),
        format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1"),
    ] {
        let answer = get(server.addr, &path, "*/*");
        assert_problem(&path, &answer, 500, &sop);
        assert_problem(&path, &answer, 500, &key);
    }
    assert!(server.stop().success());
}
