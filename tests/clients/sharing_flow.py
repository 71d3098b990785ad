"""Restricted cross-institution sharing, end to end, with a real DICOMweb client and real files.

Usage: sharing_flow.py BASE_URL HUB_BINARY DATA_DIR

Three hospitals, an alliance, pydicom's CT_small and MR_small stored by hospital A; then every
sharing rule seen from the callers' side: bearer tokens (minted with `hub token`, forged,
expired), alliance visibility by consent, image grants, revocation taking effect on the very next
search, a refusal that looks exactly like a missing study, bad grants naming their field,
patients, the commission, a de-identified share, break-the-glass and the audit trail.
"""

import base64
import hashlib
import hmac
import io
import json
import subprocess
import sys
import time
import uuid

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

BASE, HUB, DATA = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = BASE.rsplit("/dicom-web", 1)[0]
CHECKS = 0


def check(cond, what):
    global CHECKS
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    CHECKS += 1
    print(f"ok: {what}")


def token(sub, role, institution):
    out = subprocess.run(
        [HUB, "token", "--data-dir", DATA, "--sub", sub, "--role", role, "--institution", institution],
        check=True, capture_output=True, text=True)
    return out.stdout.strip()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims):
    """A token signed with the hub's own development secret (to craft an expired one)."""
    secret = open(f"{DATA}/jwt.secret", "rb").read().strip()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def h(tok):
    return {"Authorization": f"Bearer {tok}"}


def client(tok):
    return DICOMwebClient(url=BASE, headers=h(tok))


def api(method, path, tok, body=None):
    return requests.request(method, ROOT + path, headers=h(tok), json=body, timeout=30)


def study_uids(tok, **params):
    r = requests.get(f"{BASE}/studies", headers=h(tok), params=params, timeout=30)
    assert r.status_code == 200, r.text
    return [s["0020000D"]["Value"][0] for s in r.json()]


admin = token("root", "hub_admin", "hub")
a_rad = token("alice", "radiologist", "hosp-a")
a_admin = token("anna", "hospital_admin", "hosp-a")
b_rad = token("bob", "radiologist", "hosp-b")
c_rad = token("carol", "radiologist", "hosp-c")
commission = token("cora", "commission_analyst", "commission")

# ---- tokens ---------------------------------------------------------------------------------
r = requests.get(f"{BASE}/studies", timeout=30)
check(r.status_code == 401 and "bearer token" in r.json()["detail"], "no token: 401 with the reason")
r = requests.get(f"{BASE}/studies", headers={"Authorization": "Bearer not-a-jwt"}, timeout=30)
check(r.status_code == 401 and "malformed" in r.json()["detail"], "a malformed token: 401 malformed")
head, body, sig = a_rad.split(".")
claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
claims["institution"] = "hosp-b"
forged = f"{head}.{b64(json.dumps(claims).encode())}.{sig}"
r = requests.get(f"{BASE}/studies", headers=h(forged), timeout=30)
check(r.status_code == 401 and "signature" in r.json()["detail"], "a forged token: 401 signature")
now = int(time.time())
expired = hs256({"sub": "alice", "role": "radiologist", "institution": "hosp-a",
                 "iat": now - 7200, "exp": now - 3600})
r = requests.get(f"{BASE}/studies", headers=h(expired), timeout=30)
check(r.status_code == 401 and "expired" in r.json()["detail"], "an expired token: 401 expired")

# ---- registry -------------------------------------------------------------------------------
for inst in ["hosp-a", "hosp-b", "hosp-c"]:
    r = api("POST", "/institutions", admin, {"institution_id": inst, "name": inst.upper(), "kind": "hospital"})
    check(r.status_code == 201, f"register {inst}")
r = api("POST", "/institutions", a_admin, {"institution_id": "x", "name": "X", "kind": "hospital"})
check(r.status_code == 403, "a hospital admin cannot register institutions")
r = api("POST", "/institutions", admin, {"institution_id": "hosp-a", "name": "again", "kind": "hospital"})
check(r.status_code == 409, "registering an institution twice: 409")
r = api("POST", "/alliances", admin, {"alliance_id": "north", "name": "North", "lead_institution": "hosp-a"})
check(r.status_code == 201, "create alliance north led by hosp-a")
r = api("POST", "/alliances/north/members", admin, {"institution_id": "hosp-b"})
check(r.status_code == 204, "hosp-b joins north")

