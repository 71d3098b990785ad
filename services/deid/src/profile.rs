//! The Basic Application Level Confidentiality Profile: DICOM PS3.15 Annex E, Table E.1-1, the
//! "Basic Prof." column (2024b edition), one row per attribute, and what this crate does with
//! each action code.
//!
//! Action codes (Table E.1-1a) and how they are carried out here. The combined codes let a
//! de-identifier pick by the attribute's type in the IOD; this crate does not know the IOD, so it
//! takes the choice that is conformant whatever the type, and never keeps an original value:
//!
//! | code | meaning | done here |
//! |---|---|---|
//! | D | replace with a non-zero length dummy | a dummy for the VR (below) |
//! | Z | zero length (or a dummy) | emptied |
//! | X | remove | removed |
//! | U | replace with a UID consistent within the set | [`crate::Deidentifier::map_uid`] |
//! | Z/D | Z unless D is needed for a Type 1 | dummy |
//! | X/Z | X unless Z is needed for a Type 2 | emptied |
//! | X/D | X unless D is needed for a Type 1 | dummy |
//! | X/Z/D | X unless Z or D is needed | dummy |
//! | X/Z/U* | X unless Z, or for a Type 1 sequence of references, U of the UIDs inside | kept, its items de-identified (so references between instances of a share still resolve) |
//!
//! K (keep) and C (clean) do not appear in the Basic Profile column: K is what happens to every
//! attribute the table does not list (kept; a sequence is kept with the profile applied to each of
//! its items), C belongs to the options, none of which is implemented.
//!
//! Dummies (the Standard does not mandate any value): dates `19000101`, times `000000`,
//! date-times `19000101000000`, ages `000D`, IS/DS `0`, other text (PN included) `ANONYMIZED`,
//! UIDs as for U, binary values eight zero bytes, and a sequence becomes empty (a dummy item
//! cannot be invented without knowing its macro: e.g. Content Sequence holds free text the table
//! does not list). A value that was already empty stays empty. Numeric binary VRs and AT have no
//! dummy here (no Basic Profile D attribute has them): such an element is removed.
//!
//! Two exceptions give a consistent pseudonym instead: Patient's Name (Z, a dummy allowed) and
//! Patient ID (Z/D) become [`crate::Deidentifier::pseudonym`] of the Patient ID (of the name when
//! there is no Patient ID).
//!
//! Beyond the table, also removed: private attributes (the table's "(gggg,eeee) where gggg is
//! odd" row; the Retain Safe Private Option is not implemented), curve data (50xx,xxxx) and
//! overlay data and comments (60xx,3000), (60xx,4000) (the table's repeating-group rows; the
//! Clean Graphics Option is not implemented), [`EXTRA_REMOVED`], and a sequence that arrived
//! as opaque UN bytes (its items, which could hold UIDs or names, cannot be de-identified).

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};

/// One Basic Profile action code of Table E.1-1 (legend in Table E.1-1a).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// D: replace with a non-zero length dummy value consistent with the VR.
    Dummy,
    /// Z: replace with a zero length value, or a dummy.
    Zero,
    /// X: remove.
    Remove,
    /// U: replace with a non-zero length UID that is internally consistent within a set of
    /// instances.
    Uid,
    /// Z/D: Z unless D is required to maintain IOD conformance (Type 2 versus Type 1).
    ZeroOrDummy,
    /// X/Z: X unless Z is required (Type 3 versus Type 2).
    RemoveOrZero,
    /// X/D: X unless D is required (Type 3 versus Type 1).
    RemoveOrDummy,
    /// X/Z/D: X unless Z or D is required (Type 3 versus Type 2 versus Type 1).
    RemoveOrZeroOrDummy,
    /// X/Z/U*: X unless Z or replacement of contained instance UIDs (U) is required (Type 3
    /// versus Type 2 versus Type 1 sequences containing UID references).
    RemoveOrZeroOrUids,
}

const D: Action = Action::Dummy;
const Z: Action = Action::Zero;
const X: Action = Action::Remove;
const U: Action = Action::Uid;
const Z_D: Action = Action::ZeroOrDummy;
const X_Z: Action = Action::RemoveOrZero;
const X_D: Action = Action::RemoveOrDummy;
const X_Z_D: Action = Action::RemoveOrZeroOrDummy;
const X_Z_U: Action = Action::RemoveOrZeroOrUids;

