"""A real Orthanc (the Debian package, with its DICOMweb plugin) pushes one study to a running
hub over STOW-RS, as a hospital's PACS would; then the study is checked through the hub's QIDO-RS
and every instance retrieved over WADO-RS is compared byte for byte with what Orthanc holds.
Run by tests/e2e_orthanc.rs.

Usage: python orthanc_push.py DICOMWEB_URL ORTHANC_BINARY WORKDIR

The script starts its own Orthanc on free ports, with its storage in WORKDIR, and always stops it
again (and Orthanc dies with the script if the script is killed). Orthanc's process id is written
to WORKDIR/orthanc.pid so that the calling test can kill it too. The DICOMweb plugin is found with
`dpkg -L orthanc-dicomweb` unless ORTHANC_DICOMWEB_PLUGIN names it.
"""

import ctypes
import glob
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pydicom
import requests
from pydicom.data import get_testdata_file

URL, ORTHANC_BIN, WORK = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]

# One study of five instances, in the files' own transfer syntaxes: two copies of a CT (explicit VR
# little endian), and MR images in implicit VR little endian, RLE and JPEG 2000.
FILES = [
    "CT_small.dcm",
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
]

orthanc = None
log_path = os.path.join(WORK, "orthanc.log")


def orthanc_log_tail(lines=40):
    try:
        with open(log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no Orthanc log)"


def check(cond, what, detail=""):
    """Prints `ok: WHAT`, or fails the run with WHAT and DETAIL (an answer's status and body),
    followed by the end of Orthanc's log."""
    if not cond:
        print(f"FAILED: {what}" + (f" ({detail})" if detail else ""), file=sys.stderr)
        print(f"--- last lines of {log_path} ---\n{orthanc_log_tail()}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dicomweb_plugin():
    named = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    if named:
        return named
    candidates = []
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=60)
        candidates += [p for p in listed.stdout.split() if "OrthancDicomWeb.so" in p]
    except OSError:
        pass
    candidates += glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*")
    candidates += glob.glob("/usr/lib/orthanc/libOrthancDicomWeb.so*")
    for path in candidates:
        if os.path.isfile(path):
            return path
    check(False, "the Orthanc DICOMweb plugin is installed (apt-get install orthanc-dicomweb)")