# ---- hospital A stores two real studies -------------------------------------------------------
ct_path, mr_path = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
ct, mr = pydicom.dcmread(ct_path), pydicom.dcmread(mr_path)
ct_bytes, mr_bytes = open(ct_path, "rb").read(), open(mr_path, "rb").read()
CT, MR = ct.StudyInstanceUID, mr.StudyInstanceUID
client(a_rad).store_instances([ct, mr])
check(set(study_uids(a_rad)) >= {CT, MR}, "hosp-a sees what it stored")
r = requests.post(f"{BASE}/studies", headers={**h(commission), "Content-Type": "multipart/related; type=\"application/dicom\"; boundary=x"}, data=b"--x--", timeout=30)
check(r.status_code == 403, "a commission analyst cannot store")
check(study_uids(b_rad) == [], "hosp-b sees nothing before consent")
check(study_uids(c_rad) == [], "hosp-c sees nothing")
check(study_uids(commission) == [], "the commission sees no study")

# ---- patient link and consent: the alliance sees metadata ----------------------------------------
r = api("POST", "/patients/links", a_admin, {"national_id": "110101199001011234", "local_patient_id": str(ct.PatientID)})
check(r.status_code == 201 and r.json()["regional_patient_id"].startswith("RP-"), "link the CT patient")
regional = r.json()["regional_patient_id"]
check("110101199001011234" not in open(f"{DATA}/events.sqlite", "rb").read().decode("latin-1"),
      "the national id is not stored")
r = api("POST", f"/patients/{regional}/consents", a_admin, {"policy": "alliance_metadata"})
check(r.status_code == 201, "record the patient's consent")
consent = r.json()["consent_id"]
check(study_uids(b_rad) == [CT], "alliance member hosp-b now sees the consented CT study")
r = requests.get(f"{BASE}/studies/{CT}", headers=h(b_rad), timeout=30)
check(r.status_code == 404, "but cannot retrieve its images without a grant")
wado = {"requestType": "WADO", "studyUID": CT, "seriesUID": str(ct.SeriesInstanceUID),
        "objectUID": str(ct.SOPInstanceUID), "contentType": "application/dicom"}
r = requests.get(f"{ROOT}/wado", params=wado, headers=h(b_rad), timeout=30)
check(r.status_code == 404, "nor through WADO-URI")
check(study_uids(c_rad) == [], "hosp-c, outside the alliance, still sees nothing")

# ---- an image grant, then its revocation -------------------------------------------------------
expires = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
r = api("POST", "/shares", a_rad, {"study_uid": CT, "grantee": {"kind": "institution", "id": "hosp-c"},
                                   "scope": "images", "purpose": "consultation", "expires_at": expires})
check(r.status_code == 201, "hosp-a grants hosp-c images of the CT study for an hour")
share = r.json()["share_id"]
check(study_uids(c_rad) == [CT], "hosp-c finds the shared study")
got = client(c_rad).retrieve_study(CT)
check(len(got) == 1, "hosp-c retrieves it")
r = requests.get(f"{BASE}/studies/{CT}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}",
                 headers={**h(c_rad), "Accept": "multipart/related; type=\"application/dicom\""}, timeout=30)
check(r.status_code == 200 and ct_bytes in r.content, "byte-identical to what hosp-a stored")
r = requests.get(f"{ROOT}/wado", params=wado, headers=h(c_rad), timeout=30)
check(r.status_code == 200 and r.content == ct_bytes, "and through WADO-URI, the same bytes")
r = api("POST", f"/shares/{share}/revoke", a_rad, {"reason": "consultation cancelled"})
check(r.status_code == 204, "hosp-a revokes the share")
check(study_uids(c_rad) == [], "the very next search no longer shows it")
gone = requests.get(f"{BASE}/studies/{CT}", headers=h(c_rad), timeout=30)
missing = requests.get(f"{BASE}/studies/1.2.3.4.5.6.7.8.9", headers=h(c_rad), timeout=30)
check(gone.status_code == missing.status_code == 404
      and gone.json()["title"] == missing.json()["title"],
      "a forbidden study answers exactly as a missing one")
r = api("POST", f"/shares/{share}/revoke", a_rad, {"reason": "again"})
check(r.status_code == 409, "revoking twice: 409")