/// Table E.1-1, Basic Profile column: every attribute with a fixed tag, sorted by tag (the
/// repeating groups and private attributes are in [`basic_profile_action`]). The keyword of each
/// attribute is in the comment.
pub const BASIC_PROFILE: &[(Tag, Action)] = &[
    (Tag(0x0000, 0x1000), X),     // AffectedSOPInstanceUID
    (Tag(0x0000, 0x1001), U),     // RequestedSOPInstanceUID
    (Tag(0x0002, 0x0003), U),     // MediaStorageSOPInstanceUID
    (Tag(0x0004, 0x1511), U),     // ReferencedSOPInstanceUIDInFile
    (Tag(0x0008, 0x0012), X_D),   // InstanceCreationDate
    (Tag(0x0008, 0x0013), X_Z_D), // InstanceCreationTime
    (Tag(0x0008, 0x0014), U),     // InstanceCreatorUID
    (Tag(0x0008, 0x0015), X),     // InstanceCoercionDateTime
    (Tag(0x0008, 0x0017), U),     // AcquisitionUID
    (Tag(0x0008, 0x0018), U),     // SOPInstanceUID
    (Tag(0x0008, 0x0019), U),     // PyramidUID
    (Tag(0x0008, 0x0020), Z),     // StudyDate
    (Tag(0x0008, 0x0021), X_D),   // SeriesDate
    (Tag(0x0008, 0x0022), X_Z),   // AcquisitionDate
    (Tag(0x0008, 0x0023), Z_D),   // ContentDate
    (Tag(0x0008, 0x0024), X),     // OverlayDate
    (Tag(0x0008, 0x0025), X),     // CurveDate
    (Tag(0x0008, 0x002A), X_Z_D), // AcquisitionDateTime
    (Tag(0x0008, 0x0030), Z),     // StudyTime
    (Tag(0x0008, 0x0031), X_D),   // SeriesTime
    (Tag(0x0008, 0x0032), X_Z),   // AcquisitionTime
    (Tag(0x0008, 0x0033), Z_D),   // ContentTime
    (Tag(0x0008, 0x0034), X),     // OverlayTime
    (Tag(0x0008, 0x0035), X),     // CurveTime
    (Tag(0x0008, 0x0050), Z),     // AccessionNumber
    (Tag(0x0008, 0x0054), X),     // RetrieveAETitle
    (Tag(0x0008, 0x0055), X),     // StationAETitle
    (Tag(0x0008, 0x0058), U),     // FailedSOPInstanceUIDList
    (Tag(0x0008, 0x0080), X_Z_D), // InstitutionName
    (Tag(0x0008, 0x0081), X),     // InstitutionAddress
    (Tag(0x0008, 0x0082), X_Z_D), // InstitutionCodeSequence
    (Tag(0x0008, 0x0090), Z),     // ReferringPhysicianName
    (Tag(0x0008, 0x0092), X),     // ReferringPhysicianAddress
    (Tag(0x0008, 0x0094), X),     // ReferringPhysicianTelephoneNumbers
    (Tag(0x0008, 0x0096), X),     // ReferringPhysicianIdentificationSequence
    (Tag(0x0008, 0x009C), Z),     // ConsultingPhysicianName
    (Tag(0x0008, 0x009D), X),     // ConsultingPhysicianIdentificationSequence
    (Tag(0x0008, 0x0106), D),     // ContextGroupVersion
    (Tag(0x0008, 0x0107), D),     // ContextGroupLocalVersion
    (Tag(0x0008, 0x0201), X),     // TimezoneOffsetFromUTC
    (Tag(0x0008, 0x1000), X),     // NetworkID
    (Tag(0x0008, 0x1010), X_Z_D), // StationName
    (Tag(0x0008, 0x1030), X),     // StudyDescription
    (Tag(0x0008, 0x103E), X),     // SeriesDescription
    (Tag(0x0008, 0x1040), X),     // InstitutionalDepartmentName
    (Tag(0x0008, 0x1041), X),     // InstitutionalDepartmentTypeCodeSequence
    (Tag(0x0008, 0x1048), X),     // PhysiciansOfRecord
    (Tag(0x0008, 0x1049), X),     // PhysiciansOfRecordIdentificationSequence
    (Tag(0x0008, 0x1050), X),     // PerformingPhysicianName
    (Tag(0x0008, 0x1052), X),     // PerformingPhysicianIdentificationSequence
    (Tag(0x0008, 0x1060), X),     // NameOfPhysiciansReadingStudy
    (Tag(0x0008, 0x1062), X),     // PhysiciansReadingStudyIdentificationSequence
    (Tag(0x0008, 0x1070), X_Z_D), // OperatorsName
    (Tag(0x0008, 0x1072), X_D),   // OperatorIdentificationSequence
    (Tag(0x0008, 0x1080), X),     // AdmittingDiagnosesDescription
    (Tag(0x0008, 0x1084), X),     // AdmittingDiagnosesCodeSequence
    (Tag(0x0008, 0x1088), X),     // PyramidDescription
    (Tag(0x0008, 0x1110), X_Z),   // ReferencedStudySequence
    (Tag(0x0008, 0x1111), X_Z_D), // ReferencedPerformedProcedureStepSequence
    (Tag(0x0008, 0x1120), X),     // ReferencedPatientSequence
    (Tag(0x0008, 0x1140), X_Z_U), // ReferencedImageSequence
    (Tag(0x0008, 0x1155), U),     // ReferencedSOPInstanceUID
    (Tag(0x0008, 0x1195), U),     // TransactionUID
    (Tag(0x0008, 0x2111), X),     // DerivationDescription
    (Tag(0x0008, 0x2112), X_Z_U), // SourceImageSequence
    (Tag(0x0008, 0x3010), U),     // IrradiationEventUID
    (Tag(0x0008, 0x4000), X),     // IdentifyingComments
    (Tag(0x0010, 0x0010), Z),     // PatientName
    (Tag(0x0010, 0x0020), Z_D),   // PatientID
    (Tag(0x0010, 0x0021), X),     // IssuerOfPatientID
    (Tag(0x0010, 0x0030), Z),     // PatientBirthDate
    (Tag(0x0010, 0x0032), X),     // PatientBirthTime
    (Tag(0x0010, 0x0040), Z),     // PatientSex
    (Tag(0x0010, 0x0050), X),     // PatientInsurancePlanCodeSequence
    (Tag(0x0010, 0x0101), X),     // PatientPrimaryLanguageCodeSequence
    (Tag(0x0010, 0x0102), X),     // PatientPrimaryLanguageModifierCodeSequence
    (Tag(0x0010, 0x1000), X),     // OtherPatientIDs
    (Tag(0x0010, 0x1001), X),     // OtherPatientNames
    (Tag(0x0010, 0x1002), X),     // OtherPatientIDsSequence
    (Tag(0x0010, 0x1005), X),     // PatientBirthName
    (Tag(0x0010, 0x1010), X),     // PatientAge
    (Tag(0x0010, 0x1020), X),     // PatientSize
    (Tag(0x0010, 0x1030), X),     // PatientWeight
    (Tag(0x0010, 0x1040), X),     // PatientAddress
    (Tag(0x0010, 0x1050), X),     // InsurancePlanIdentification
    (Tag(0x0010, 0x1060), X),     // PatientMotherBirthName
    (Tag(0x0010, 0x1080), X),     // MilitaryRank
    (Tag(0x0010, 0x1081), X),     // BranchOfService
    (Tag(0x0010, 0x1090), X),     // MedicalRecordLocator
    (Tag(0x0010, 0x1100), X),     // ReferencedPatientPhotoSequence
    (Tag(0x0010, 0x2000), X),     // MedicalAlerts
    (Tag(0x0010, 0x2110), X),     // Allergies
    (Tag(0x0010, 0x2150), X),     // CountryOfResidence
    (Tag(0x0010, 0x2152), X),     // RegionOfResidence
    (Tag(0x0010, 0x2154), X),     // PatientTelephoneNumbers
    (Tag(0x0010, 0x2155), X),     // PatientTelecomInformation
    (Tag(0x0010, 0x2160), X),     // EthnicGroup
    (Tag(0x0010, 0x2180), X),     // Occupation
    (Tag(0x0010, 0x21A0), X),     // SmokingStatus
    (Tag(0x0010, 0x21B0), X),     // AdditionalPatientHistory
    (Tag(0x0010, 0x21C0), X),     // PregnancyStatus
    (Tag(0x0010, 0x21D0), X),     // LastMenstrualDate
    (Tag(0x0010, 0x21F0), X),     // PatientReligiousPreference
    (Tag(0x0010, 0x2203), X_Z),   // PatientSexNeutered
    (Tag(0x0010, 0x2297), X),     // ResponsiblePerson
    (Tag(0x0010, 0x2299), X),     // ResponsibleOrganization
    (Tag(0x0010, 0x4000), X),     // PatientComments
    (Tag(0x0012, 0x0010), D),     // ClinicalTrialSponsorName
    (Tag(0x0012, 0x0020), D),     // ClinicalTrialProtocolID
    (Tag(0x0012, 0x0021), Z),     // ClinicalTrialProtocolName
    (Tag(0x0012, 0x0022), X),     // IssuerOfClinicalTrialProtocolID
    (Tag(0x0012, 0x0023), X),     // OtherClinicalTrialProtocolIDsSequence
    (Tag(0x0012, 0x0030), Z),     // ClinicalTrialSiteID
    (Tag(0x0012, 0x0031), Z),     // ClinicalTrialSiteName
    (Tag(0x0012, 0x0032), X),     // IssuerOfClinicalTrialSiteID
    (Tag(0x0012, 0x0040), D),     // ClinicalTrialSubjectID
    (Tag(0x0012, 0x0041), X),     // IssuerOfClinicalTrialSubjectID
    (Tag(0x0012, 0x0042), D),     // ClinicalTrialSubjectReadingID
    (Tag(0x0012, 0x0043), X),     // IssuerOfClinicalTrialSubjectReadingID
    (Tag(0x0012, 0x0050), Z),     // ClinicalTrialTimePointID
    (Tag(0x0012, 0x0051), X),     // ClinicalTrialTimePointDescription
    (Tag(0x0012, 0x0055), X),     // IssuerOfClinicalTrialTimePointID
    (Tag(0x0012, 0x0060), Z),     // ClinicalTrialCoordinatingCenterName
    (Tag(0x0012, 0x0071), X),     // ClinicalTrialSeriesID
    (Tag(0x0012, 0x0072), X),     // ClinicalTrialSeriesDescription
    (Tag(0x0012, 0x0073), X),     // IssuerOfClinicalTrialSeriesID
    (Tag(0x0012, 0x0081), D),     // ClinicalTrialProtocolEthicsCommitteeName
    (Tag(0x0012, 0x0082), X),     // ClinicalTrialProtocolEthicsCommitteeApprovalNumber
    (Tag(0x0012, 0x0086), X),     // EthicsCommitteeApprovalEffectivenessStartDate
    (Tag(0x0012, 0x0087), X),     // EthicsCommitteeApprovalEffectivenessEndDate
    (Tag(0x0014, 0x407C), X),     // CalibrationTime
    (Tag(0x0014, 0x407E), X),     // CalibrationDate
    (Tag(0x0016, 0x002B), X),     // MakerNote
    (Tag(0x0016, 0x004B), X),     // DeviceSettingDescription
    (Tag(0x0016, 0x004D), X),     // CameraOwnerName
    (Tag(0x0016, 0x004E), X),     // LensSpecification
    (Tag(0x0016, 0x004F), X),     // LensMake
    (Tag(0x0016, 0x0050), X),     // LensModel
    (Tag(0x0016, 0x0051), X),     // LensSerialNumber
    (Tag(0x0016, 0x0070), X),     // GPSVersionID
    (Tag(0x0016, 0x0071), X),     // GPSLatitudeRef
    (Tag(0x0016, 0x0072), X),     // GPSLatitude
    (Tag(0x0016, 0x0073), X),     // GPSLongitudeRef
    (Tag(0x0016, 0x0074), X),     // GPSLongitude
    (Tag(0x0016, 0x0075), X),     // GPSAltitudeRef
    (Tag(0x0016, 0x0076), X),     // GPSAltitude
    (Tag(0x0016, 0x0077), X),     // GPSTimeStamp
    (Tag(0x0016, 0x0078), X),     // GPSSatellites
    (Tag(0x0016, 0x0079), X),     // GPSStatus
    (Tag(0x0016, 0x007A), X),     // GPSMeasureMode
    (Tag(0x0016, 0x007B), X),     // GPSDOP
    (Tag(0x0016, 0x007C), X),     // GPSSpeedRef
    (Tag(0x0016, 0x007D), X),     // GPSSpeed
    (Tag(0x0016, 0x007E), X),     // GPSTrackRef
    (Tag(0x0016, 0x007F), X),     // GPSTrack
    (Tag(0x0016, 0x0080), X),     // GPSImgDirectionRef
    (Tag(0x0016, 0x0081), X),     // GPSImgDirection
    (Tag(0x0016, 0x0082), X),     // GPSMapDatum
    (Tag(0x0016, 0x0083), X),     // GPSDestLatitudeRef
    (Tag(0x0016, 0x0084), X),     // GPSDestLatitude
    (Tag(0x0016, 0x0085), X),     // GPSDestLongitudeRef
    (Tag(0x0016, 0x0086), X),     // GPSDestLongitude
    (Tag(0x0016, 0x0087), X),     // GPSDestBearingRef
    (Tag(0x0016, 0x0088), X),     // GPSDestBearing
    (Tag(0x0016, 0x0089), X),     // GPSDestDistanceRef
    (Tag(0x0016, 0x008A), X),     // GPSDestDistance
    (Tag(0x0016, 0x008B), X),     // GPSProcessingMethod
    (Tag(0x0016, 0x008C), X),     // GPSAreaInformation
    (Tag(0x0016, 0x008D), X),     // GPSDateStamp
    (Tag(0x0016, 0x008E), X),     // GPSDifferential
    (Tag(0x0018, 0x0010), Z_D),   // ContrastBolusAgent
    (Tag(0x0018, 0x0027), X),     // InterventionDrugStopTime
    (Tag(0x0018, 0x0035), X),     // InterventionDrugStartTime
    (Tag(0x0018, 0x1000), X_Z_D), // DeviceSerialNumber
    (Tag(0x0018, 0x1002), U),     // DeviceUID
    (Tag(0x0018, 0x1004), X),     // PlateID
    (Tag(0x0018, 0x1005), X),     // GeneratorID
    (Tag(0x0018, 0x1007), X),     // CassetteID
    (Tag(0x0018, 0x1008), X),     // GantryID
    (Tag(0x0018, 0x1009), X),     // UniqueDeviceIdentifier
    (Tag(0x0018, 0x100A), X),     // UDISequence
    (Tag(0x0018, 0x100B), U),     // ManufacturerDeviceClassUID
    (Tag(0x0018, 0x1012), X),     // DateOfSecondaryCapture
    (Tag(0x0018, 0x1014), X),     // TimeOfSecondaryCapture
    (Tag(0x0018, 0x1030), X_D),   // ProtocolName
    (Tag(0x0018, 0x1042), X),     // ContrastBolusStartTime
    (Tag(0x0018, 0x1043), X),     // ContrastBolusStopTime
    (Tag(0x0018, 0x1072), X),     // RadiopharmaceuticalStartTime
    (Tag(0x0018, 0x1073), X),     // RadiopharmaceuticalStopTime
    (Tag(0x0018, 0x1078), X),     // RadiopharmaceuticalStartDateTime
    (Tag(0x0018, 0x1079), X),     // RadiopharmaceuticalStopDateTime
    (Tag(0x0018, 0x11BB), D),     // AcquisitionFieldOfViewLabel
    (Tag(0x0018, 0x1200), X),     // DateOfLastCalibration
    (Tag(0x0018, 0x1201), X),     // TimeOfLastCalibration
    (Tag(0x0018, 0x1202), X),     // DateTimeOfLastCalibration
    (Tag(0x0018, 0x1203), Z),     // CalibrationDateTime
    (Tag(0x0018, 0x1204), X),     // DateOfManufacture
    (Tag(0x0018, 0x1205), X),     // DateOfInstallation
    (Tag(0x0018, 0x1400), X_D),   // AcquisitionDeviceProcessingDescription
    (Tag(0x0018, 0x2042), U),     // TargetUID
    (Tag(0x0018, 0x4000), X),     // AcquisitionComments
    (Tag(0x0018, 0x5011), X),     // TransducerIdentificationSequence
    (Tag(0x0018, 0x700A), X_D),   // DetectorID
    (Tag(0x0018, 0x700C), X_D),   // DateOfLastDetectorCalibration
    (Tag(0x0018, 0x700E), X_D),   // TimeOfLastDetectorCalibration
    (Tag(0x0018, 0x9074), D),     // FrameAcquisitionDateTime
    (Tag(0x0018, 0x9151), D),     // FrameReferenceDateTime
    (Tag(0x0018, 0x9185), X),     // RespiratoryMotionCompensationTechniqueDescription
    (Tag(0x0018, 0x9367), D),     // XRaySourceID
    (Tag(0x0018, 0x9369), D),     // SourceStartDateTime
    (Tag(0x0018, 0x936A), D),     // SourceEndDateTime
    (Tag(0x0018, 0x9371), D),     // XRayDetectorID
    (Tag(0x0018, 0x9373), X),     // XRayDetectorLabel
    (Tag(0x0018, 0x937B), X),     // MultienergyAcquisitionDescription
    (Tag(0x0018, 0x937F), X),     // DecompositionDescription
    (Tag(0x0018, 0x9424), X),     // AcquisitionProtocolDescription
    (Tag(0x0018, 0x9516), X_D),   // StartAcquisitionDateTime
    (Tag(0x0018, 0x9517), X_D),   // EndAcquisitionDateTime
    (Tag(0x0018, 0x9623), D),     // FunctionalSyncPulse
    (Tag(0x0018, 0x9701), D),     // DecayCorrectionDateTime
    (Tag(0x0018, 0x9804), D),     // ExclusionStartDateTime
    (Tag(0x0018, 0x9919), Z_D),   // InstructionPerformedDateTime
    (Tag(0x0018, 0x9937), X),     // RequestedSeriesDescription
    (Tag(0x0018, 0xA002), X),     // ContributionDateTime
    (Tag(0x0018, 0xA003), X),     // ContributionDescription
    (Tag(0x0020, 0x000D), U),     // StudyInstanceUID
    (Tag(0x0020, 0x000E), U),     // SeriesInstanceUID
    (Tag(0x0020, 0x0010), Z),     // StudyID
    (Tag(0x0020, 0x0027), X),     // PyramidLabel
    (Tag(0x0020, 0x0052), U),     // FrameOfReferenceUID
    (Tag(0x0020, 0x0200), U),     // SynchronizationFrameOfReferenceUID
    (Tag(0x0020, 0x3401), X),     // ModifyingDeviceID
    (Tag(0x0020, 0x3403), X),     // ModifiedImageDate
    (Tag(0x0020, 0x3405), X),     // ModifiedImageTime
    (Tag(0x0020, 0x3406), X),     // ModifiedImageDescription
    (Tag(0x0020, 0x4000), X),     // ImageComments
    (Tag(0x0020, 0x9158), X),     // FrameComments
    (Tag(0x0020, 0x9161), U),     // ConcatenationUID
    (Tag(0x0020, 0x9164), U),     // DimensionOrganizationUID
    (Tag(0x0028, 0x1199), U),     // PaletteColorLookupTableUID
    (Tag(0x0028, 0x1214), U),     // LargePaletteColorLookupTableUID
    (Tag(0x0028, 0x4000), X),     // ImagePresentationComments
    (Tag(0x0032, 0x0012), X),     // StudyIDIssuer
    (Tag(0x0032, 0x0032), X),     // StudyVerifiedDate
    (Tag(0x0032, 0x0033), X),     // StudyVerifiedTime
    (Tag(0x0032, 0x0034), X),     // StudyReadDate
    (Tag(0x0032, 0x0035), X),     // StudyReadTime
    (Tag(0x0032, 0x1000), X),     // ScheduledStudyStartDate
    (Tag(0x0032, 0x1001), X),     // ScheduledStudyStartTime
    (Tag(0x0032, 0x1010), X),     // ScheduledStudyStopDate
    (Tag(0x0032, 0x1011), X),     // ScheduledStudyStopTime
    (Tag(0x0032, 0x1020), X),     // ScheduledStudyLocation
    (Tag(0x0032, 0x1021), X),     // ScheduledStudyLocationAETitle
    (Tag(0x0032, 0x1030), X),     // ReasonForStudy
    (Tag(0x0032, 0x1032), X),     // RequestingPhysician
    (Tag(0x0032, 0x1033), X),     // RequestingService
    (Tag(0x0032, 0x1040), X),     // StudyArrivalDate
    (Tag(0x0032, 0x1041), X),     // StudyArrivalTime
    (Tag(0x0032, 0x1050), X),     // StudyCompletionDate
    (Tag(0x0032, 0x1051), X),     // StudyCompletionTime
    (Tag(0x0032, 0x1060), X_Z),   // RequestedProcedureDescription
    (Tag(0x0032, 0x1066), X),     // ReasonForVisit
    (Tag(0x0032, 0x1067), X),     // ReasonForVisitCodeSequence
    (Tag(0x0032, 0x1070), X),     // RequestedContrastAgent
    (Tag(0x0032, 0x4000), X),     // StudyComments
    (Tag(0x0034, 0x0001), D),     // FlowIdentifierSequence
    (Tag(0x0034, 0x0002), D),     // FlowIdentifier
    (Tag(0x0034, 0x0005), D),     // SourceIdentifier
    (Tag(0x0034, 0x0007), D),     // FrameOriginTimestamp
    (Tag(0x0038, 0x0004), X),     // ReferencedPatientAliasSequence
    (Tag(0x0038, 0x0010), X),     // AdmissionID
    (Tag(0x0038, 0x0011), X),     // IssuerOfAdmissionID
    (Tag(0x0038, 0x0014), X),     // IssuerOfAdmissionIDSequence
    (Tag(0x0038, 0x001A), X),     // ScheduledAdmissionDate
    (Tag(0x0038, 0x001B), X),     // ScheduledAdmissionTime
    (Tag(0x0038, 0x001C), X),     // ScheduledDischargeDate
    (Tag(0x0038, 0x001D), X),     // ScheduledDischargeTime
    (Tag(0x0038, 0x001E), X),     // ScheduledPatientInstitutionResidence
    (Tag(0x0038, 0x0020), X),     // AdmittingDate
    (Tag(0x0038, 0x0021), X),     // AdmittingTime
    (Tag(0x0038, 0x0030), X),     // DischargeDate
    (Tag(0x0038, 0x0032), X),     // DischargeTime
    (Tag(0x0038, 0x0040), X),     // DischargeDiagnosisDescription
    (Tag(0x0038, 0x0050), X),     // SpecialNeeds
    (Tag(0x0038, 0x0060), X),     // ServiceEpisodeID
    (Tag(0x0038, 0x0061), X),     // IssuerOfServiceEpisodeID
    (Tag(0x0038, 0x0062), X),     // ServiceEpisodeDescription
    (Tag(0x0038, 0x0064), X),     // IssuerOfServiceEpisodeIDSequence
    (Tag(0x0038, 0x0300), X),     // CurrentPatientLocation
    (Tag(0x0038, 0x0400), X),     // PatientInstitutionResidence
    (Tag(0x0038, 0x0500), X),     // PatientState
    (Tag(0x0038, 0x4000), X),     // VisitComments
    (Tag(0x003A, 0x0310), U),     // MultiplexGroupUID
    (Tag(0x003A, 0x0314), D),     // ImpedanceMeasurementDateTime
    (Tag(0x003A, 0x0329), X),     // WaveformFilterDescription
    (Tag(0x003A, 0x032B), X),     // FilterLookupTableDescription
    (Tag(0x0040, 0x0001), X),     // ScheduledStationAETitle
    (Tag(0x0040, 0x0002), X),     // ScheduledProcedureStepStartDate
    (Tag(0x0040, 0x0003), X),     // ScheduledProcedureStepStartTime
    (Tag(0x0040, 0x0004), X),     // ScheduledProcedureStepEndDate
    (Tag(0x0040, 0x0005), X),     // ScheduledProcedureStepEndTime
    (Tag(0x0040, 0x0006), X),     // ScheduledPerformingPhysicianName
    (Tag(0x0040, 0x0007), X),     // ScheduledProcedureStepDescription
    (Tag(0x0040, 0x0009), X),     // ScheduledProcedureStepID
    (Tag(0x0040, 0x000B), X),     // ScheduledPerformingPhysicianIdentificationSequence
    (Tag(0x0040, 0x0010), X),     // ScheduledStationName
    (Tag(0x0040, 0x0011), X),     // ScheduledProcedureStepLocation
    (Tag(0x0040, 0x0012), X),     // PreMedication
    (Tag(0x0040, 0x0241), X),     // PerformedStationAETitle
    (Tag(0x0040, 0x0242), X),     // PerformedStationName
    (Tag(0x0040, 0x0243), X),     // PerformedLocation
    (Tag(0x0040, 0x0244), X),     // PerformedProcedureStepStartDate
    (Tag(0x0040, 0x0245), X),     // PerformedProcedureStepStartTime
    (Tag(0x0040, 0x0250), X),     // PerformedProcedureStepEndDate
    (Tag(0x0040, 0x0251), X),     // PerformedProcedureStepEndTime
    (Tag(0x0040, 0x0253), X),     // PerformedProcedureStepID
    (Tag(0x0040, 0x0254), X),     // PerformedProcedureStepDescription
    (Tag(0x0040, 0x0275), X),     // RequestAttributesSequence
    (Tag(0x0040, 0x0280), X),     // CommentsOnThePerformedProcedureStep
    (Tag(0x0040, 0x0310), X),     // CommentsOnRadiationDose
    (Tag(0x0040, 0x050A), X),     // SpecimenAccessionNumber
    (Tag(0x0040, 0x0512), D),     // ContainerIdentifier
    (Tag(0x0040, 0x0513), Z),     // IssuerOfTheContainerIdentifierSequence
    (Tag(0x0040, 0x051A), X),     // ContainerDescription
    (Tag(0x0040, 0x0551), D),     // SpecimenIdentifier
    (Tag(0x0040, 0x0554), U),     // SpecimenUID
    (Tag(0x0040, 0x0555), X_Z),   // AcquisitionContextSequence
    (Tag(0x0040, 0x0562), Z),     // IssuerOfTheSpecimenIdentifierSequence
    (Tag(0x0040, 0x0600), X),     // SpecimenShortDescription
    (Tag(0x0040, 0x0602), X),     // SpecimenDetailedDescription
    (Tag(0x0040, 0x0610), Z),     // SpecimenPreparationSequence
    (Tag(0x0040, 0x06FA), X),     // SlideIdentifier
    (Tag(0x0040, 0x1001), X),     // RequestedProcedureID
    (Tag(0x0040, 0x1002), X),     // ReasonForTheRequestedProcedure
    (Tag(0x0040, 0x1004), X),     // PatientTransportArrangements
    (Tag(0x0040, 0x1005), X),     // RequestedProcedureLocation
    (Tag(0x0040, 0x100A), X),     // ReasonForRequestedProcedureCodeSequence
    (Tag(0x0040, 0x1010), X),     // NamesOfIntendedRecipientsOfResults
    (Tag(0x0040, 0x1011), X),     // IntendedRecipientsOfResultsIdentificationSequence
    (Tag(0x0040, 0x1101), D),     // PersonIdentificationCodeSequence
    (Tag(0x0040, 0x1102), X),     // PersonAddress
    (Tag(0x0040, 0x1103), X),     // PersonTelephoneNumbers
    (Tag(0x0040, 0x1104), X),     // PersonTelecomInformation
    (Tag(0x0040, 0x1400), X),     // RequestedProcedureComments
    (Tag(0x0040, 0x2001), X),     // ReasonForTheImagingServiceRequest
    (Tag(0x0040, 0x2004), X),     // IssueDateOfImagingServiceRequest
    (Tag(0x0040, 0x2005), X),     // IssueTimeOfImagingServiceRequest
    (Tag(0x0040, 0x2008), X),     // OrderEnteredBy
    (Tag(0x0040, 0x2009), X),     // OrderEntererLocation
    (Tag(0x0040, 0x2010), X),     // OrderCallbackPhoneNumber
    (Tag(0x0040, 0x2011), X),     // OrderCallbackTelecomInformation
    (Tag(0x0040, 0x2016), Z),     // PlacerOrderNumberImagingServiceRequest
    (Tag(0x0040, 0x2017), Z),     // FillerOrderNumberImagingServiceRequest
    (Tag(0x0040, 0x2400), X),     // ImagingServiceRequestComments
    (Tag(0x0040, 0x3001), X),     // ConfidentialityConstraintOnPatientDataDescription
    (Tag(0x0040, 0x4005), X),     // ScheduledProcedureStepStartDateTime
    (Tag(0x0040, 0x4008), X),     // ScheduledProcedureStepExpirationDateTime
    (Tag(0x0040, 0x4010), X),     // ScheduledProcedureStepModificationDateTime
    (Tag(0x0040, 0x4011), X),     // ExpectedCompletionDateTime
    (Tag(0x0040, 0x4023), U),     // ReferencedGeneralPurposeScheduledProcedureStepTransactionUID
    (Tag(0x0040, 0x4025), X),     // ScheduledStationNameCodeSequence
    (Tag(0x0040, 0x4027), X),     // ScheduledStationGeographicLocationCodeSequence
    (Tag(0x0040, 0x4028), X),     // PerformedStationNameCodeSequence
    (Tag(0x0040, 0x4030), X),     // PerformedStationGeographicLocationCodeSequence
    (Tag(0x0040, 0x4034), X),     // ScheduledHumanPerformersSequence
    (Tag(0x0040, 0x4035), X),     // ActualHumanPerformersSequence
    (Tag(0x0040, 0x4036), X),     // HumanPerformerOrganization
    (Tag(0x0040, 0x4037), X),     // HumanPerformerName
    (Tag(0x0040, 0x4050), X),     // PerformedProcedureStepStartDateTime
    (Tag(0x0040, 0x4051), X),     // PerformedProcedureStepEndDateTime
    (Tag(0x0040, 0x4052), X),     // ProcedureStepCancellationDateTime
    (Tag(0x0040, 0xA023), X),     // FindingsGroupRecordingDateTrial
    (Tag(0x0040, 0xA024), X),     // FindingsGroupRecordingTimeTrial
    (Tag(0x0040, 0xA027), D),     // VerifyingOrganization
    (Tag(0x0040, 0xA030), D),     // VerificationDateTime
    (Tag(0x0040, 0xA032), X_D),   // ObservationDateTime
    (Tag(0x0040, 0xA033), X),     // ObservationStartDateTime
    (Tag(0x0040, 0xA073), D),     // VerifyingObserverSequence
    (Tag(0x0040, 0xA075), D),     // VerifyingObserverName
    (Tag(0x0040, 0xA078), X),     // AuthorObserverSequence
    (Tag(0x0040, 0xA07A), X),     // ParticipantSequence
    (Tag(0x0040, 0xA07C), X),     // CustodialOrganizationSequence
    (Tag(0x0040, 0xA082), Z),     // ParticipationDateTime
    (Tag(0x0040, 0xA088), Z),     // VerifyingObserverIdentificationCodeSequence
    (Tag(0x0040, 0xA110), X),     // DateOfDocumentOrVerbalTransactionTrial
    (Tag(0x0040, 0xA112), X),     // TimeOfDocumentCreationOrVerbalTransactionTrial
    (Tag(0x0040, 0xA120), D),     // DateTime
    (Tag(0x0040, 0xA121), D),     // Date
    (Tag(0x0040, 0xA122), D),     // Time
    (Tag(0x0040, 0xA123), D),     // PersonName
    (Tag(0x0040, 0xA124), U),     // UID
    (Tag(0x0040, 0xA13A), D),     // ReferencedDateTime
    (Tag(0x0040, 0xA171), U),     // ObservationUID
    (Tag(0x0040, 0xA172), U),     // ReferencedObservationUIDTrial
    (Tag(0x0040, 0xA192), X),     // ObservationDateTrial
    (Tag(0x0040, 0xA193), X),     // ObservationTimeTrial
    (Tag(0x0040, 0xA307), X),     // CurrentObserverTrial
    (Tag(0x0040, 0xA352), X),     // VerbalSourceTrial
    (Tag(0x0040, 0xA353), X),     // AddressTrial
    (Tag(0x0040, 0xA354), X),     // TelephoneNumberTrial
    (Tag(0x0040, 0xA358), X),     // VerbalSourceIdentifierCodeSequenceTrial
    (Tag(0x0040, 0xA402), U),     // ObservationSubjectUIDTrial
    (Tag(0x0040, 0xA730), D),     // ContentSequence
    (Tag(0x0040, 0xDB06), X),     // TemplateVersion
    (Tag(0x0040, 0xDB07), X),     // TemplateLocalVersion
    (Tag(0x0040, 0xDB0C), U),     // TemplateExtensionOrganizationUID
    (Tag(0x0040, 0xDB0D), U),     // TemplateExtensionCreatorUID
    (Tag(0x0040, 0xE004), X),     // HL7DocumentEffectiveTime
    (Tag(0x0042, 0x0011), D),     // EncapsulatedDocument
    (Tag(0x0044, 0x0004), X),     // ApprovalStatusDateTime
    (Tag(0x0044, 0x000B), X),     // ProductExpirationDateTime
    (Tag(0x0044, 0x0010), X),     // SubstanceAdministrationDateTime
    (Tag(0x0044, 0x0104), D),     // AssertionDateTime
    (Tag(0x0044, 0x0105), X),     // AssertionExpirationDateTime
    (Tag(0x0050, 0x001B), X),     // ContainerComponentID
    (Tag(0x0050, 0x0020), X),     // DeviceDescription
    (Tag(0x0050, 0x0021), X),     // LongDeviceDescription
    (Tag(0x0062, 0x0021), U),     // TrackingUID
    (Tag(0x0064, 0x0003), U),     // SourceFrameOfReferenceUID
    (Tag(0x0068, 0x6226), D),     // EffectiveDateTime
    (Tag(0x0068, 0x6270), D),     // InformationIssueDateTime
    (Tag(0x006A, 0x0003), D),     // AnnotationGroupUID
    (Tag(0x006A, 0x0005), D),     // AnnotationGroupLabel
    (Tag(0x006A, 0x0006), X),     // AnnotationGroupDescription
    (Tag(0x0070, 0x0001), D),     // GraphicAnnotationSequence
    (Tag(0x0070, 0x0082), X),     // PresentationCreationDate
    (Tag(0x0070, 0x0083), X),     // PresentationCreationTime
    (Tag(0x0070, 0x0084), Z_D),   // ContentCreatorName
    (Tag(0x0070, 0x0086), X),     // ContentCreatorIdentificationCodeSequence
    (Tag(0x0070, 0x031A), U),     // FiducialUID
    (Tag(0x0070, 0x1101), U),     // PresentationDisplayCollectionUID
    (Tag(0x0070, 0x1102), U),     // PresentationSequenceCollectionUID
    (Tag(0x0072, 0x000A), D),     // HangingProtocolCreationDateTime
    (Tag(0x0072, 0x005E), D),     // SelectorAEValue
    (Tag(0x0072, 0x005F), D),     // SelectorASValue
    (Tag(0x0072, 0x0061), D),     // SelectorDAValue
    (Tag(0x0072, 0x0063), D),     // SelectorDTValue
    (Tag(0x0072, 0x0065), D),     // SelectorOBValue
    (Tag(0x0072, 0x0066), D),     // SelectorLOValue
    (Tag(0x0072, 0x0068), D),     // SelectorLTValue
    (Tag(0x0072, 0x006A), D),     // SelectorPNValue
    (Tag(0x0072, 0x006B), D),     // SelectorTMValue
    (Tag(0x0072, 0x006C), D),     // SelectorSHValue
    (Tag(0x0072, 0x006D), D),     // SelectorUNValue
    (Tag(0x0072, 0x006E), D),     // SelectorSTValue
    (Tag(0x0072, 0x0070), D),     // SelectorUTValue
    (Tag(0x0072, 0x0071), D),     // SelectorURValue
    (Tag(0x0074, 0x1234), X),     // ReceivingAE
    (Tag(0x0074, 0x1236), X),     // RequestingAE
    (Tag(0x0088, 0x0140), U),     // StorageMediaFileSetUID
    (Tag(0x0088, 0x0200), X),     // IconImageSequence
    (Tag(0x0088, 0x0904), X),     // TopicTitle
    (Tag(0x0088, 0x0906), X),     // TopicSubject
    (Tag(0x0088, 0x0910), X),     // TopicAuthor
    (Tag(0x0088, 0x0912), X),     // TopicKeywords
    (Tag(0x0100, 0x0420), X),     // SOPAuthorizationDateTime
    (Tag(0x0400, 0x0100), U),     // DigitalSignatureUID
    (Tag(0x0400, 0x0105), D),     // DigitalSignatureDateTime
    (Tag(0x0400, 0x0115), D),     // CertificateOfSigner
    (Tag(0x0400, 0x0310), X),     // CertifiedTimestamp
    (Tag(0x0400, 0x0402), X),     // ReferencedDigitalSignatureSequence
    (Tag(0x0400, 0x0403), X),     // ReferencedSOPInstanceMACSequence
    (Tag(0x0400, 0x0404), X),     // MAC
    (Tag(0x0400, 0x0550), X),     // ModifiedAttributesSequence
    (Tag(0x0400, 0x0551), X),     // NonconformingModifiedAttributesSequence
    (Tag(0x0400, 0x0552), X),     // NonconformingDataElementValue
    (Tag(0x0400, 0x0561), X),     // OriginalAttributesSequence
    (Tag(0x0400, 0x0562), D),     // AttributeModificationDateTime
    (Tag(0x0400, 0x0563), D),     // ModifyingSystem
    (Tag(0x0400, 0x0564), Z),     // SourceOfPreviousValues
    (Tag(0x0400, 0x0565), D),     // ReasonForTheAttributeModification
    (Tag(0x0400, 0x0600), X),     // InstanceOriginStatus
    (Tag(0x2030, 0x0020), X),     // TextString
    (Tag(0x2100, 0x0040), X),     // CreationDate
    (Tag(0x2100, 0x0050), X),     // CreationTime
    (Tag(0x2100, 0x0070), X),     // Originator
    (Tag(0x2100, 0x0140), D),     // DestinationAE
    (Tag(0x2200, 0x0002), X_Z),   // LabelText
    (Tag(0x2200, 0x0005), X_Z),   // BarcodeValue
    (Tag(0x3002, 0x0121), X),     // PositionAcquisitionTemplateName
    (Tag(0x3002, 0x0123), X),     // PositionAcquisitionTemplateDescription
    (Tag(0x3006, 0x0002), D),     // StructureSetLabel
    (Tag(0x3006, 0x0004), X),     // StructureSetName
    (Tag(0x3006, 0x0006), X),     // StructureSetDescription
    (Tag(0x3006, 0x0008), Z),     // StructureSetDate
    (Tag(0x3006, 0x0009), Z),     // StructureSetTime
    (Tag(0x3006, 0x0024), U),     // ReferencedFrameOfReferenceUID
    (Tag(0x3006, 0x0026), Z),     // ROIName
    (Tag(0x3006, 0x0028), X),     // ROIDescription
    (Tag(0x3006, 0x002D), X),     // ROIDateTime
    (Tag(0x3006, 0x002E), X),     // ROIObservationDateTime
    (Tag(0x3006, 0x0038), X),     // ROIGenerationDescription
    (Tag(0x3006, 0x004D), X),     // ROICreatorSequence
    (Tag(0x3006, 0x004E), X),     // ROIInterpreterSequence
    (Tag(0x3006, 0x0085), X),     // ROIObservationLabel
    (Tag(0x3006, 0x0088), X),     // ROIObservationDescription
    (Tag(0x3006, 0x00A6), Z),     // ROIInterpreter
    (Tag(0x3006, 0x00C2), U),     // RelatedFrameOfReferenceUID
    (Tag(0x3008, 0x0024), D),     // TreatmentControlPointDate
    (Tag(0x3008, 0x0025), D),     // TreatmentControlPointTime
    (Tag(0x3008, 0x0054), X_D),   // FirstTreatmentDate
    (Tag(0x3008, 0x0056), X_D),   // MostRecentTreatmentDate
    (Tag(0x3008, 0x0105), X_Z),   // SourceSerialNumber
    (Tag(0x3008, 0x0162), D),     // SafePositionExitDate
    (Tag(0x3008, 0x0164), D),     // SafePositionExitTime
    (Tag(0x3008, 0x0166), D),     // SafePositionReturnDate
    (Tag(0x3008, 0x0168), D),     // SafePositionReturnTime
    (Tag(0x3008, 0x0250), X_D),   // TreatmentDate
    (Tag(0x3008, 0x0251), X_D),   // TreatmentTime
    (Tag(0x300A, 0x0002), D),     // RTPlanLabel
    (Tag(0x300A, 0x0003), X),     // RTPlanName
    (Tag(0x300A, 0x0004), X),     // RTPlanDescription
    (Tag(0x300A, 0x0006), X_D),   // RTPlanDate
    (Tag(0x300A, 0x0007), X_D),   // RTPlanTime
    (Tag(0x300A, 0x000B), X),     // TreatmentSites
    (Tag(0x300A, 0x000E), X),     // PrescriptionDescription
    (Tag(0x300A, 0x0013), U),     // DoseReferenceUID
    (Tag(0x300A, 0x0016), X),     // DoseReferenceDescription
    (Tag(0x300A, 0x0072), X),     // FractionGroupDescription
    (Tag(0x300A, 0x0083), U),     // ReferencedDoseReferenceUID
    (Tag(0x300A, 0x00B2), X_Z),   // TreatmentMachineName
    (Tag(0x300A, 0x00C3), X),     // BeamDescription
    (Tag(0x300A, 0x00DD), X),     // BolusDescription
    (Tag(0x300A, 0x0196), X),     // FixationDeviceDescription
    (Tag(0x300A, 0x01A6), X),     // ShieldingDeviceDescription
    (Tag(0x300A, 0x01B2), X),     // SetupTechniqueDescription
    (Tag(0x300A, 0x0216), X),     // SourceManufacturer
    (Tag(0x300A, 0x022C), D),     // SourceStrengthReferenceDate
    (Tag(0x300A, 0x022E), D),     // SourceStrengthReferenceTime
    (Tag(0x300A, 0x02EB), X),     // CompensatorDescription
    (Tag(0x300A, 0x0608), D),     // TreatmentPositionGroupLabel
    (Tag(0x300A, 0x0609), U),     // TreatmentPositionGroupUID
    (Tag(0x300A, 0x0611), Z),     // RTAccessoryHolderSlotID
    (Tag(0x300A, 0x0615), Z),     // RTAccessoryDeviceSlotID
    (Tag(0x300A, 0x0619), D),     // RadiationDoseIdentificationLabel
    (Tag(0x300A, 0x0623), D),     // RadiationDoseInVivoMeasurementLabel
    (Tag(0x300A, 0x062A), D),     // RTToleranceSetLabel
    (Tag(0x300A, 0x0650), U),     // PatientSetupUID
    (Tag(0x300A, 0x0676), X),     // EquipmentFrameOfReferenceDescription
    (Tag(0x300A, 0x067C), D),     // RadiationGenerationModeLabel
    (Tag(0x300A, 0x067D), Z),     // RadiationGenerationModeDescription
    (Tag(0x300A, 0x0700), U),     // TreatmentSessionUID
    (Tag(0x300A, 0x0734), D),     // TreatmentToleranceViolationDescription
    (Tag(0x300A, 0x0736), D),     // TreatmentToleranceViolationDateTime
    (Tag(0x300A, 0x073A), D),     // RecordedRTControlPointDateTime
    (Tag(0x300A, 0x0741), D),     // InterlockDateTime
    (Tag(0x300A, 0x0742), D),     // InterlockDescription
    (Tag(0x300A, 0x0760), D),     // OverrideDateTime
    (Tag(0x300A, 0x0783), D),     // InterlockOriginDescription
    (Tag(0x300A, 0x0785), U),     // ReferencedTreatmentPositionGroupUID
    (Tag(0x300A, 0x078E), X),     // PatientTreatmentPreparationProcedureParameterDescription
    (Tag(0x300A, 0x0792), X),     // PatientTreatmentPreparationMethodDescription
    (Tag(0x300A, 0x0794), X),     // PatientSetupPhotoDescription
    (Tag(0x300A, 0x079A), X),     // DisplacementReferenceLabel
    (Tag(0x300C, 0x0113), X),     // ReasonForOmissionDescription
    (Tag(0x300C, 0x0127), D),     // BeamHoldTransitionDateTime
    (Tag(0x300E, 0x0004), Z),     // ReviewDate
    (Tag(0x300E, 0x0005), Z),     // ReviewTime
    (Tag(0x300E, 0x0008), X_Z),   // ReviewerName
    (Tag(0x3010, 0x0006), U),     // ConceptualVolumeUID
    (Tag(0x3010, 0x000B), U),     // ReferencedConceptualVolumeUID
    (Tag(0x3010, 0x000F), Z),     // ConceptualVolumeCombinationDescription
    (Tag(0x3010, 0x0013), U),     // ConstituentConceptualVolumeUID
    (Tag(0x3010, 0x0015), U),     // SourceConceptualVolumeUID
    (Tag(0x3010, 0x0017), Z),     // ConceptualVolumeDescription
    (Tag(0x3010, 0x001B), Z),     // DeviceAlternateIdentifier
    (Tag(0x3010, 0x002D), D),     // DeviceLabel
    (Tag(0x3010, 0x0031), U),     // ReferencedFiducialsUID
    (Tag(0x3010, 0x0033), D),     // UserContentLabel
    (Tag(0x3010, 0x0034), D),     // UserContentLongLabel
    (Tag(0x3010, 0x0035), D),     // EntityLabel
    (Tag(0x3010, 0x0036), X),     // EntityName
    (Tag(0x3010, 0x0037), X),     // EntityDescription
    (Tag(0x3010, 0x0038), D),     // EntityLongLabel
    (Tag(0x3010, 0x003B), U),     // RTTreatmentPhaseUID
    (Tag(0x3010, 0x0043), Z),     // ManufacturerDeviceIdentifier
    (Tag(0x3010, 0x004C), X_D),   // IntendedPhaseStartDate
    (Tag(0x3010, 0x004D), X_D),   // IntendedPhaseEndDate
    (Tag(0x3010, 0x0054), D),     // RTPrescriptionLabel
    (Tag(0x3010, 0x0056), X_D),   // RTTreatmentApproachLabel
    (Tag(0x3010, 0x005A), Z),     // RTPhysicianIntentNarrative
    (Tag(0x3010, 0x005C), Z),     // ReasonForSuperseding
    (Tag(0x3010, 0x0061), X),     // PriorTreatmentDoseDescription
    (Tag(0x3010, 0x006E), U),     // DosimetricObjectiveUID
    (Tag(0x3010, 0x006F), U),     // ReferencedDosimetricObjectiveUID
    (Tag(0x3010, 0x0077), X_D),   // TreatmentSite
    (Tag(0x3010, 0x007A), Z),     // TreatmentTechniqueNotes
    (Tag(0x3010, 0x007B), Z),     // PrescriptionNotes
    (Tag(0x3010, 0x007F), Z),     // FractionationNotes
    (Tag(0x3010, 0x0081), Z),     // PrescriptionNotesSequence
    (Tag(0x3010, 0x0085), X),     // IntendedFractionStartTime
    (Tag(0x4000, 0x0010), X),     // Arbitrary
    (Tag(0x4000, 0x4000), X),     // TextComments
    (Tag(0x4008, 0x0040), X),     // ResultsID
    (Tag(0x4008, 0x0042), X),     // ResultsIDIssuer
    (Tag(0x4008, 0x0100), X),     // InterpretationRecordedDate
    (Tag(0x4008, 0x0101), X),     // InterpretationRecordedTime
    (Tag(0x4008, 0x0102), X),     // InterpretationRecorder
    (Tag(0x4008, 0x0108), X),     // InterpretationTranscriptionDate
    (Tag(0x4008, 0x0109), X),     // InterpretationTranscriptionTime
    (Tag(0x4008, 0x010A), X),     // InterpretationTranscriber
    (Tag(0x4008, 0x010B), X),     // InterpretationText
    (Tag(0x4008, 0x010C), X),     // InterpretationAuthor
    (Tag(0x4008, 0x0111), X),     // InterpretationApproverSequence
    (Tag(0x4008, 0x0112), X),     // InterpretationApprovalDate
    (Tag(0x4008, 0x0113), X),     // InterpretationApprovalTime
    (Tag(0x4008, 0x0114), X),     // PhysicianApprovingInterpretation
    (Tag(0x4008, 0x0115), X),     // InterpretationDiagnosisDescription
    (Tag(0x4008, 0x0118), X),     // ResultsDistributionListSequence
    (Tag(0x4008, 0x0119), X),     // DistributionName
    (Tag(0x4008, 0x011A), X),     // DistributionAddress
    (Tag(0x4008, 0x0200), X),     // InterpretationID
    (Tag(0x4008, 0x0202), X),     // InterpretationIDIssuer
    (Tag(0x4008, 0x0300), X),     // Impressions
    (Tag(0x4008, 0x4000), X),     // ResultsComments
    (Tag(0xFFFA, 0xFFFA), X),     // DigitalSignaturesSequence
    (Tag(0xFFFC, 0xFFFC), X),     // DataSetTrailingPadding
];

