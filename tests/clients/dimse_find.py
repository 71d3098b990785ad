"""Study-level C-FIND with real DIMSE clients (pynetdicom, dcmtk findscu) against `hub serve`.

Usage: dimse_find.py HOST PORT

The hub maps calling AE title CT01 to hosp-a and CT02 to hosp-b. CT01 stores three real files
(pydicom's CT and MR test files, given known patients, dates and accession numbers) over C-STORE,
then queries them: by PatientID, by a PatientName wildcard, by a StudyDate range, by
ModalitiesInStudy, by a list of Study Instance UIDs, and with dcmtk's findscu. CT02 sees none of
them (the answers pass the same authorization point as QIDO-RS). A SERIES-level query and a
match on an attribute the catalog cannot match are refused with 0xA900 and the reason.
"""

import subprocess
import sys

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

HOST, PORT = sys.argv[1], int(sys.argv[2])


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def instance(template, patient_id, patient_name, date, accession):
    ds = pydicom.dcmread(get_testdata_file(template))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.AccessionNumber = patient_id, patient_name, date, accession
    return ds


def associate(ae_title, contexts):
    ae = AE(ae_title=ae_title)
    for c in contexts:
        ae.add_requested_context(c)
    assoc = ae.associate(HOST, PORT, ae_title="HUB")
    check(assoc.is_established, f"{ae_title} associates")
    return assoc


def find(ae_title, **keys):
    """(matches, final status, error comment) of one study-level C-FIND."""
    ds = Dataset()
    ds.QueryRetrieveLevel = keys.pop("QueryRetrieveLevel", "STUDY")
    for k in ["StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber",
              "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances",
              "ReferringPhysicianName", "StudyID"]:
        setattr(ds, k, keys.pop(k, ""))
    assert not keys, keys
    assoc = associate(ae_title, [StudyRootQueryRetrieveInformationModelFind])
    matches, final, comment = [], None, None
    for status, identifier in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
        if status is None:
            break
        if status.Status == 0xFF00:
            matches.append(identifier)
        else:
            final = status.Status
            comment = str(getattr(status, "ErrorComment", ""))
    assoc.release()
    return matches, final, comment


# ---- CT01 (hosp-a) stores three studies ---------------------------------------------------------
ct = instance("CT_small.dcm", "FIND-PAT-1", "DOE^JANE", "20240115", "ACC-FIND-1")
mr = instance("MR_small.dcm", "FIND-PAT-1", "DOE^JANE", "20240320", "ACC-FIND-2")
other = instance("CT_small.dcm", "FIND-PAT-2", "ROE^RICHARD", "20231201", "ACC-FIND-3")
assoc = associate("CT01", [CTImageStorage, MRImageStorage])
statuses = [assoc.send_c_store(ds).Status for ds in (ct, mr, other)]
assoc.release()
check(statuses == [0, 0, 0], f"CT01 stores three studies over C-STORE ({statuses})")

# ---- queries -------------------------------------------------------------------------------------
matches, final, _ = find("CT01", PatientID="FIND-PAT-1")
uids = sorted(m.StudyInstanceUID for m in matches)
check(final == 0 and uids == sorted([ct.StudyInstanceUID, mr.StudyInstanceUID]),
      f"by PatientID: both studies of the patient, then success ({len(matches)} matches, status {final})")
m = next(m for m in matches if m.StudyInstanceUID == ct.StudyInstanceUID)
check(str(m.PatientName) == "DOE^JANE" and m.StudyDate == "20240115" and m.AccessionNumber == "ACC-FIND-1"
      and m.QueryRetrieveLevel == "STUDY" and m.ModalitiesInStudy == "CT",
      "the answer carries the study's attributes")
check(int(m.NumberOfStudyRelatedInstances) == 1, "and its instance count")
check(m.StudyDescription == ct.StudyDescription, f"a return key carries the study's value ({m.StudyDescription!r})")
check("ReferringPhysicianName" in m and not m.ReferringPhysicianName and "StudyID" in m,
      "a return key the catalog has no value for comes back empty")

matches, final, _ = find("CT01", PatientName="DOE^J*")
check(final == 0 and len(matches) == 2, f"by a PatientName wildcard ({len(matches)})")
matches, final, _ = find("CT01", PatientID="FIND-PAT-*", StudyDate="20240101-20240229")
check(final == 0 and [m.StudyInstanceUID for m in matches] == [ct.StudyInstanceUID],
      f"by a StudyDate range: only the January study ({len(matches)})")
matches, final, _ = find("CT01", PatientID="FIND-PAT-1", ModalitiesInStudy="MR")
check(final == 0 and [m.StudyInstanceUID for m in matches] == [mr.StudyInstanceUID], "by ModalitiesInStudy")
matches, final, _ = find("CT01", StudyInstanceUID=[ct.StudyInstanceUID, other.StudyInstanceUID])
check(final == 0 and sorted(m.StudyInstanceUID for m in matches) == sorted([ct.StudyInstanceUID, other.StudyInstanceUID]),
      "by a list of Study Instance UIDs")
matches, final, _ = find("CT01", AccessionNumber="ACC-FIND-3")
check(final == 0 and [m.PatientID for m in matches] == ["FIND-PAT-2"], "by AccessionNumber")

# ---- another institution sees nothing of them ------------------------------------------------------
matches, final, _ = find("CT02", PatientID="FIND-PAT-*")
check(final == 0 and matches == [], "CT02 (hosp-b) finds none of hosp-a's studies")

# ---- what cannot be answered is refused with the reason --------------------------------------------
matches, final, comment = find("CT01", QueryRetrieveLevel="SERIES", PatientID="FIND-PAT-1")
check(final == 0xA900 and "STUDY" in comment and not matches, f"a SERIES-level query: 0xA900, {comment!r}")
matches, final, comment = find("CT01", StudyDescription="CHEST")
check(final == 0xA900 and "StudyDescription" in comment, f"matching on StudyDescription: 0xA900, {comment!r}")
matches, final, comment = find("CT01", StudyDate="2024-01-15")
check(final == 0xA900 and "StudyDate" in comment, f"a malformed date: 0xA900, {comment!r}")

# ---- dcmtk findscu ---------------------------------------------------------------------------------
out = subprocess.run(
    ["findscu", "-S", "-aet", "CT01", "-aec", "HUB", "-k", "QueryRetrieveLevel=STUDY",
     "-k", "PatientID=FIND-PAT-2", "-k", "StudyInstanceUID", "-k", "PatientName", HOST, str(PORT)],
    capture_output=True, text=True, timeout=60)
text = out.stdout + out.stderr
check(out.returncode == 0 and other.StudyInstanceUID in text and "ROE^RICHARD" in text,
      f"dcmtk findscu finds the study by PatientID (exit {out.returncode})")
print("all checks passed", flush=True)