# ---- bad grants name their field -----------------------------------------------------------------
def grant(body, tok=a_rad):
    base = {"study_uid": CT, "grantee": {"kind": "institution", "id": "hosp-c"}, "scope": "images"}
    base.update(body)
    return api("POST", "/shares", tok, base)

r = grant({"grantee": {"kind": "institution", "id": "nowhere"}})
check(r.status_code == 400 and "grantee.id" in r.json()["detail"], "unknown institution: 400 naming grantee.id")
r = grant({"expires_at": "2001-01-01T00:00:00Z"})
check(r.status_code == 400 and "expires_at" in r.json()["detail"], "past expiry: 400 naming expires_at")
r = grant({"expires_at": "2030-01-01T00:00:00"})
check(r.status_code == 400 and "expires_at" in r.json()["detail"], "expiry without a zone: 400")
r = grant({"scope": "everything"})
check(r.status_code == 400 and "scope" in r.json()["detail"], "unknown scope: 400 naming scope")
r = grant({"grantee": {"kind": "planet", "id": "x"}})
check(r.status_code == 400 and "grantee.kind" in r.json()["detail"], "unknown grantee kind: 400")
r = api("POST", "/shares", a_rad, {"study_uid": CT})
check(r.status_code == 400 and "grantee" in r.json()["detail"], "missing field: 400 naming it")
r = grant({}, tok=b_rad)
check(r.status_code == 404, "hosp-b cannot share hosp-a's study")

# ---- the patient ---------------------------------------------------------------------------------
patient = token(regional, "patient", "hosp-a")
check(study_uids(patient) == [CT], "the patient sees their own study, and only it")
check(len(client(patient).retrieve_study(CT)) == 1, "and opens its images")
r = api("GET", f"/patients/{regional}/studies", patient)
check(r.status_code == 200 and [s["study_uid"] for s in r.json()["studies"]] == [CT], "patient history")

# ---- a de-identified share -------------------------------------------------------------------------
r = api("POST", "/shares", a_rad, {"study_uid": MR, "grantee": {"kind": "institution", "id": "hosp-c"},
                                   "scope": "deidentified", "purpose": "research"})
check(r.status_code == 201, "hosp-a shares the MR study de-identified with hosp-c")
rows = requests.get(f"{BASE}/studies", headers=h(c_rad), timeout=30).json()
check(len(rows) == 1, "hosp-c sees one study")
mapped = rows[0]["0020000D"]["Value"][0]
check(mapped != MR and mapped.startswith("2.25."), "under a remapped Study Instance UID")
name = rows[0].get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", "")
check(str(mr.PatientName) not in name, "without the patient's name")
got = client(c_rad).retrieve_study(mapped)
check(len(got) == 1, "hosp-c retrieves the de-identified instance by the mapped UID")
d = got[0]
check(d.StudyInstanceUID == mapped and d.SOPInstanceUID != mr.SOPInstanceUID, "UIDs remapped consistently")
check(d.PatientIdentityRemoved == "YES" and str(d.PatientName) != str(mr.PatientName), "identity removed")
check(d.PixelData == mr.PixelData, "pixels unchanged")
series = client(c_rad).search_for_series(mapped)
check(len(series) == 1 and series[0]["0020000E"]["Value"][0] == d.SeriesInstanceUID, "series level agrees")
meta = requests.get(f"{BASE}/studies/{mapped}/metadata", headers=h(c_rad), timeout=30).json()[0]
uri = meta["7FE00010"]["BulkDataURI"]
check(mapped in uri and d.SOPInstanceUID in uri and MR not in uri and mr.SOPInstanceUID not in uri,
      "the de-identified metadata's Pixel Data BulkDataURI names only mapped UIDs")
r = requests.get(uri, headers=h(c_rad), timeout=30)
check(r.status_code == 200 and mr.PixelData in r.content, "and gives the pixels")
check(not any("BulkDataURI" in v for k, v in meta.items() if k != "7FE00010"),
      "no other bulk data is offered in the de-identified view")
# What the de-identified view removes is never matched on, nor shown by the REST views.
for key, value in [("PatientName", str(mr.PatientName)[:1] + "*"), ("PatientName", str(mr.PatientName)),
                   ("PatientID", str(mr.PatientID)), ("StudyDate", str(mr.StudyDate)),
                   ("StudyDate", f"{mr.StudyDate}-"), ("StudyInstanceUID", MR)]:
    check(study_uids(c_rad, **{key: value}) == [], f"searching the de-identified study by its {key} {value!r} finds nothing")