/// Attributes that are not in Table E.1-1 but are removed too, with why. The file meta group
/// appears in DICOM JSON made from a whole file (dicom-json includes it); a de-identified Part 10
/// file gets a new file meta group instead (E.1.1 step 7).
pub const EXTRA_REMOVED: &[(Tag, &str)] = &[
    (
        tags::IMPLEMENTATION_CLASS_UID,
        "describes the application that wrote the original",
    ),
    (
        tags::IMPLEMENTATION_VERSION_NAME,
        "describes the application that wrote the original",
    ),
    (
        tags::SOURCE_APPLICATION_ENTITY_TITLE,
        "names the node the original came from",
    ),
    (
        tags::SENDING_APPLICATION_ENTITY_TITLE,
        "names the node that sent the original",
    ),
    (
        tags::RECEIVING_APPLICATION_ENTITY_TITLE,
        "names the node that received the original",
    ),
    (
        tags::PRIVATE_INFORMATION_CREATOR_UID,
        "private information of the file meta group",
    ),
    (
        tags::PRIVATE_INFORMATION,
        "private information of the file meta group",
    ),
    (
        tags::RETRIEVE_URL,
        "a DICOMweb answer's URL names the original UIDs; the gateway adds the share's own",
    ),
    (
        tags::RETRIEVE_URI,
        "names the original UIDs; the gateway adds the share's own",
    ),
];

