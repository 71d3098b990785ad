#!/usr/bin/env python3
"""Checks the Helm chart in helm/ offline, with neither a cluster nor the helm binary.

helm-python-sdk (the Helm v4 SDK) lints and renders the chart with helm/ci/test-values.yaml and
variants of it; kubernetes-validate checks every rendered object against the Kubernetes schemas
shipped in its wheel; the rest asserts on the rendered objects. One line per check; the exit
status is non-zero if any check fails.

    python tests/helm_check.py    # with helm-python-sdk, kubernetes-validate and PyYAML
"""

import copy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parent.parent / "helm"
TEST_VALUES = yaml.safe_load((CHART / "ci" / "test-values.yaml").read_text())
RELEASE, NAMESPACE = "hub", "imaging"
FULLNAME = "hub-imaging-hub"
SERVICES = ["gateway", "ingest", "relay", "inference", "projector", "sharing"]
AUTOSCALED = ["gateway", "ingest"]
# The services that read or write the original DICOM files: they, and only they, mount the
# ReadWriteMany blob volume at BLOB_DIR and get HUB_BLOB_DIR.
BLOB_SERVICES = ["gateway", "ingest", "inference"]
BLOB_DIR = "/var/lib/hub-blobs"
BLOB_CLAIM = f"{FULLNAME}-blobs"
# The S3 blob store's environment (blobs.s3.*): only with blobs.s3.url set, and then only in the
# BLOB_SERVICES; with a blob volume no pod gets any of it.
S3_ENV = ["HUB_BLOB_URL", "AWS_REGION", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
S3_KEYS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
S3_URL = "s3://hub-studies/province/originals"

# Every service's environment: plain values, and those read from a Secret (name -> key).
PLAIN_ENV = {
    "HUB_HTTP": "0.0.0.0:8080",
    "HUB_DATA_DIR": "/var/lib/hub",
    "HUB_LOG": "hub=debug,info",
    "HUB_KAFKA_BROKERS": "kafka-0.kafka.data:9092,kafka-1.kafka.data:9092",
    "HUB_KAFKA_TOPIC_PREFIX": "province",
    "HUB_KAFKA_PARTITIONS": "6",
    "HUB_KAFKA_REPLICATION": "3",
}
SECRET_ENV = {
    "HUB_DATABASE_URL": "database-url",
    "HUB_JWT_SECRET": "jwt-secret",
    "HUB_PATIENT_KEY": "patient-key",
    "HUB_DEID_KEY": "deid-key",
}
# The shared read models' URL (readModels): only the projector and the gateways read it.
READ_MODELS_SERVICES = ["gateway", "projector"]
SERVICE_ENV = {
    "ingest": {
        "HUB_DIMSE": "0.0.0.0:11112",
        "HUB_DIMSE_AE_TITLE": "PROVINCE_HUB",
        "HUB_DIMSE_AE_MAP": "CT01=hosp-a,PACS=hosp-b",
        "HUB_STABILIZE_AFTER_SECS": "45",
    },
    "inference": {
        "ORT_DYLIB_PATH": "/opt/onnxruntime/lib/libonnxruntime.so.1.22.0",
        "HUB_INFERENCE_MODELS": "/opt/hub/models",
    },
}
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def values(**changes):
    """The test values with dotted keys changed (None deletes the key)."""
    v = copy.deepcopy(TEST_VALUES)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = v
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return v


def render(v):
    """Template path -> manifest text, empty manifests and NOTES.txt left out."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(v, name=RELEASE, namespace=NAMESPACE)
    return {k: m for k, m in rendered.items() if m.strip() and not k.endswith("NOTES.txt")}


def objects(manifests):
    return [o for m in manifests.values() for o in yaml.safe_load_all(m) if o]


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def name(service):
    return f"{FULLNAME}-{service}"


def container(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    expect(len(containers) == 1, f"{deployment['metadata']['name']}: one container")
    return containers[0]


def env_of(deployment):
    return {e["name"]: e for e in container(deployment).get("env", [])}


def blob_volume(deployment):
    """(HUB_BLOB_DIR's value, the claim mounted at BLOB_DIR) of a pod; None for what it lacks."""
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    service = c["name"]
    mounts = [m for m in c["volumeMounts"] if m["mountPath"] == BLOB_DIR]
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    claim = None
    if mounts:
        expect(len(mounts) == 1 and not mounts[0].get("readOnly"), f"{service}: {BLOB_DIR} mounts {mounts}")
        volume = {v["name"]: v for v in pod["volumes"]}.get(mounts[0]["name"], {})
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        expect(claim, f"{service}: {BLOB_DIR} is no PersistentVolumeClaim: {volume}")
    else:
        expect(not claims, f"{service}: a PersistentVolumeClaim volume without a mount: {claims}")
    return env_of(deployment).get("HUB_BLOB_DIR", {}).get("value"), claim


def check_blob_mounts(deployments, claim):
    """The blob services mount `claim` at BLOB_DIR with HUB_BLOB_DIR set; the others have neither."""
    for d in deployments.values():
        service = container(d)["name"]
        got = blob_volume(d)
        want = (BLOB_DIR, claim) if service in BLOB_SERVICES else (None, None)
        expect(got == want, f"{service}: (HUB_BLOB_DIR, blob claim) = {got}, want {want}")


def render_error(v):
    """The error message of a render that must fail."""
    try:
        render(v)
    except helm.HelmError as e:
        return str(e)
    raise CheckFailed("rendered, but must fail")


# --- checks -----------------------------------------------------------------------------------


def check_lint():
    for label, v in [("S3 values", s3_inline_values()), ("test values", TEST_VALUES)]:
        report = helm.lint(CHART, v, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        expect(not problems, f"{label}: lint findings: {problems}")
    infos = [m["error"] for m in report["messages"]]
    return f"strict, {report['total_charts_linted']} chart, test and S3 values, no warning or error" + (
        f" (info: {'; '.join(infos)})" if infos else ""
    )


def check_kubernetes_schemas():
    cli = Path(sys.executable).parent / "kubernetes-validate"
    expect(cli.exists(), f"{cli} is missing (pip install kubernetes-validate)")
    variants = {"full": TEST_VALUES, "variant": variant_values(), "s3-inline": s3_inline_values(),
                "s3-existing-secret": s3_existing_secret_values()}
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for label, v in variants.items():
            for template, manifest in render(v).items():
                path = Path(tmp) / label / Path(template).name
                path.parent.mkdir(exist_ok=True)
                path.write_text(manifest)
                files.append(str(path))
                count += sum(1 for o in yaml.safe_load_all(manifest) if o)
        out = subprocess.run(
            [str(cli), "--strict", "--quiet", *files], capture_output=True, text=True
        )
    # --quiet prints only failures and warnings (a kind without a schema is a warning).
    report = (out.stdout + out.stderr).strip()
    expect(out.returncode == 0 and not report, f"kubernetes-validate (rc {out.returncode}):\n{report}")
    return f"{count} objects of {len(variants)} value sets valid against Kubernetes {kubernetes_version(cli)} (strict)"


def kubernetes_version(cli):
    # The CLI's default (newest shipped) version, from its help text.
    out = subprocess.run([str(cli), "--help"], capture_output=True, text=True).stdout
    return out.split("Defaults to", 1)[1].split()[0] if "Defaults to" in out else "(default)"


def check_deployments():
    objs = objects(render(TEST_VALUES))
    deployments = by_kind(objs, "Deployment")
    expect(sorted(deployments) == sorted(map(name, SERVICES)), f"Deployments: {sorted(deployments)}")
    secret = by_kind(objs, "Secret").get(FULLNAME)
    expect(secret is not None, "the chart's Secret is rendered")
    for service in SERVICES:
        d = deployments[name(service)]
        pod = d["spec"]["template"]
        c = container(d)
        expect(c["args"] == ["run", service], f"{service}: args {c['args']}")
        expect(c["image"] == "ghcr.io/imaging-hub/hub:0.1.0", f"{service}: image {c['image']}")
        for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")]:
            got = c.get(probe, {}).get("httpGet", {})
            expect(got == {"path": path, "port": "http"}, f"{service}: {probe} {got}")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        expect(ports.get("http") == 8080, f"{service}: ports {ports}")
        annotations = pod["metadata"]["annotations"]
        expect(SCRAPE.items() <= annotations.items(), f"{service}: annotations {annotations}")
        expect(len(annotations.get("checksum/secret", "")) == 64, f"{service}: no secret checksum")
        expect(annotations.get("team") == "imaging", f"{service}: podAnnotations not applied")
        expect(c["resources"].get("requests"), f"{service}: no resource requests")
        security = c["securityContext"]
        expect(security.get("readOnlyRootFilesystem") is True, f"{service}: root filesystem writable")
        expect(security.get("allowPrivilegeEscalation") is False, f"{service}: privilege escalation")
        expect(pod["spec"]["securityContext"].get("runAsNonRoot") is True, f"{service}: may run as root")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for path in ["/var/lib/hub", "/tmp"]:
            expect(path in mounts and "emptyDir" in volumes.get(mounts[path], {}), f"{service}: {path} is no emptyDir")
        expect(volumes[mounts["/var/lib/hub"]]["emptyDir"].get("sizeLimit") == "20Gi", f"{service}: sizeLimit")

        env = env_of(d)
        wanted = {**PLAIN_ENV, **SERVICE_ENV.get(service, {})}
        for key, value in wanted.items():
            expect(env.get(key, {}).get("value") == value, f"{service}: {key}={env.get(key)}, want {value!r}")
        for key, secret_key in SECRET_ENV.items():
            ref = env.get(key, {}).get("valueFrom", {}).get("secretKeyRef")
            expect(ref == {"name": FULLNAME, "key": secret_key}, f"{service}: {key} secretKeyRef {ref}")
            expect(secret_key in secret["data"], f"{service}: {key} names key {secret_key} missing from the Secret")
        ref = env.get("HUB_READ_MODELS_URL", {}).get("valueFrom", {}).get("secretKeyRef")
        want_ref = {"name": FULLNAME, "key": "read-models-url"} if service in READ_MODELS_SERVICES else None
        expect(ref == want_ref, f"{service}: HUB_READ_MODELS_URL secretKeyRef {ref}, want {want_ref}")
        others = set(SERVICE_ENV) - {service}
        stray = [k for o in others for k in SERVICE_ENV[o] if k in env] + [k for k in S3_ENV if k in env]
        expect(not stray and "HUB_JWT_JWKS" not in env, f"{service}: unexpected env {stray}")
    want_keys = sorted([*SECRET_ENV.values(), "read-models-url"])
    expect(sorted(secret["data"]) == want_keys, f"Secret keys {sorted(secret['data'])}")
    check_blob_mounts(deployments, BLOB_CLAIM)
    return (f"{len(deployments)} Deployments: args, image, probes, scrape annotations, env, secretKeyRefs, "
            f"non-root; {BLOB_DIR} and HUB_BLOB_DIR on {', '.join(BLOB_SERVICES)} only; no S3 env")


def check_services():
    objs = objects(render(TEST_VALUES))
    services = by_kind(objs, "Service")
    deployments = by_kind(objs, "Deployment")
    expect(sorted(services) == sorted(map(name, SERVICES)), f"Services: {sorted(services)}")
    for service in SERVICES:
        s = services[name(service)]
        pod_labels = deployments[name(service)]["spec"]["template"]["metadata"]["labels"]
        expect(s["spec"]["selector"].items() <= pod_labels.items(), f"{service}: selector misses its pods")
        ports = {p["name"]: (p["port"], p["targetPort"]) for p in s["spec"]["ports"]}
        want = {"http": (8080, "http")} | ({"dimse": (11112, "dimse")} if service == "ingest" else {})
        expect(ports == want, f"{service}: Service ports {ports}")
        want_type = "LoadBalancer" if service == "ingest" else "ClusterIP"
        expect(s["spec"]["type"] == want_type, f"{service}: Service type {s['spec']['type']}")
    ingest = services[name("ingest")]["spec"]
    expect(ingest.get("loadBalancerSourceRanges") == ["10.20.0.0/16"], "ingest: loadBalancerSourceRanges")
    dimse = [p for p in container(deployments[name("ingest")])["ports"] if p["name"] == "dimse"]
    expect(dimse and dimse[0]["containerPort"] == 11112, "ingest: no dimse container port")
    return f"{len(SERVICES)} Services, selectors match; ingest carries http 8080 and dimse 11112 (type from values)"


def check_scaling():
    objs = objects(render(TEST_VALUES))
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    deployments = by_kind(objs, "Deployment")
    expect(sorted(hpas) == sorted(map(name, AUTOSCALED)), f"HPAs: {sorted(hpas)}")
    for service in AUTOSCALED:
        h = hpas[name(service)]
        expect(h["apiVersion"] == "autoscaling/v2", f"{service}: {h['apiVersion']}")
        expect(h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name(service)},
               f"{service}: HPA target {h['spec']['scaleTargetRef']}")
        expect((h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (2, 6), f"{service}: HPA bounds")
        metric = h["spec"]["metrics"][0]["resource"]
        expect(metric["name"] == "cpu" and metric["target"]["averageUtilization"] == 70, f"{service}: HPA metric")
        expect("replicas" not in deployments[name(service)]["spec"], f"{service}: replicas fight the HPA")
    pdbs = by_kind(objs, "PodDisruptionBudget")
    expect(sorted(pdbs) == sorted(map(name, AUTOSCALED)), f"PodDisruptionBudgets: {sorted(pdbs)}")
    for service in ["relay", "inference", "projector", "sharing"]:
        expect(deployments[name(service)]["spec"].get("replicas") == 1, f"{service}: not 1 replica")
    for service in ["relay", "sharing"]:
        strategy = deployments[name(service)]["spec"]["strategy"]
        expect(strategy == {"type": "Recreate"}, f"{service}: strategy {strategy}")
    return "HPAs (autoscaling/v2, CPU) and PDBs for gateway and ingest only; relay and sharing 1 replica, Recreate"


def check_negative():
    cases = [
        ("missing kafka.brokers", values(**{"kafka.brokers": None}), ["/kafka/brokers"]),
        ("typo'd top-level key", values(kafak={"brokers": "k:9092"}), ["kafak", "not allowed"]),
        ("jwtSecret and jwksUrl", values(**{"auth.jwksUrl": "http://keycloak:8080/certs"}),
         ["auth.jwtSecret", "auth.jwksUrl", "exactly one"]),
        ("neither jwtSecret nor jwksUrl", values(auth={}), ["auth.jwtSecret", "auth.jwksUrl"]),
        ("neither blobs.existingClaim nor blobs.storageClassName", values(**{"blobs.storageClassName": None}),
         ["/blobs", "oneOf", "/blobs/existingClaim", "/blobs/storageClassName"]),
        ("both blobs.existingClaim and blobs.storageClassName", values(**{"blobs.existingClaim": "hub-dicom"}),
         ["/blobs", "oneOf", "/blobs/existingClaim", "/blobs/storageClassName"]),
        ("bad blobs.size", values(**{"blobs.size": "lots"}), ["/blobs/size", "lots"]),
        ("S3 values under an unknown key", values(objectStorage={"bucket": "hub-studies"}), ["objectStorage", "not allowed"]),
        ("blobs.s3.url not s3://", s3_inline_values(**{"blobs.s3.url": "gs://x"}), ["/blobs/s3/url", "gs://x", "pattern"]),
        ("blobs.s3.url without a bucket", s3_inline_values(**{"blobs.s3.url": "s3:///originals"}),
         ["/blobs/s3/url", "s3:///originals", "pattern"]),
        ("blobs.s3.accessKeyId without secretAccessKey", s3_inline_values(**{"blobs.s3.secretAccessKey": None}),
         ["blobs.s3.accessKeyId", "without blobs.s3.secretAccessKey"]),
        ("blobs.s3.secretAccessKey without accessKeyId", s3_inline_values(**{"blobs.s3.accessKeyId": None}),
         ["blobs.s3.secretAccessKey", "without blobs.s3.accessKeyId"]),
        ("blobs.s3.existingSecret and inline keys", s3_inline_values(**{"blobs.s3.existingSecret": "minio-creds"}),
         ["blobs.s3.existingSecret", "blobs.s3.accessKeyId", "not both"]),
        ("blobs.s3.existingSecret and half inline keys",
         s3_existing_secret_values(**{"blobs.s3.secretAccessKey": "secret-from-values"}),
         ["blobs.s3.existingSecret", "blobs.s3.secretAccessKey", "not both"]),
        ("blobs.s3.url and blobs.storageClassName", s3_inline_values(**{"blobs.storageClassName": "cephfs"}),
         ["blobs.s3.url", "blobs.storageClassName", "blobs.existingClaim"]),
        ("blobs.s3.url and blobs.existingClaim", s3_inline_values(**{"blobs.existingClaim": "hub-dicom"}),
         ["blobs.s3.url", "blobs.existingClaim"]),
        ("blobs.s3 keys without blobs.s3.url", values(**{"blobs.s3": {"accessKeyId": "AK", "secretAccessKey": "SK"}}),
         ["blobs.s3.accessKeyId", "blobs.s3.url is empty"]),
        ("http:// endpoint without allowHttp", s3_inline_values(**{"blobs.s3.allowHttp": None}),
         ["blobs.s3.endpoint", "blobs.s3.allowHttp"]),
        ("blobs.s3.endpoint without a scheme", s3_inline_values(**{"blobs.s3.endpoint": "minio:9000"}),
         ["/blobs/s3/endpoint", "pattern"]),
        ("blobs.s3.allowHttp not a boolean", s3_inline_values(**{"blobs.s3.allowHttp": "true"}),
         ["/blobs/s3/allowHttp", "boolean"]),
        ("typo'd blobs.s3 key", s3_inline_values(**{"blobs.s3.accesKeyId": "AK"}), ["/blobs/s3", "accesKeyId", "not allowed"]),
        ("readModels.url and readModels.existingSecret", values(**{"readModels.existingSecret": "rm"}),
         ["readModels.url", "readModels.existingSecret", "at most one"]),
        ("readModels.url not postgres://", values(**{"readModels.url": "mysql://db/hub"}),
         ["/readModels/url", "pattern"]),
        ("projector.replicas 0", values(**{"projector.replicas": 0}), ["/projector/replicas"]),
        ("short jwtSecret", values(**{"auth.jwtSecret": "short"}), ["/auth/jwtSecret", "32"]),
        ("short patientKey", values(**{"secrets.patientKey": "short"}), ["/secrets/patientKey", "32"]),
        ("no patient/deid keys", values(secrets={}), ["secrets.patientKey"]),
        ("typo'd service key", values(**{"gateway.replicaz": 3}), ["/gateway", "replicaz"]),
        ("gateway.publicUrl without a scheme", values(**{"gateway.publicUrl": "imaging.example.org/hub"}),
         ["/gateway/publicUrl", "pattern"]),
        ("gateway.publicUrl with a query", values(**{"gateway.publicUrl": "https://imaging.example.org/?a=1"}),
         ["/gateway/publicUrl", "pattern"]),
    ]
    for label, v, needles in cases:
        try:
            message = render_error(v)
        except CheckFailed as e:
            raise CheckFailed(f"{label}: {e}") from None
        missing = [n for n in needles if n not in message]
        expect(not missing, f"{label}: error does not name {missing}: {message}")
    return f"{len(cases)} bad value sets refused, each error naming the problem"


def check_inference_disabled():
    objs = objects(render(values(**{"inference.enabled": False})))
    deployments = by_kind(objs, "Deployment")
    want = [name(s) for s in SERVICES if s != "inference"]
    expect(sorted(deployments) == sorted(want), f"Deployments: {sorted(deployments)}")
    expect(name("inference") not in by_kind(objs, "Service"), "the inference Service is still rendered")
    check_blob_mounts(deployments, BLOB_CLAIM)
    return f"no inference Deployment or Service; the other {len(want)} services remain"


def check_read_models():
    """Without readModels: no projector, gateways with their own SQLite read models; with an
    existing Secret: both read the URL from it."""
    objs = objects(render(values(readModels=None)))
    deployments = by_kind(objs, "Deployment")
    want = [name(s) for s in SERVICES if s != "projector"]
    expect(sorted(deployments) == sorted(want), f"Deployments without readModels: {sorted(deployments)}")
    expect(name("projector") not in by_kind(objs, "Service"), "the projector Service is rendered without readModels")
    stray = [s for s, d in deployments.items() if "HUB_READ_MODELS_URL" in env_of(d)]
    expect(not stray, f"HUB_READ_MODELS_URL without readModels in {stray}")
    expect("read-models-url" not in by_kind(objs, "Secret")[FULLNAME]["data"], "read-models-url in the Secret")
    objs = objects(render(values(readModels={"existingSecret": "rm", "existingSecretKey": "url"})))
    deployments = by_kind(objs, "Deployment")
    for service in READ_MODELS_SERVICES:
        ref = env_of(deployments[name(service)])["HUB_READ_MODELS_URL"]["valueFrom"]["secretKeyRef"]
        expect(ref == {"name": "rm", "key": "url"}, f"{service}: HUB_READ_MODELS_URL {ref}")
    expect("read-models-url" not in by_kind(objs, "Secret")[FULLNAME]["data"], "an existing read-model Secret is copied")
    c = container(deployments[name("projector")])
    expect(c["args"] == ["run", "projector"], f"projector: args {c['args']}")
    expect(c["startupProbe"]["failureThreshold"] == 720, "projector: startup allows a replay of the log")
    return "no projector without readModels (gateways keep their own); with an existing Secret both refer to it"


def check_public_url():
    """gateway.publicUrl reaches the gateways (and only them) as HUB_PUBLIC_URL, beside the
    read-model URL; unset, no gateway gets it."""
    url = "https://imaging.example.org/hub"
    deployments = by_kind(objects(render(values(**{"gateway.publicUrl": url}))), "Deployment")
    env = env_of(deployments[name("gateway")])
    expect(env.get("HUB_PUBLIC_URL", {}).get("value") == url, f"gateway: HUB_PUBLIC_URL {env.get('HUB_PUBLIC_URL')}")
    expect("HUB_READ_MODELS_URL" in env, "gateway: HUB_READ_MODELS_URL is lost beside HUB_PUBLIC_URL")
    stray = [s for s, d in deployments.items() if s != name("gateway") and "HUB_PUBLIC_URL" in env_of(d)]
    expect(not stray, f"HUB_PUBLIC_URL outside the gateway: {stray}")
    own = values(**{"gateway.publicUrl": url, "readModels": None})
    env = env_of(by_kind(objects(render(own)), "Deployment")[name("gateway")])
    expect(env.get("HUB_PUBLIC_URL", {}).get("value") == url, f"gateway without readModels: {sorted(env)}")
    deployments = by_kind(objects(render(values())), "Deployment")
    stray = [s for s, d in deployments.items() if "HUB_PUBLIC_URL" in env_of(d)]
    expect(not stray, f"HUB_PUBLIC_URL without gateway.publicUrl in {stray}")
    return "gateway.publicUrl is the gateways' HUB_PUBLIC_URL, with or without shared read models"


def check_blob_claim():
    pvcs = by_kind(objects(render(TEST_VALUES)), "PersistentVolumeClaim")
    expect(sorted(pvcs) == [BLOB_CLAIM], f"PersistentVolumeClaims: {sorted(pvcs)}")
    pvc = pvcs[BLOB_CLAIM]
    spec = pvc["spec"]
    expect(spec["accessModes"] == ["ReadWriteMany"], f"accessModes {spec['accessModes']}")
    expect(spec["storageClassName"] == "cephfs", f"storageClassName {spec['storageClassName']}")
    expect(spec["resources"] == {"requests": {"storage": "2Ti"}}, f"resources {spec['resources']}")
    keep = pvc["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
    expect(keep == "keep", f"the claim is deleted with the release (resource-policy {keep})")
    default = by_kind(objects(render(values(**{"blobs.size": None}))), "PersistentVolumeClaim")
    size = default[BLOB_CLAIM]["spec"]["resources"]["requests"]["storage"]
    expect(size == "100Gi", f"default size {size}")
    objs = objects(render(variant_values()))
    expect(not by_kind(objs, "PersistentVolumeClaim"), "a claim is rendered although blobs.existingClaim is set")
    check_blob_mounts(by_kind(objs, "Deployment"), "hub-dicom-nfs")
    return f"{BLOB_CLAIM}: ReadWriteMany, class and size from values (default 100Gi), kept; none with existingClaim, which is mounted instead"


def s3_inline_values(**changes):
    """The blobs in a MinIO bucket over plain http, its access key given as values."""
    return values(**{
        "blobs.storageClassName": None, "blobs.size": None,
        "blobs.s3": {"url": S3_URL, "region": "eu-central-1", "endpoint": "http://minio.storage:9000",
                     "allowHttp": True, "accessKeyId": "hub-access-key", "secretAccessKey": "hub-secret-key"},
        **changes,
    })


def s3_existing_secret_values(**changes):
    """The blobs in an AWS S3 bucket, its access key in an existing Secret, with the other secrets."""
    return values(**{
        "blobs.storageClassName": None,
        "blobs.s3": {"url": "s3://hub-studies", "region": "eu-west-3", "existingSecret": "hub-s3"},
        "postgres.url": None, "postgres.existingSecret": "pg",
        **changes,
    })


def check_s3_blob_env(objs, url, plain, keys_secret):
    """No claim, volume or HUB_BLOB_DIR anywhere; HUB_BLOB_URL, the `plain` AWS_* values and the key
    refs (to `keys_secret`, none if None) in the blob services only; the Deployments returned."""
    expect(not by_kind(objs, "PersistentVolumeClaim"), "a PersistentVolumeClaim is rendered with blobs.s3.url")
    deployments = by_kind(objs, "Deployment")
    for d in deployments.values():
        service = container(d)["name"]
        expect(blob_volume(d) == (None, None), f"{service}: (HUB_BLOB_DIR, blob claim) = {blob_volume(d)} with S3")
        volumes = [v["name"] for v in d["spec"]["template"]["spec"]["volumes"]]
        expect(sorted(volumes) == ["data", "tmp"], f"{service}: volumes {volumes}")
        env = env_of(d)
        if service not in BLOB_SERVICES:
            stray = [k for k in S3_ENV if k in env]
            expect(not stray, f"{service}: S3 env {stray} outside the blob services")
            continue
        got = {k: env[k].get("value") for k in S3_ENV if k in env and k not in S3_KEYS}
        want = {"HUB_BLOB_URL": url, **plain}
        expect(got == want, f"{service}: S3 env {got}, want {want}")
        for key in S3_KEYS:
            ref = env.get(key, {}).get("valueFrom", {}).get("secretKeyRef")
            want_ref = {"name": keys_secret, "key": key} if keys_secret else None
            expect(ref == want_ref and "value" not in env.get(key, {}), f"{service}: {key} = {env.get(key)}, want ref {want_ref}")
    return deployments


def check_s3_blobs():
    import base64

    # Inline keys: kept in the chart's Secret, under the names of their variables.
    objs = objects(render(s3_inline_values()))
    deployments = check_s3_blob_env(objs, S3_URL, {"AWS_REGION": "eu-central-1", "AWS_ENDPOINT": "http://minio.storage:9000",
                                                   "AWS_ALLOW_HTTP": "true"}, FULLNAME)
    expect(sorted(deployments) == sorted(map(name, SERVICES)), f"Deployments: {sorted(deployments)}")
    data = by_kind(objs, "Secret")[FULLNAME]["data"]
    stored = {k: base64.b64decode(data.get(k, "")).decode() for k in S3_KEYS}
    expect(stored == {"AWS_ACCESS_KEY_ID": "hub-access-key", "AWS_SECRET_ACCESS_KEY": "hub-secret-key"},
           f"the chart's Secret holds {stored}")
    expect(sorted(data) == sorted([*SECRET_ENV.values(), "read-models-url", *S3_KEYS]), f"Secret keys {sorted(data)}")

    # An existing Secret: referenced, not copied; AWS S3 (no endpoint), https only.
    objs = objects(render(s3_existing_secret_values()))
    check_s3_blob_env(objs, "s3://hub-studies", {"AWS_REGION": "eu-west-3"}, "hub-s3")
    data = by_kind(objs, "Secret")[FULLNAME]["data"]
    expect(not set(S3_KEYS) & set(data), f"the chart's Secret copies S3 keys: {sorted(data)}")

    # No key (EKS IRSA, instance profile): no AWS key variable at all; no inference, no env there.
    v = s3_existing_secret_values(**{"blobs.s3.existingSecret": None, "blobs.s3.region": None,
                                     "inference.enabled": False})
    deployments = check_s3_blob_env(objects(render(v)), "s3://hub-studies", {}, None)
    expect(name("inference") not in deployments, "inference rendered although disabled")
    return (f"inline keys (chart Secret), existingSecret and ambient credentials: no claim, volume or HUB_BLOB_DIR; "
            f"HUB_BLOB_URL, AWS_* and key secretKeyRefs in {', '.join(BLOB_SERVICES)} only")


def variant_values():
    """Existing Secrets and blob claim, JWKS instead of a shared secret, no autoscaling."""
    return values(**{
        "postgres.url": None, "postgres.existingSecret": "pg", "postgres.existingSecretKey": "url",
        "readModels.url": None, "readModels.existingSecret": "pg", "readModels.existingSecretKey": "read-url",
        "auth.jwtSecret": None, "auth.jwksUrl": "http://keycloak.auth:8080/realms/hub/protocol/openid-connect/certs",
        "secrets": {"existingSecret": "hub-keys"},
        "blobs.existingClaim": "hub-dicom-nfs", "blobs.storageClassName": None, "blobs.size": None,
        "gateway.autoscaling.enabled": False, "gateway.podDisruptionBudget.enabled": False,
        "ingest.autoscaling.enabled": False, "ingest.service": {"type": "ClusterIP"},
        "ingest.aeMap": None, "image.tag": "0.1.0-rc1",
        # Pass-through values, so kubernetes-validate sees them rendered too.
        "imagePullSecrets": [{"name": "registry"}], "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "imaging", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccount.annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/hub"},
        "relay.extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "sharing.probes": {"liveness": {"failureThreshold": 2}},
    })


def check_existing_secrets_and_jwks():
    objs = objects(render(variant_values()))
    expect(not by_kind(objs, "Secret"), "a chart Secret is rendered although every secret is external")
    expect(not by_kind(objs, "HorizontalPodAutoscaler"), "HPAs rendered with autoscaling off")
    expect(sorted(by_kind(objs, "PodDisruptionBudget")) == [name("ingest")], "PDBs")
    deployments = by_kind(objs, "Deployment")
    for service in SERVICES:
        d = deployments[name(service)]
        env = env_of(d)

        def ref(key):
            return env.get(key, {}).get("valueFrom", {}).get("secretKeyRef")

        expect(ref("HUB_DATABASE_URL") == {"name": "pg", "key": "url"}, f"{service}: HUB_DATABASE_URL {ref('HUB_DATABASE_URL')}")
        expect(ref("HUB_PATIENT_KEY") == {"name": "hub-keys", "key": "patient-key"}, f"{service}: HUB_PATIENT_KEY")
        expect(ref("HUB_DEID_KEY") == {"name": "hub-keys", "key": "deid-key"}, f"{service}: HUB_DEID_KEY")
        expect(env.get("HUB_JWT_JWKS", {}).get("value", "").startswith("http://keycloak"), f"{service}: HUB_JWT_JWKS")
        absent = [k for k in ["HUB_JWT_SECRET", *S3_ENV] if k in env]
        expect(not absent, f"{service}: unexpected env {absent}")
        expect(container(d)["image"].endswith(":0.1.0-rc1"), f"{service}: image tag from values")
    for service in AUTOSCALED:
        expect(deployments[name(service)]["spec"].get("replicas") == 2, f"{service}: replicas without HPA")
    ingest_env = env_of(deployments[name("ingest")])
    expect(ingest_env["HUB_DIMSE_AE_MAP"]["value"] == "", "ingest: empty AE map")
    expect(env_of(deployments[name("relay")]).get("RUST_BACKTRACE", {}).get("value") == "1", "relay: extraEnv")
    liveness = container(deployments[name("sharing")])["livenessProbe"]
    expect((liveness["failureThreshold"], liveness["periodSeconds"]) == (2, 10), f"sharing: probe override {liveness}")
    pod = deployments[name("gateway")]["spec"]["template"]["spec"]
    expect(pod.get("imagePullSecrets") == [{"name": "registry"}], "gateway: imagePullSecrets")
    return "existing Secrets, JWKS, fixed replicas, pass-through values: refs to the named Secrets"


def check_secret_checksum():
    def checksum(v):
        d = by_kind(objects(render(v)), "Deployment")[name("gateway")]
        return d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]

    same = checksum(TEST_VALUES) == checksum(values())
    changed = checksum(TEST_VALUES) != checksum(values(**{"auth.jwtSecret": "another-hs256-secret-of-at-least-32-bytes"}))
    expect(same and changed, f"checksum stable: {same}, changes with the secret: {changed}")
    s3_changed = checksum(s3_inline_values()) != checksum(s3_inline_values(**{"blobs.s3.secretAccessKey": "rotated-key"}))
    expect(s3_changed, "checksum/secret does not change with blobs.s3.secretAccessKey")
    return "pod templates' checksum/secret changes with a secret value, the S3 secret key too (pods roll)"


CHECKS = [
    ("lint", check_lint),
    ("kubernetes schemas", check_kubernetes_schemas),
    ("deployments", check_deployments),
    ("services", check_services),
    ("scaling", check_scaling),
    ("blob volume", check_blob_claim),
    ("S3 blob store", check_s3_blobs),
    ("bad values", check_negative),
    ("inference disabled", check_inference_disabled),
    ("shared read models", check_read_models),
    ("public URL", check_public_url),
    ("existing secrets, jwks", check_existing_secrets_and_jwks),
    ("secret checksum", check_secret_checksum),
]


def main():
    failed = 0
    for label, check in CHECKS:
        try:
            print(f"ok   {label}: {check()}", flush=True)
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {label}: {e}", flush=True)
        except Exception:  # a broken check is a failure too, with its traceback
            failed += 1
            print(f"FAIL {label}: {traceback.format_exc()}", flush=True)
    if failed:
        print(f"{failed} of {len(CHECKS)} helm checks failed")
        return 1
    print(f"all {len(CHECKS)} helm checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