check(study_uids(c_rad, StudyInstanceUID=mapped) == [mapped], "searching by the mapped UID finds it")
pseudonym = rows[0]["00100020"]["Value"][0]
check(pseudonym.startswith("ANON-") and study_uids(c_rad, PatientID=pseudonym) == [mapped],
      "the pseudonym the view shows is matched on")
view = api("GET", "/views/hospital", c_rad).json()["studies"]
check([(v["study_uid"], v.get("study_date"), v.get("owner"), v["scope"]) for v in view] == [(mapped, None, None, "deidentified")],
      "the hospital view shows the mapped UID, no date and no owner")
r = requests.get(f"{BASE}/studies/{MR}/metadata", headers=h(c_rad), timeout=30)
check(r.status_code == 404, "the original UID opens nothing for a de-identified grantee")
r = requests.get(f"{BASE}/series", headers=h(c_rad), params={"StudyInstanceUID": MR}, timeout=30)
check(r.status_code == 200 and r.json() == [], "nor does it match at the series level")
r = requests.get(f"{BASE}/series", headers=h(c_rad), params={"StudyInstanceUID": mapped}, timeout=30)
check([s["0020000E"]["Value"][0] for s in r.json()] == [d.SeriesInstanceUID], "the mapped UID does")
r = api("GET", f"/studies/{mapped}/reports", c_rad)
check(r.status_code == 403 and "de-identified" in r.json()["detail"], "reports are not part of a de-identified view")

# ---- consent withdrawal --------------------------------------------------------------------------------
r = api("DELETE", f"/consents/{consent}", a_admin)
check(r.status_code == 204, "the consent is withdrawn")
check(study_uids(b_rad) == [], "the alliance no longer sees the CT study")
check(CT in study_uids(a_rad), "the owner still does")

# ---- break the glass -------------------------------------------------------------------------------------
r = api("POST", f"/studies/{CT}/break-glass", c_rad, {"reason": "short"})
check(r.status_code == 400 and "reason" in r.json()["detail"], "break-the-glass needs a real reason")
r = api("POST", f"/studies/{CT}/break-glass", c_rad, {"reason": "unconscious patient in our ER", "minutes": 30})
check(r.status_code == 201, "a clinician breaks the glass")
check(len(client(c_rad).retrieve_study(CT)) == 1, "and reads the study for the time box")
r = api("POST", f"/studies/{CT}/break-glass", commission, {"reason": "unconscious patient in our ER"})
check(r.status_code == 403, "an analyst cannot break the glass")

# ---- time-limited: expiry -------------------------------------------------------------------------------
soon = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3))
r = api("POST", "/shares", a_rad, {"study_uid": MR, "grantee": {"kind": "user", "id": "bob", "institution": "hosp-b"},
                                   "scope": "metadata", "expires_at": soon})
check(r.status_code == 201 and MR in study_uids(b_rad), "a user grant to bob shows the MR study")
time.sleep(4.5)
check(MR not in study_uids(b_rad), "after its expiry it is gone")
events = api("GET", "/events?after=0&limit=1000", admin).json()["events"]
check(any(e["event_type"] == "ShareExpired" for e in events), "and ShareExpired was appended")

# ---- the audit trail -------------------------------------------------------------------------------------
r = api("GET", f"/audit?study={CT}", a_admin)
check(r.status_code == 200, "hosp-a's admin reads who saw the CT study")
trail = r.json()
who = {(t["subject"], t["action"], t["decision"]) for t in trail}
check(("bob", "query", "permit") in who, "bob saw it in a search")
check(("carol", "retrieve_study", "permit") in who, "carol retrieved it")
check(("carol", "retrieve_study", "deny") in who, "carol was refused after the revocation")
check(("carol", "break_the_glass", "permit") in who, "the break-the-glass is on the record")
check(any(t["purpose"] == "emergency" for t in trail), "flagged as an emergency")
check(api("GET", f"/audit?study={CT}", b_rad).status_code == 403, "hosp-b cannot read hosp-a's audit")
check(api("DELETE", "/audit", admin).status_code in (404, 405), "no API deletes audit events")

print(f"all checks passed ({CHECKS})")