/// The Basic Profile action for `tag`: the fixed-tag rows of [`BASIC_PROFILE`], then the rows for
/// repeating groups (curve data 50xx, overlay data and comments 60xx) and private attributes
/// (odd groups), all X. `None` means the attribute is not in the table (kept).
pub fn basic_profile_action(tag: Tag) -> Option<Action> {
    if tag.group() % 2 == 1 {
        return Some(Action::Remove);
    }
    if let Ok(row) = BASIC_PROFILE.binary_search_by_key(&tag, |(t, _)| *t) {
        return Some(BASIC_PROFILE[row].1);
    }
    let repeating = tag.group() & 0xFF00;
    if repeating == 0x5000 || (repeating == 0x6000 && matches!(tag.element(), 0x3000 | 0x4000)) {
        return Some(Action::Remove);
    }
    None
}

/// What is done to one element, once the action codes are resolved (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Kept; a sequence keeps its items with the profile applied to each.
    Keep,
    Remove,
    /// Present with a zero-length value (a sequence without items).
    Empty,
    /// A dummy for the VR ([`dummy_for`]); empty if it was empty.
    Dummy,
    /// Every UID value mapped ([`crate::Deidentifier::map_uid`]).
    RemapUids,
    /// [`crate::Deidentifier::pseudonym`] of the data set's patient.
    Pseudonym,
}

