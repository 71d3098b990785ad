"""Real DIMSE clients against a running hub: pynetdicom (C-ECHO, C-STORE) and dcmtk (echoscu,
storescu, dcmsend), pushing pydicom's real test files in several transfer syntaxes; then each
is retrieved over WADO-RS and its data set compared byte for byte. Run by tests/e2e_dimse.rs.

Usage: python dimse_push.py HOST DIMSE_PORT DICOMWEB_URL WORKDIR
"""

import io
import os
import subprocess
import sys

import pydicom
import requests
from pydicom.data import get_testdata_file
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import Verification

HOST, PORT, URL, WORK = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def unique(name):
    """The test file with fresh UIDs, written in its own transfer syntax."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def data_set_bytes(part10):
    """The data set of a Part 10 file: what travels over DIMSE, after the file meta group."""
    f = io.BytesIO(part10)
    pydicom.filereader.read_preamble(f, False)
    pydicom.filereader._read_file_meta_info(f)
    return part10[f.tell():]


def frames(ds):
    if "PixelData" not in ds:
        return []
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        n = int(getattr(ds, "NumberOfFrames", 1) or 1)
        return [f.rstrip(b"\0") for f in pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=n)]
    return [bytes(ds.PixelData).rstrip(b"\0")]


def retrieve(ds):
    r = requests.get(
        f"{URL}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
        timeout=60,
    )
    check(r.status_code == 200, f"WADO-RS finds {ds.SOPInstanceUID} ({r.status_code})")
    boundary = r.headers["Content-Type"].split("boundary=")[1].strip('"')
    part = r.content.split(f"--{boundary}".encode())[1]
    return part.partition(b"\r\n\r\n")[2][:-2]


# pynetdicom: C-ECHO, then C-STORE in the files' own transfer syntaxes.
ae = AE(ae_title="PYNETDICOM")
ae.requested_contexts = StoragePresentationContexts[:100]
ae.add_requested_context(Verification)
files = {
    "CT_small.dcm": None,  # explicit VR little endian
    "MR_small_implicit.dcm": None,  # implicit VR little endian
    "MR_small_RLE.dcm": None,  # RLE
}
for name in files:
    files[name] = unique(name)
echo = ae.associate(HOST, PORT, ae_title="HUB")
check(echo.is_established, "pynetdicom associates with AE title HUB")
check(echo.send_c_echo().Status == 0x0000, "pynetdicom C-ECHO succeeds")
echo.release()
for name, raw in files.items():
    ds = pydicom.dcmread(io.BytesIO(raw))
    ae_store = AE(ae_title="PYNETDICOM")
    ae_store.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae_store.associate(HOST, PORT, ae_title="HUB")
    check(assoc.is_established, f"pynetdicom associates for {name}")
    status = assoc.send_c_store(ds)
    assoc.release()
    check(status.Status == 0x0000, f"pynetdicom C-STORE {name} ({ds.file_meta.TransferSyntaxUID.name}): success")
    got = retrieve(ds)
    check(data_set_bytes(got) == data_set_bytes(raw), f"{name}: stored data set is byte-identical to the one sent")
    check(pydicom.dcmread(io.BytesIO(got)).file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID,
          f"{name}: stored in the transfer syntax it arrived in")

# dcmtk: echoscu, storescu (uncompressed, and JPEG 2000 proposed with -xw), dcmsend (negotiates).
run = lambda *a: subprocess.run(list(a), capture_output=True, text=True, timeout=120)
r = run("echoscu", "-aec", "HUB", HOST, str(PORT))
check(r.returncode == 0, f"dcmtk echoscu succeeds {r.stderr}")
dcmtk_files = {"MR_small.dcm": [], "JPEG2000.dcm": ["-xw"], "SC_rgb_jpeg_dcmtk.dcm": None, "MR_small_jpeg_ls_lossless.dcm": None}
for name, flags in dcmtk_files.items():
    raw = unique(name)
    path = os.path.join(WORK, name)
    with open(path, "wb") as f:
        f.write(raw)
    if flags is None:
        r = run("dcmsend", "-aet", "DCMSEND", "-aec", "HUB", HOST, str(PORT), path)
        tool = "dcmsend"
    else:
        r = run("storescu", *flags, "-aet", "STORESCU", "-aec", "HUB", HOST, str(PORT), path)
        tool = "storescu " + " ".join(flags)
    check(r.returncode == 0, f"{tool} {name}: exit 0 {r.stderr[-300:]}")
    ds = pydicom.dcmread(io.BytesIO(raw))
    got = retrieve(ds)
    # dcmtk re-encodes the data set it reads from the file (lengths, padding), so what arrived on
    # the wire is compared by content; the pynetdicom pushes above compare bytes.
    stored = pydicom.dcmread(io.BytesIO(got))
    if (0xFFFC, 0xFFFC) in ds:
        del ds[0xFFFC, 0xFFFC]  # trailing padding, which dcmtk does not send
    # dcmtk pads odd-length values (here: a JPEG-LS fragment) to even length, as it must:
    # pixel data is compared frame by frame without that padding, everything else exactly.
    check(frames(stored) == frames(ds), f"{tool} {name}: the stored pixel data is what was sent")
    for d in (ds, stored):
        if "PixelData" in d:
            del d.PixelData
    check(stored == ds, f"{tool} {name}: the stored data set has every element sent")
    check(stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID,
          f"{tool} {name}: stored in the transfer syntax it was sent in")

# The calling AE titles became the actor of the events, the institution the tenant.
# The event log is the operator's: read it with the hub_admin token the test minted.
operator = {"Authorization": "Bearer " + os.environ["HUB_OPERATOR_TOKEN"]}
events = requests.get(URL.replace("/dicom-web", "/events"), params={"limit": 1000},
                      headers=operator, timeout=60).json()["events"]
actors = {e["metadata"]["actor"] for e in events if e["event_type"] == "InstancesStored"}
check({"ae:PYNETDICOM", "ae:STORESCU", "ae:DCMSEND"} <= actors, f"calling AE titles recorded as actors {actors}")
print("dimse push: all checks passed")