def die_with_parent():
    """Runs in the Orthanc child before exec: SIGKILL it if this script dies, however it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_orthanc():
    global orthanc
    http_port, dicom_port = free_port(), free_port()
    storage = os.path.join(WORK, "orthanc-storage")
    os.makedirs(storage, exist_ok=True)
    config = {
        "Name": "HUB-E2E-ORTHANC",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANCE2E",
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Servers": {"hub": {"Url": URL + "/"}},
        },
        "HttpTimeout": 60,
    }
    config_path = os.path.join(WORK, "orthanc.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    # Orthanc's HTTP client (curl) talks to the hub on 127.0.0.1 directly, never via a proxy.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    log = open(log_path, "wb")
    orthanc = subprocess.Popen(
        [ORTHANC_BIN, "--verbose", config_path],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=die_with_parent,
    )
    log.close()
    with open(os.path.join(WORK, "orthanc.pid"), "w") as f:
        f.write(str(orthanc.pid))
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while True:
        if orthanc.poll() is not None:
            check(False, "Orthanc starts", f"it exited with status {orthanc.returncode}")
        try:
            r = requests.get(f"{base}/system", timeout=5)
            if r.status_code == 200:
                return base, r.json()
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            check(False, "Orthanc's REST API answers within 60 s")
        time.sleep(0.2)


def stop_orthanc():
    if orthanc is None or orthanc.poll() is not None:
        return
    orthanc.terminate()
    try:
        orthanc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        orthanc.kill()
        orthanc.wait()


def one_study():
    """pydicom's test files with a common fresh study (and patient), a fresh series per source
    file and fresh SOP Instance UIDs, each written in its own transfer syntax."""
    study_uid = pydicom.uid.generate_uid()
    series_uids = {}
    out = []
    for name in FILES:
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.PatientID = "HUB-E2E-ORTHANC"
        ds.PatientName = "E2E^Orthanc"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uids.setdefault(name, pydicom.uid.generate_uid())
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append((name, ds, buf.getvalue()))
    return study_uid, len(series_uids), out


def wado_instance(study, series, sop):
    r = requests.get(
        f"{URL}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        timeout=60,
    )
    check(r.status_code == 200, f"WADO-RS on the hub finds {sop}", f"{r.status_code} {r.text[:500]}")
    boundary = r.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = r.content.split(f"--{boundary}".encode())
    check(len(parts) == 3, f"WADO-RS answers {sop} with one part", f"{len(parts) - 2} parts")
    body = parts[1].partition(b"\r\n\r\n")[2]
    return body[:-2] if body.endswith(b"\r\n") else body


def main():
    base, system = start_orthanc()
    check(True, f"Orthanc {system.get('Version')} is up at {base}")
    plugins = requests.get(f"{base}/plugins", timeout=30).json()
    check("dicom-web" in plugins, f"Orthanc loaded its DICOMweb plugin {plugins}")
    servers = requests.get(f"{base}/dicom-web/servers", timeout=30).json()
    check("hub" in servers, f"the hub is configured as Orthanc's DICOMweb server 'hub' {servers}")

    # 1. Orthanc receives one study of five instances over its REST API.
    study_uid, n_series, files = one_study()
    orthanc_ids = {}
    parent_studies = set()
    for name, ds, raw in files:
        r = requests.post(f"{base}/instances", data=raw, headers={"Content-Type": "application/dicom"}, timeout=60)
        check(r.status_code == 200, f"Orthanc accepts {name} over REST", f"{r.status_code} {r.text[:500]}")
        answer = r.json()
        check(answer.get("Status") == "Success", f"Orthanc stores {name} as a new instance ({answer.get('Status')})")
        orthanc_ids[ds.SOPInstanceUID] = answer["ID"]
        parent_studies.add(answer["ParentStudy"])
    check(len(parent_studies) == 1, f"Orthanc files the {len(files)} instances under one study {parent_studies}")
    orthanc_study = parent_studies.pop()
    instances = requests.get(f"{base}/studies/{orthanc_study}/instances", timeout=30).json()
    check(len(instances) == len(files), f"Orthanc's study holds {len(instances)} instances")

    # 2. Orthanc pushes the study to the hub with its DICOMweb plugin (one STOW-RS request).
    t0 = time.monotonic()
    r = requests.post(
        f"{base}/dicom-web/servers/hub/stow",
        json={"Resources": [orthanc_study], "Synchronous": True},
        timeout=300,
    )
    check(r.status_code == 200, "Orthanc's STOW-RS push to the hub returns HTTP 200", f"{r.status_code} {r.text[:1000]}")
    answer = r.json() if r.content.strip() else {}
    print(f"   Orthanc's answer to the push: {json.dumps(answer)} ({time.monotonic() - t0:.1f} s)")
    if "InstancesCount" in answer:
        check(
            str(answer["InstancesCount"]) == str(len(files)),
            f"Orthanc reports {answer['InstancesCount']} instances pushed",
        )
    job_id = answer.get("ID") if isinstance(answer, dict) else None
    if job_id:
        # An asynchronous push (or a plugin that reports its job): follow the job to its end.
        deadline = time.monotonic() + 300
        while True:
            job = requests.get(f"{base}/jobs/{job_id}", timeout=30).json()
            if job.get("State") in ("Success", "Failure"):
                break
            check(time.monotonic() < deadline, f"Orthanc's push job {job_id} ends within 300 s ({job.get('State')})")
            time.sleep(0.2)
        check(job.get("State") == "Success", f"Orthanc's push job succeeds: {json.dumps(job)[:800]}")
    # Orthanc runs every push as a job, synchronous ones too: its journal must say it succeeded.
    jobs = requests.get(f"{base}/jobs", params={"expand": ""}, timeout=30).json()
    stow_jobs = [j for j in jobs if j.get("Type") == "DicomWebStowClient"]
    check(len(stow_jobs) == 1, f"Orthanc ran one DICOMweb STOW-RS job ({[j.get('Type') for j in jobs]})")
    job = stow_jobs[0]
    check(
        job.get("State") == "Success" and not job.get("ErrorCode"),
        f"Orthanc's STOW-RS job reports success (State {job.get('State')}, ErrorCode "
        f"{job.get('ErrorCode')}, {job.get('ErrorDescription')}, Content {json.dumps(job.get('Content'))})",
    )
    check(job.get("Progress") == 100, f"Orthanc's STOW-RS job ran to 100 % ({job.get('Progress')})")

    # 3. The hub has the study, with every instance, through QIDO-RS.
    r = requests.get(
        f"{URL}/studies",
        params={"StudyInstanceUID": study_uid, "includefield": "00201208"},
        headers={"Accept": "application/dicom+json"},
        timeout=60,
    )
    check(r.status_code == 200, "QIDO-RS on the hub answers", f"{r.status_code} {r.text[:500]}")
    studies = r.json()
    check(len(studies) == 1, f"the hub's QIDO-RS finds the study {study_uid} once ({len(studies)})")
    found = studies[0]
    check(found.get("0020000D", {}).get("Value") == [study_uid], "QIDO-RS returns the pushed Study Instance UID")
    count = found.get("00201208", {}).get("Value", [None])[0]
    check(count == len(files), f"the hub holds {count} instances of the study (Orthanc pushed {len(files)})")
    r = requests.get(f"{URL}/studies/{study_uid}/series", headers={"Accept": "application/dicom+json"}, timeout=60)
    check(r.status_code == 200, "series-level QIDO-RS on the hub answers", f"{r.status_code} {r.text[:500]}")
    check(len(r.json()) == n_series, f"QIDO-RS finds the study's {n_series} series", f"{len(r.json())} found")

    # 4. Every instance, retrieved from the hub over WADO-RS, is byte for byte what Orthanc holds.
    for name, ds, raw in files:
        held = requests.get(f"{base}/instances/{orthanc_ids[ds.SOPInstanceUID]}/file", timeout=60)
        check(held.status_code == 200, f"Orthanc serves its copy of {name}")
        got = wado_instance(study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        check(
            got == held.content,
            f"{name} ({ds.file_meta.TransferSyntaxUID.name}): the hub's copy is byte-identical to Orthanc's "
            f"({len(got)} and {len(held.content)} bytes)",
        )
        check(
            pydicom.dcmread(io.BytesIO(got)).SOPInstanceUID == ds.SOPInstanceUID,
            f"{name}: the hub's copy parses as the instance pushed",
        )
    print(f"orthanc push: all checks passed ({len(files)} instances in one STOW-RS push)")


if __name__ == "__main__":
    # SIGTERM (a test runner giving up) unwinds through `finally` like an error does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        stop_orthanc()