/// True for an element that the dictionary knows as a sequence but that arrived as UN (a sender
/// that did not know its VR) and was not parsed into items: its items cannot be walked into, so
/// the UIDs and names they may hold could not be de-identified. Such an element is removed
/// instead of kept.
pub(crate) fn opaque_sequence(tag: Tag, vr: VR) -> bool {
    vr == VR::UN
        && StandardDataDictionary
            .by_tag(tag)
            .is_some_and(|entry| entry.vr() == VirtualVr::Exact(VR::SQ))
}

/// What is done to the element `tag` wherever it occurs (top level or in a sequence item).
pub(crate) fn effect(tag: Tag) -> Effect {
    if tag == tags::PATIENT_NAME || tag == tags::PATIENT_ID {
        return Effect::Pseudonym;
    }
    // Group lengths are retired in data sets and would be wrong once values change.
    if tag.element() == 0x0000 || EXTRA_REMOVED.iter().any(|(t, _)| *t == tag) {
        return Effect::Remove;
    }
    match basic_profile_action(tag) {
        None | Some(Action::RemoveOrZeroOrUids) => Effect::Keep,
        Some(Action::Remove) => Effect::Remove,
        Some(Action::Zero | Action::RemoveOrZero) => Effect::Empty,
        Some(Action::Uid) => Effect::RemapUids,
        Some(
            Action::Dummy
            | Action::ZeroOrDummy
            | Action::RemoveOrDummy
            | Action::RemoveOrZeroOrDummy,
        ) => Effect::Dummy,
    }
}

