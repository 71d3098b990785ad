"""Real DICOMweb clients against a running hub: dicomweb-client and plain HTTP (requests), with
pydicom's real test files in several transfer syntaxes. Run by tests/e2e_dicomweb.rs.

Usage: python dicomweb_roundtrip.py http://127.0.0.1:PORT/dicom-web
Exits non-zero with the failed check on stderr.
"""

import copy
import io
import sys
import uuid

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

URL = sys.argv[1]

# Several transfer syntaxes: explicit/implicit little endian, big endian, JPEG baseline,
# JPEG 2000, JPEG-LS, RLE, and a non-image object.
VIA_CLIENT = ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "rtplan.dcm"]
VIA_RAW = [
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG-lossy.dcm",
    "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jls_lossy_line.dcm",
]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def raw_bytes(name):
    with open(get_testdata_file(name), "rb") as f:
        return f.read()


def unique(name):
    """The test file with a fresh SOP Instance UID (several of pydicom's files are one data set in
    several transfer syntaxes, under one UID), written in its own transfer syntax."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    # A few (the JPEG-LS near-lossless and colour ones) carry no study or series: give them one.
    for uid in ("StudyInstanceUID", "SeriesInstanceUID"):
        if uid not in ds:
            setattr(ds, uid, pydicom.uid.generate_uid())
    if "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def multipart(parts, boundary, content_types=None):
    """Yields a multipart/related body chunk by chunk (requests then sends it chunked)."""
    for i, part in enumerate(parts):
        ctype = content_types[i] if content_types else "application/dicom"
        yield f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode()
        yield part
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def stow_raw(parts, study=None, content_types=None, quoted=False):
    boundary = uuid.uuid4().hex
    b = f'"{boundary}"' if quoted else boundary
    url = f"{URL}/studies" + (f"/{study}" if study else "")
    return requests.post(
        url,
        data=multipart(parts, boundary, content_types),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={b}'},
        timeout=60,
    )


def seq(resp_json, tag):
    return resp_json.get(tag, {}).get("Value", [])


def parse_multipart(resp):
    ctype = resp.headers["Content-Type"]
    boundary = ctype.split("boundary=")[1].split(";")[0].strip('"')
    body = resp.content
    parts = body.split(f"--{boundary}".encode())
    out = []
    for p in parts[1:]:
        if p.startswith(b"--"):
            break
        head, _, data = p.partition(b"\r\n\r\n")
        out.append(data[:-2])  # strip the CRLF before the next boundary
    return out


client = DICOMwebClient(url=URL)

# 1. dicomweb-client STOW-RS.
datasets = [pydicom.dcmread(io.BytesIO(unique(n))) for n in VIA_CLIENT]
result = client.store_instances(datasets)
check(len(result.ReferencedSOPSequence) == len(VIA_CLIENT), "dicomweb-client stores every instance")
check("FailedSOPSequence" not in result, "dicomweb-client: no failures")

# 2. Plain HTTP STOW-RS of the original bytes, chunked, unquoted and quoted boundaries.
originals = {n: unique(n) for n in VIA_RAW}
r = stow_raw([originals[n] for n in VIA_RAW[:3]])
check(r.status_code == 200, f"raw STOW-RS, unquoted boundary, chunked: 200 (got {r.status_code} {r.text[:300]})")
check(len(seq(r.json(), "00081199")) == 3, "raw STOW-RS references 3 instances")
r = stow_raw([originals[n] for n in VIA_RAW[3:]], quoted=True)
check(r.status_code == 200, f"raw STOW-RS, quoted boundary: 200 (got {r.status_code} {r.text[:300]})")
for item in seq(r.json(), "00081199"):
    check(item["00081190"]["Value"][0].startswith(URL), "RetrieveURL under the DICOMweb root")

# 3. QIDO-RS.
study_uids = {d.StudyInstanceUID for d in datasets} | {
    pydicom.dcmread(io.BytesIO(originals[n]), stop_before_pixels=True).StudyInstanceUID for n in VIA_RAW}
found = {s["0020000D"]["Value"][0] for s in client.search_for_studies()}
check(study_uids <= found, "QIDO-RS finds every stored study")
ct = datasets[0]
hits = client.search_for_studies(search_filters={"PatientID": ct.PatientID})
check(any(h["0020000D"]["Value"][0] == ct.StudyInstanceUID for h in hits), "QIDO-RS matches PatientID")
hits = client.search_for_studies(search_filters={"StudyInstanceUID": ct.StudyInstanceUID})
check(len(hits) == 1, "QIDO-RS matches StudyInstanceUID")
series = client.search_for_series(ct.StudyInstanceUID)
check(any(s["0020000E"]["Value"][0] == ct.SeriesInstanceUID for s in series), "QIDO-RS lists the series")
instances = client.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID)
check(any(i["00080018"]["Value"][0] == ct.SOPInstanceUID for i in instances), "QIDO-RS lists the instance")

all_series = client.search_for_series(search_filters={"Modality": "CT"})
check(any(s["0020000E"]["Value"][0] == ct.SeriesInstanceUID for s in all_series), "QIDO-RS /series across studies, by Modality")
check(all(s["00080060"]["Value"][0] == "CT" for s in all_series), "/series matches Modality only")
found = client.search_for_instances(search_filters={"SOPInstanceUID": ct.SOPInstanceUID})
check(len(found) == 1 and found[0]["0020000D"]["Value"][0] == ct.StudyInstanceUID, "QIDO-RS /instances across studies, by SOPInstanceUID")
r = requests.get(f"{URL}/instances", params={"limit": 2}, timeout=60)
check(len(r.json()) == 2 and r.headers.get("Warning", "").startswith("299 "),
      "/instances pages with limit and says more results can be requested (Warning: 299)")
r = requests.get(f"{URL}/instances", params={"limit": 1000}, timeout=60)
check(r.status_code == 200 and "Warning" not in r.headers, "a page that holds every match has no Warning")

# 4. WADO-RS: byte-identical originals, and dicomweb-client reads them.
for name in VIA_RAW:
    ds = pydicom.dcmread(io.BytesIO(originals[name]), stop_before_pixels=True)
    r = requests.get(
        f"{URL}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=60,
    )
    check(r.status_code == 200, f"WADO-RS instance {name}: 200")
    parts = parse_multipart(r)
    check(len(parts) == 1 and parts[0] == originals[name], f"WADO-RS {name} is byte-identical")
got = client.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
check(got.SOPInstanceUID == ct.SOPInstanceUID, "dicomweb-client retrieves an instance")
got = client.retrieve_study(ct.StudyInstanceUID)
check(len(got) >= 1, "dicomweb-client retrieves a study")

# 4b. WADO-RS metadata (prepared at ingest), as a viewer asks for it.
meta = client.retrieve_study_metadata(ct.StudyInstanceUID)
check(any(m["00080018"]["Value"][0] == ct.SOPInstanceUID for m in meta), "study metadata lists the instance")
m = client.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
check(m["00100020"]["Value"][0] == ct.PatientID, "instance metadata carries PatientID")
check(m["00280010"]["Value"][0] == ct.Rows, "instance metadata carries Rows")
check("InlineBinary" not in m.get("7FE00010", {}) and m["7FE00010"]["BulkDataURI"].endswith(
    f"/instances/{ct.SOPInstanceUID}/bulkdata/7FE00010"), "metadata points at the pixel data by a BulkDataURI, never inline")
# The URIs are absolute, built from the Host header; dicomweb-client sends Host without the port,
# so the metadata whose URIs are followed is read with requests (which sends host:port).
m = requests.get(f"{URL}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}/metadata",
                 timeout=60).json()[0]
check(m["7FE00010"]["BulkDataURI"].startswith(URL), "the BulkDataURI names this server")
bulk = client.retrieve_bulkdata(m["7FE00010"]["BulkDataURI"])
check(bulk == [ct.PixelData], "the Pixel Data bulk data URI gives the pixel data")
r = requests.get(m["7FE00010"]["BulkDataURI"].rsplit("/", 1)[0] + "/00100020", timeout=60)
check(r.status_code == 200 and ct.PatientID.encode() in r.content, "another attribute's bulk data is its value's bytes")
private = ct[0x00431029].value
check("InlineBinary" not in m["00431029"] and "00431028" in m and "InlineBinary" in m["00431028"],
      "a long binary attribute (2068 bytes) is a BulkDataURI, a short one (80 bytes) stays inline")
check(client.retrieve_bulkdata(m["00431029"]["BulkDataURI"]) == [private], "its bulk data is its bytes")
r = requests.get(m["7FE00010"]["BulkDataURI"].rsplit("/", 1)[0] + "/60000010", timeout=60)
check(r.status_code == 404 and "60000010" in r.json()["detail"], "an attribute the instance lacks: 404 naming it")
r = requests.get(m["7FE00010"]["BulkDataURI"].rsplit("/", 1)[0] + "/pixels", timeout=60)
check(r.status_code == 400 and "8 hex digits" in r.json()["detail"], "a bulk data URI that is no tag: 400")
check(pydicom.Dataset.from_json(m).SOPInstanceUID == ct.SOPInstanceUID, "metadata parses as DICOM JSON")
series_meta = client.retrieve_series_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID)
check(len(series_meta) >= 1, "series metadata")
r = requests.get(f"{URL}/studies/{ct.StudyInstanceUID}/metadata", timeout=60)
check(r.headers["Content-Type"].startswith("application/dicom+json"), "metadata is application/dicom+json")

# 4c. WADO-RS frames: uncompressed as little-endian bytes, compressed as the stored bitstream.
frames = client.retrieve_instance_frames(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, frame_numbers=[1])
check(frames[0] == ct.PixelData, "frame 1 of an uncompressed CT is its pixel data")
be = pydicom.dcmread(io.BytesIO(originals["MR_small_bigendian.dcm"]))
frames = client.retrieve_instance_frames(be.StudyInstanceUID, be.SeriesInstanceUID, be.SOPInstanceUID, frame_numbers=[1])
swapped = bytes(b for pair in zip(be.PixelData[1::2], be.PixelData[0::2]) for b in pair)
check(frames[0] == swapped, "frames of a big-endian instance come back little-endian")
j2k = datasets[2]
frames = client.retrieve_instance_frames(
    j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, frame_numbers=[1],
    media_types=(("application/octet-stream", "*"),),
)
stored_frame = next(pydicom.encaps.generate_frames(j2k.PixelData, number_of_frames=1))
check(frames[0].rstrip(b"\0") == stored_frame.rstrip(b"\0"), "a JPEG 2000 frame comes back as its stored bitstream")
jm = requests.get(f"{URL}/studies/{j2k.StudyInstanceUID}/series/{j2k.SeriesInstanceUID}/instances/{j2k.SOPInstanceUID}/metadata",
                  timeout=60).json()[0]
check(jm["7FE00010"]["vr"] == "OB", "compressed Pixel Data is announced as OB")
bulk = client.retrieve_bulkdata(jm["7FE00010"]["BulkDataURI"], media_types=(("application/octet-stream", "*"),))
check(len(bulk) == 1 and bulk[0].rstrip(b"\0") == stored_frame.rstrip(b"\0"),
      "its bulk data is the stored bitstream, one part per frame")
# Compressed frames asked for as application/octet-stream (Explicit VR Little Endian) are decoded.
frames = client.retrieve_instance_frames(
    j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, frame_numbers=[1],
    media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
)
native = j2k.Rows * j2k.Columns * j2k.SamplesPerPixel * (j2k.BitsAllocated // 8)
check(len(frames[0]) == native, f"a JPEG 2000 frame asked for uncompressed is decoded ({len(frames[0])} of {native} bytes)")
rle = pydicom.dcmread(io.BytesIO(originals["MR_small_RLE.dcm"]))
plain = pydicom.dcmread(io.BytesIO(originals["MR_small.dcm"]))
r = requests.get(
    f"{URL}/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}/frames/1",
    headers={"Accept": 'multipart/related; type="application/octet-stream"'}, timeout=60)
check(r.status_code == 200 and "transfer-syntax=1.2.840.10008.1.2.1" in r.text[:400] and plain.PixelData in r.content,
      f"an RLE frame asked for as octet-stream is decoded to the very pixels of the uncompressed MR ({r.status_code})")
r = requests.get(
    f"{URL}/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}/bulkdata/7FE00010",
    headers={"Accept": 'multipart/related; type="application/octet-stream"'}, timeout=60)
check(r.status_code == 200 and plain.PixelData in r.content,
      f"the RLE instance's Pixel Data bulk data asked for as octet-stream is decoded too ({r.status_code})")
jls_ds = pydicom.dcmread(io.BytesIO(originals["MR_small_jpeg_ls_lossless.dcm"]), stop_before_pixels=True)
r = requests.get(
    f"{URL}/studies/{jls_ds.StudyInstanceUID}/series/{jls_ds.SeriesInstanceUID}/instances/{jls_ds.SOPInstanceUID}/frames/1",
    headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'},
    timeout=60,
)
check(r.status_code == 200 and "transfer-syntax=1.2.840.10008.1.2.1" in r.text[:400] and plain.PixelData in r.content,
      f"a JPEG-LS lossless frame asked for as octet-stream is decoded to the very pixels of the uncompressed MR ({r.status_code})")
near = pydicom.dcmread(io.BytesIO(originals["JPEGLSNearLossless_16.dcm"]), stop_before_pixels=True)
frames = client.retrieve_instance_frames(
    near.StudyInstanceUID, near.SeriesInstanceUID, near.SOPInstanceUID, frame_numbers=[1],
    media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
)
check(len(frames[0]) == near.Rows * near.Columns * 2,
      f"a near-lossless JPEG-LS frame is decoded too ({len(frames[0])} bytes of {near.Rows}x{near.Columns}x2)")
rgb_jls = pydicom.dcmread(io.BytesIO(originals["SC_rgb_jls_lossy_line.dcm"]), stop_before_pixels=True)
r = requests.get(
    f"{URL}/studies/{rgb_jls.StudyInstanceUID}/series/{rgb_jls.SeriesInstanceUID}/instances/{rgb_jls.SOPInstanceUID}/frames/1",
    headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'},
    timeout=60,
)
check(r.status_code == 406 and "grayscale" in r.json()["detail"] and "transfer-syntax=*" in r.json()["detail"],
      f"a colour JPEG-LS frame the decoder cannot read asked for uncompressed is 406 with the reason and what to ask for ({r.status_code})")
r = requests.get(
    f"{URL}/studies/{rgb_jls.StudyInstanceUID}/series/{rgb_jls.SeriesInstanceUID}/instances/{rgb_jls.SOPInstanceUID}/frames/1",
    headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}, timeout=60)
check(r.status_code == 200, f"... and as stored it is served ({r.status_code})")
r = requests.get(f"{URL}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}/frames/99", timeout=60)
check(r.status_code == 404 and "1 frame" in r.json()["detail"], "a frame that does not exist is 404")
rt = datasets[3]
r = requests.get(f"{URL}/studies/{rt.StudyInstanceUID}/series/{rt.SeriesInstanceUID}/instances/{rt.SOPInstanceUID}/frames/1", timeout=60)
check(r.status_code == 409, "frames of an object without pixel data: 409")

# 4d. Rendered and thumbnail images, as a browser shows them.
from PIL import Image


def get_image(ds, suffix, **kw):
    r = requests.get(
        f"{URL}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/{suffix}",
        timeout=60, **kw,
    )
    return r


r = get_image(ct, "rendered")
check(r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg", f"CT rendered defaults to JPEG ({r.status_code})")
img = Image.open(io.BytesIO(r.content))
check(img.size == (ct.Columns, ct.Rows), f"rendered keeps the image size {img.size}")
narrow = get_image(ct, "rendered", params={"window": "40,80"}, headers={"Accept": "image/png"})
wide = get_image(ct, "rendered", params={"window": "40,4000"}, headers={"Accept": "image/png"})
check(narrow.headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(narrow.content)).format == "PNG", "rendered as PNG on request")
check(narrow.content != wide.content, "window center and width change the rendering")
r = get_image(ct, "thumbnail", params={"viewport": "64,64"})
check(r.status_code == 200 and max(Image.open(io.BytesIO(r.content)).size) <= 64, "thumbnail fits the viewport")
r = requests.get(f"{URL}/studies/{ct.StudyInstanceUID}/thumbnail", timeout=60)
check(r.status_code == 200 and max(Image.open(io.BytesIO(r.content)).size) <= 128, "study thumbnail")
r = get_image(ct, "frames/1/rendered")
check(r.status_code == 200, "frame 1 rendered")
for name in ["MR_small_RLE.dcm", "MR_small_bigendian.dcm"]:
    ds = pydicom.dcmread(io.BytesIO(originals[name]), stop_before_pixels=True)
    r = get_image(ds, "rendered")
    check(r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (ds.Columns, ds.Rows), f"{name} renders")
r = get_image(j2k, "rendered")
check(r.status_code == 200, f"JPEG 2000 renders ({r.status_code} {r.text[:200] if r.status_code != 200 else ''})")
jls = pydicom.dcmread(io.BytesIO(originals["MR_small_jpeg_ls_lossless.dcm"]), stop_before_pixels=True)
plain_mr = pydicom.dcmread(io.BytesIO(originals["MR_small.dcm"]), stop_before_pixels=True)
r = get_image(jls, "rendered", headers={"Accept": "image/png"})
same = get_image(plain_mr, "rendered", headers={"Accept": "image/png"})
check(r.status_code == 200 and same.status_code == 200
      and Image.open(io.BytesIO(r.content)).tobytes() == Image.open(io.BytesIO(same.content)).tobytes(),
      f"a JPEG-LS lossless MR renders to the very image of the uncompressed MR ({r.status_code})")
r = get_image(near, "thumbnail")
check(r.status_code == 200, f"a near-lossless JPEG-LS instance has a thumbnail ({r.status_code})")
r = get_image(rgb_jls, "rendered")
check(r.status_code == 422 and "grayscale" in r.json()["detail"],
      f"a frame the decoder cannot read (colour JPEG-LS) is 422 with the reason ({r.status_code})")
r = get_image(rt, "rendered")
check(r.status_code == 422, "an object without pixel data does not render: 422")
r = get_image(ct, "rendered", params={"window": "40,-5"})
check(r.status_code == 400 and "window" in r.json()["detail"], "a bad window is 400")
r = get_image(ct, "rendered", headers={"Accept": "application/pdf"})
check(r.status_code == 406, "an unsupported rendered type is 406")
r = get_image(ct, "frames/2/rendered")
check(r.status_code == 404, "rendering a frame that does not exist is 404")

# 4b. WADO-URI (PS3.18 §9), as older viewers ask: the same instance, stored bytes or rendered.
WADO = URL.rsplit("/dicom-web", 1)[0] + "/wado"
mr = pydicom.dcmread(io.BytesIO(originals["MR_small.dcm"]), stop_before_pixels=True)
uids = {"requestType": "WADO", "studyUID": mr.StudyInstanceUID, "seriesUID": mr.SeriesInstanceUID,
        "objectUID": mr.SOPInstanceUID}
r = requests.get(WADO, params={**uids, "contentType": "application/dicom"}, timeout=60)
check(r.status_code == 200 and r.headers["Content-Type"] == "application/dicom"
      and r.content == originals["MR_small.dcm"], "WADO-URI application/dicom is the stored file, byte for byte")
r = requests.get(WADO, params=uids, timeout=60)
check(r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
      and Image.open(io.BytesIO(r.content)).format == "JPEG", "WADO-URI defaults to a rendered JPEG")
r = requests.get(WADO, params={**uids, "contentType": "image/png", "windowCenter": "600",
                               "windowWidth": "1200", "rows": "32", "columns": "32"}, timeout=60)
img = Image.open(io.BytesIO(r.content))
check(r.status_code == 200 and img.format == "PNG" and max(img.size) <= 32,
      f"WADO-URI PNG with a window, fitted within rows x columns {img.size}")
r = requests.get(WADO, params={k: v for k, v in uids.items() if k != "objectUID"}, timeout=60)
check(r.status_code == 400 and "objectUID" in r.json()["detail"], "WADO-URI without objectUID: 400 naming it")
r = requests.get(WADO, params={**uids, "requestType": "WADO-RS"}, timeout=60)
check(r.status_code == 400, "WADO-URI with another requestType: 400")
r = requests.get(WADO, params={**uids, "contentType": "application/dicom", "windowCenter": "1", "windowWidth": "2"}, timeout=60)
check(r.status_code == 400, "WADO-URI window on application/dicom: 400")
r = requests.get(WADO, params={**uids, "objectUID": "1.2.3.999"}, timeout=60)
check(r.status_code == 404, "WADO-URI of an instance the hub does not hold: 404")
r = requests.get(WADO, params={**uids, "contentType": "application/pdf"}, timeout=60)
check(r.status_code == 406, "WADO-URI of an unsupported contentType: 406")

# 5. Bad input: each gets a per-instance failure or a problem, the good parts still stored.
good = copy.deepcopy(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
good.SOPInstanceUID = pydicom.uid.generate_uid()
buf = io.BytesIO()
good.save_as(buf, enforce_file_format=True)
good_bytes = buf.getvalue()
r = stow_raw([b"this is not DICOM at all", good_bytes])
check(r.status_code == 202, f"garbage + good part: 202 (got {r.status_code})")
failed = seq(r.json(), "00081198")
check(len(failed) == 1 and failed[0]["00081197"]["Value"][0] == 0xC000, "garbage part fails with 0xC000")
check(len(seq(r.json(), "00081199")) == 1, "the good part of the same request is stored")

r = stow_raw([raw_bytes("MR_truncated.dcm")[:200]])
check(r.status_code == 409, f"a truncated file alone: 409 (got {r.status_code})")

no_uid = copy.deepcopy(good)
del no_uid.SeriesInstanceUID
no_uid.SOPInstanceUID = pydicom.uid.generate_uid()
buf = io.BytesIO()
no_uid.save_as(buf, enforce_file_format=True)
r = stow_raw([buf.getvalue()])
check(r.status_code == 409, "missing SeriesInstanceUID: 409")
check(seq(r.json(), "00081198")[0]["00081197"]["Value"][0] == 0xA900, "missing UID fails with 0xA900")

r = stow_raw([good_bytes], study="1.2.3.4.5.999")
check(r.status_code == 409, "StudyInstanceUID differing from the URL: 409")
check(seq(r.json(), "00081198")[0]["00081197"]["Value"][0] == 0xA900, "URL mismatch fails with 0xA900")

r = stow_raw([good_bytes])
check(r.status_code == 200 and len(seq(r.json(), "00081199")) == 1, "the same bytes again: idempotent 200")
changed = copy.deepcopy(good)
changed.PatientName = "CHANGED^NAME"
buf = io.BytesIO()
changed.save_as(buf, enforce_file_format=True)
r = stow_raw([buf.getvalue()])
check(r.status_code == 409, "same SOP Instance UID, different bytes: 409")
check(seq(r.json(), "00081198")[0]["00081197"]["Value"][0] == 0x0111, "conflict fails with 0x0111")
r = requests.get(
    f"{URL}/studies/{good.StudyInstanceUID}/series/{good.SeriesInstanceUID}/instances/{good.SOPInstanceUID}",
    timeout=60,
)
check(parse_multipart(r)[0] == good_bytes, "the stored original is not overwritten by the conflict")

r = requests.post(f"{URL}/studies", data=good_bytes, headers={"Content-Type": "application/dicom"}, timeout=60)
check(r.status_code == 415, f"wrong content type: 415 (got {r.status_code})")
check("multipart/related" in r.json()["detail"], "415 says what is expected")

r = requests.get(f"{URL}/studies", params={"StudyDate": "2020-01"}, timeout=60)
check(r.status_code == 400, "a malformed StudyDate: 400")
r = requests.get(f"{URL}/studies/1.2.3.404/series/1/instances/2", timeout=60)
check(r.status_code == 404, "an unknown instance: 404")
print("dicomweb round trip: all checks passed")
