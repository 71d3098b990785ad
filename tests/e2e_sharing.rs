//! Restricted cross-institution sharing end to end: `hub serve` as deployed (every request needs
//! a bearer token), driven by a real DICOMweb client with real files and by the REST API
//! (`tests/clients/sharing_flow.py`): tokens, alliances, consent, grants, revocation on the very
//! next search, no existence leak, bad grants, patients, the commission, a de-identified share,
//! break-the-glass, expiry and the audit trail.

use std::process::Command;

use hub_e2e::{Server, http_request, hub_binary};
use serde_json::json;

#[test]
fn sharing_rules_hold_for_real_clients_on_real_files() {
    let python = std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs pydicom, \
         dicomweb-client and requests in a virtual environment and sets it",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_secure(&data, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/sharing_flow.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{}/dicom-web", server.addr))
        .arg(hub_binary())
        .arg(&data)
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "sharing checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));
}

/// `(status, JSON body)` of a request to the hub, as `token`.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http_request(server.addr, method, path, Some(token), body.as_deref())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Issue 24, classes 2, 3 and 5, through the HTTP API of a real `hub serve`:
/// - a token of an institution nobody registered is refused, naming it (it was served);
/// - consent is recorded only by an institution where the patient is linked (h3 got 201 for a
///   patient it never linked), its policy is one of the documented list ("no" was accepted), and
///   every linking institution lists and withdraws it on the patient's behalf (h2 got 404);
/// - break-the-glass by a patient and POST/GET /shares by an analyst answer the same for a
///   Study UID nobody holds as for any other: the role is refused first (they got 404).
#[test]
fn consent_identity_and_role_refusals_hold_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_secure(&dir.path().join("data"), &[]);
    let operator = server.operator.clone();
    for inst in ["h1", "h2", "h3"] {
        let (status, body) = call(
            &server,
            "POST",
            "/institutions",
            &operator,
            Some(json!({"institution_id": inst, "name": inst, "kind": "hospital"})),
        );
        assert_eq!(status, 201, "register {inst}: {body}");
    }
    let admin = |inst: &str| server.token(&format!("admin-{inst}"), "hospital_admin", inst);
    let (h1, h2, h3) = (admin("h1"), admin("h2"), admin("h3"));

    // Class 2: an unregistered institution's token names no one.
    let ghost = server.token("alice", "radiologist", "nowhere");
    let (status, body) = call(&server, "GET", "/views/hospital", &ghost, None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("'nowhere'")),
        "{body}"
    );
    let analyst = server.token("cora", "commission_analyst", "commission");
    assert_eq!(
        call(&server, "GET", "/views/hospital", &analyst, None).0,
        200
    );

    // Class 3: the patient is linked at h1 and h2, not at h3.
    let mut regional = String::new();
    for (token, local) in [(&h1, "MRN-1"), (&h2, "B-77")] {
        let (status, body) = call(
            &server,
            "POST",
            "/patients/links",
            token,
            Some(json!({"national_id": "110101199001011234", "local_patient_id": local})),
        );
        assert_eq!(status, 201, "{body}");
        regional = body["regional_patient_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
    let consents = format!("/patients/{regional}/consents");
    let policy = |p: &str| Some(json!({ "policy": p }));
    let (status, body) = call(&server, "POST", &consents, &h3, policy("alliance_metadata"));
    assert_eq!(status, 404, "h3 never linked the patient: {body}");
    let (status, body) = call(&server, "POST", &consents, &h1, policy("no"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("alliance_metadata")),
        "{body}"
    );
    let (status, body) = call(&server, "POST", &consents, &h1, policy("alliance_metadata"));
    assert_eq!(status, 201, "{body}");
    let consent = body["consent_id"].as_str().unwrap_or_default().to_owned();
    let listed = |token: &str| {
        let (status, body) = call(&server, "GET", &consents, token, None);
        (status, body["consents"].as_array().map_or(0, Vec::len))
    };
    assert_eq!(
        listed(&h2),
        (200, 1),
        "h2 links the patient and sees the consent"
    );
    assert_eq!(listed(&h3).0, 404, "h3 does not");
    let patient = server.token(&regional, "patient", "h1");
    assert_eq!(
        listed(&patient),
        (200, 1),
        "the patient sees their own consent"
    );
    let withdraw = format!("/consents/{consent}");
    assert_eq!(call(&server, "DELETE", &withdraw, &h3, None).0, 404);
    let (status, body) = call(&server, "DELETE", &withdraw, &h2, None);
    assert_eq!(status, 204, "h2 withdraws on the patient's behalf: {body}");
    assert_eq!(listed(&h1), (200, 0));

    // Class 5: refusals by role come before the study is looked up.
    let glass = Some(json!({"reason": "unconscious patient in the ER"}));
    let (status, body) = call(
        &server,
        "POST",
        "/studies/1.2.999/break-glass",
        &patient,
        glass,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        !body.to_string().contains("1.2.999"),
        "the refusal names no study: {body}"
    );
    let share = json!({"study_uid": "1.2.999", "grantee": {"kind": "institution", "id": "h2"},
                       "scope": "metadata"});
    assert_eq!(
        call(&server, "POST", "/shares", &analyst, Some(share)).0,
        403
    );
    assert_eq!(
        call(&server, "GET", "/shares?study=1.2.999", &analyst, None).0,
        403
    );
}