/// The dummy value of a VR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dummy {
    /// A text value (for IS and DS a number, written as a number in DICOM JSON).
    Text(&'static str),
    /// The UIDs mapped, as for U.
    Uids,
    /// A sequence without items.
    EmptySequence,
    /// Eight zero bytes.
    Binary,
    /// No dummy: the element is removed.
    None,
}

pub(crate) const DUMMY_TEXT: &str = "ANONYMIZED";
pub(crate) const DUMMY_DATE: &str = "19000101";
pub(crate) const DUMMY_TIME: &str = "000000";
pub(crate) const DUMMY_DATETIME: &str = "19000101000000";
pub(crate) const DUMMY_AGE: &str = "000D";

pub(crate) fn dummy_for(vr: VR) -> Dummy {
    match vr {
        VR::DA => Dummy::Text(DUMMY_DATE),
        VR::TM => Dummy::Text(DUMMY_TIME),
        VR::DT => Dummy::Text(DUMMY_DATETIME),
        VR::AS => Dummy::Text(DUMMY_AGE),
        VR::IS | VR::DS => Dummy::Text("0"),
        VR::AE | VR::CS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UR | VR::UT => {
            Dummy::Text(DUMMY_TEXT)
        }
        VR::UI => Dummy::Uids,
        VR::SQ => Dummy::EmptySequence,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN => Dummy::Binary,
        _ => Dummy::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_without_duplicates() {
        for pair in BASIC_PROFILE.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
    }

    #[test]
    fn rows_and_resolution_of_common_attributes() {
        use Action::*;
        let cases = [
            (tags::ACCESSION_NUMBER, Some(Zero), Effect::Empty),
            (tags::PATIENT_BIRTH_DATE, Some(Zero), Effect::Empty),
            (tags::PATIENT_NAME, Some(Zero), Effect::Pseudonym),
            (tags::PATIENT_ID, Some(ZeroOrDummy), Effect::Pseudonym),
            (
                tags::INSTITUTION_NAME,
                Some(RemoveOrZeroOrDummy),
                Effect::Dummy,
            ),
            (tags::STUDY_DATE, Some(Zero), Effect::Empty),
            (tags::SERIES_DATE, Some(RemoveOrDummy), Effect::Dummy),
            (tags::ACQUISITION_DATE, Some(RemoveOrZero), Effect::Empty),
            (tags::STUDY_INSTANCE_UID, Some(Uid), Effect::RemapUids),
            (
                tags::REFERENCED_SOP_INSTANCE_UID,
                Some(Uid),
                Effect::RemapUids,
            ),
            (
                tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
                Some(Uid),
                Effect::RemapUids,
            ),
            (
                tags::REFERENCED_IMAGE_SEQUENCE,
                Some(RemoveOrZeroOrUids),
                Effect::Keep,
            ),
            (
                tags::REQUEST_ATTRIBUTES_SEQUENCE,
                Some(Remove),
                Effect::Remove,
            ),
            (
                tags::OTHER_PATIENT_I_DS_SEQUENCE,
                Some(Remove),
                Effect::Remove,
            ),
            (Tag(0x0009, 0x1001), Some(Remove), Effect::Remove),
            (Tag(0x0009, 0x0010), Some(Remove), Effect::Remove),
            (Tag(0x5002, 0x3000), Some(Remove), Effect::Remove),
            (Tag(0x6000, 0x3000), Some(Remove), Effect::Remove),
            (Tag(0x6002, 0x4000), Some(Remove), Effect::Remove),
            (Tag(0x6000, 0x0010), None, Effect::Keep),
            (tags::PIXEL_DATA, None, Effect::Keep),
            (tags::SOP_CLASS_UID, None, Effect::Keep),
            (tags::RETRIEVE_URL, None, Effect::Remove),
            (tags::SOURCE_APPLICATION_ENTITY_TITLE, None, Effect::Remove),
            (Tag(0x0008, 0x0000), None, Effect::Remove),
        ];
        for (tag, action, resolved) in cases {
            assert_eq!(basic_profile_action(tag), action, "{tag}");
            assert_eq!(effect(tag), resolved, "{tag}");
        }
    }

    #[test]
    fn dummy_texts_fit_their_vrs() {
        // SH, AE and CS hold at most 16 characters.
        assert!(DUMMY_TEXT.len() <= 16);
        assert_eq!(dummy_for(VR::US), Dummy::None);
    }
}
