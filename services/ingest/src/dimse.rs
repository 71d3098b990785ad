//! DIMSE (PS3.7, PS3.8): a C-ECHO, C-STORE and (with a `StudyFinder`) study-level C-FIND SCP on
//! top of dicom-ul's async associations, so that hospital PACS and modalities (dcmtk `storescu`,
//! `findscu`, pynetdicom, ...) can push and query.
//!
//! Each received data set is stored exactly as it arrived on the wire, behind the Part 10 header
//! (preamble, `DICM`, file meta group naming the negotiated transfer syntax). It goes through the
//! same receive/finish/record pipeline as STOW-RS. A C-STORE-RSP reports success only after the
//! instance's blob is durable AND its event appended: instances are recorded one C-STORE at a
//! time, because an SCU waits for each response, so a crash never loses an acknowledged one.
//! Queries show an association's instances once its release is confirmed: the SCP waits for
//! them to be visible before the A-RELEASE-RP (and before it answers a C-FIND), not after every
//! C-STORE.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, PDataValue, PDataValueType, UserIdentity};
use dicom_ul::{Pdu, ServerAssociationOptions};
use futures::future::BoxFuture;
use hub_events::catalog::IngestSource;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::stow::{Ingest, Receiving, StowResult, reason};

const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1437.1";
const STATUS_SUCCESS: u16 = 0x0000;
const STATUS_UNRECOGNIZED_OPERATION: u16 = 0x0211;
const STATUS_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
const STATUS_PENDING: u16 = 0xFF00;
/// C-FIND: Identifier does not match SOP Class.
const STATUS_IDENTIFIER_MISMATCH: u16 = 0xA900;
/// C-FIND: Unable to process.
const STATUS_UNABLE_TO_PROCESS: u16 = 0xC000;
const C_STORE: u16 = 0x0001;
const C_FIND: u16 = 0x0020;
const C_ECHO: u16 = 0x0030;
const C_CANCEL: u16 = 0x0FFF;
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";

/// Who asks a C-FIND: the calling AE title and the institution it is mapped to.
#[derive(Clone, Debug)]
pub struct FindCaller {
    pub calling_ae: String,
    pub institution: String,
}

/// The matching keys of a study-level C-FIND identifier; `None` or empty: universal matching.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindKeys {
    pub study_uids: Vec<String>,
    pub patient_id: Option<String>,
    /// May hold `*` and `?` wildcards.
    pub patient_name: Option<String>,
    pub accession_number: Option<String>,
    /// `YYYYMMDD`, or a range `YYYYMMDD-YYYYMMDD` with either end open.
    pub study_date: Option<String>,
    pub modality: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The query cannot be answered as asked (status 0xA900, with the reason).
    #[error("{0}")]
    Refused(String),
    /// The catalog cannot answer now (status 0xC000).
    #[error("{0}")]
    Unavailable(String),
}

/// Answers study-level C-FIND: the studies the caller may see that match, as DICOM JSON. The
/// SCP holds no read model; the embedded hub answers from its catalog through the same
/// authorization point and audit as QIDO-RS.
pub trait StudyFinder: Send + Sync + 'static {
    fn find<'a>(
        &'a self,
        caller: &'a FindCaller,
        keys: &'a FindKeys,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, FindError>>;
}

/// Which institution a calling AE title pushes for.
#[derive(Clone, Debug)]
pub enum AeMapping {
    /// Development mode: every calling AE title pushes for this institution.
    Everyone(String),
    /// Only these calling AE titles are accepted, each for its institution.
    Known(HashMap<String, String>),
}

impl AeMapping {
    pub fn institution(&self, calling_ae: &str) -> Option<&str> {
        match self {
            AeMapping::Everyone(i) => Some(i),
            AeMapping::Known(map) => map.get(calling_ae.trim()).map(String::as_str),
        }
    }
}

#[derive(Clone)]
pub struct DimseConfig {
    pub ae_title: String,
    pub mapping: AeMapping,
    /// Answers C-FIND; `None`: C-FIND is refused (0x0122) with the reason.
    pub finder: Option<Arc<dyn StudyFinder>>,
}

/// Refuses associations for another called AE title, or from an unknown calling AE title.
#[derive(Clone, Debug)]
struct HubAccess(AeMapping);

impl AccessControl for HubAccess {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if self.0.institution(calling_ae_title).is_none() {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Accepts associations on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    ingest: Ingest,
    config: DimseConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((socket, peer)) => {
                let ingest = ingest.clone();
                let config = config.clone();
                tokio::spawn(async move {
                    if let Err(e) = association(socket, ingest, &config).await {
                        tracing::warn!(%peer, error = %e, "DIMSE association ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "DIMSE accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A command set, as received.
struct Command {
    field: u16,
    message_id: u16,
    sop_class_uid: String,
    sop_instance_uid: String,
}

fn read_command(bytes: &[u8]) -> Result<Command, String> {
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &ts).map_err(|e| e.to_string())?;
    let uint = |tag| -> Option<u16> { obj.element(tag).ok()?.uint16().ok() };
    let text = |tag| -> String {
        obj.element(tag)
            .ok()
            .and_then(|e| {
                e.to_str()
                    .ok()
                    .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            })
            .unwrap_or_default()
    };
    Ok(Command {
        field: uint(tags::COMMAND_FIELD).ok_or("command set without Command Field")?,
        message_id: uint(tags::MESSAGE_ID).unwrap_or(0),
        sop_class_uid: text(tags::AFFECTED_SOP_CLASS_UID),
        sop_instance_uid: text(tags::AFFECTED_SOP_INSTANCE_UID),
    })
}

/// Encodes a response command set (implicit VR little endian, with its group length).
fn response(cmd: &Command, status: u16) -> Vec<u8> {
    response_with(cmd, status, false, None)
}

/// A response command set; `with_data` announces an identifier after it, `comment` goes into
/// Error Comment (0000,0902).
fn response_with(cmd: &Command, status: u16, with_data: bool, comment: Option<&str>) -> Vec<u8> {
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut obj = InMemDicomObject::new_empty();
    let sop_class = if cmd.field == C_ECHO {
        VERIFICATION_SOP_CLASS
    } else {
        cmd.sop_class_uid.as_str()
    };
    obj.put(DataElement::new(
        tags::AFFECTED_SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(sop_class),
    ));
    obj.put(DataElement::new(
        tags::COMMAND_FIELD,
        VR::US,
        PrimitiveValue::from(cmd.field | 0x8000),
    ));
    obj.put(DataElement::new(
        tags::MESSAGE_ID_BEING_RESPONDED_TO,
        VR::US,
        PrimitiveValue::from(cmd.message_id),
    ));
    obj.put(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        PrimitiveValue::from(if with_data { 0x0000_u16 } else { 0x0101_u16 }),
    ));
    if let Some(comment) = comment {
        // Error Comment is LO: at most 64 characters.
        let short: String = comment.chars().take(64).collect();
        obj.put(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(short),
        ));
    }
    obj.put(DataElement::new(
        tags::STATUS,
        VR::US,
        PrimitiveValue::from(status),
    ));
    if !cmd.sop_instance_uid.is_empty() {
        obj.put(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(cmd.sop_instance_uid.as_str()),
        ));
    }
    let mut body = Vec::new();
    // Writing a small in-memory command set to a Vec cannot fail.
    let _ = obj.write_dataset_with_ts(&mut body, &ts);
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The Part 10 header put in front of a data set received over DIMSE.
fn part10_header(cmd: &Command, transfer_syntax: &str) -> Result<Vec<u8>, String> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(cmd.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(cmd.sop_instance_uid.as_str())
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name("REGIONAL-HUB")
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

async fn association(
    socket: TcpStream,
    ingest: Ingest,
    config: &DimseConfig,
) -> Result<(), String> {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(HubAccess(config.mapping.clone()))
        .ae_title(config.ae_title.as_str())
        .promiscuous(true)
        .with_abstract_syntax(VERIFICATION_SOP_CLASS);
    for ts in TransferSyntaxRegistry.iter() {
        if !ts.is_unsupported() {
            options = options.with_transfer_syntax(ts.uid());
        }
    }
    // Each answer (a C-STORE response, a C-FIND match) goes out at once, not held back until
    // the peer acknowledges what went before (Nagle).
    let _ = socket.set_nodelay(true);
    let mut assoc = options
        .establish_async(socket)
        .await
        .map_err(|e| e.to_string())?;
    let calling_ae = dicom_ul::association::Association::peer_ae_title(&assoc)
        .trim()
        .to_owned();
    let institution = config
        .mapping
        .institution(&calling_ae)
        .ok_or_else(|| format!("calling AE title {calling_ae} is not mapped"))?
        .to_owned();
    let association_id = uuid::Uuid::now_v7().to_string();
    let source = IngestSource::Dimse {
        calling_ae: calling_ae.clone(),
        association_id: association_id.clone(),
    };
    let actor = format!("ae:{calling_ae}");
    tracing::info!(%calling_ae, %institution, "DIMSE association accepted");
    let contexts: HashMap<u8, String> = assoc
        .presentation_contexts()
        .iter()
        .map(|pc| (pc.id, pc.transfer_syntax.clone()))
        .collect();

    let mut command: Option<Command> = None;
    // The last position this association appended, to be visible before release or C-FIND.
    let mut recorded: Option<hub_events::Position> = None;
    let mut find_identifier: Vec<u8> = Vec::new();
    let mut receiving: Option<Receiving> = None;
    let mut count = 0usize;
    loop {
        let pdu = match assoc.receive().await {
            Ok(pdu) => {
                // Acknowledge what was read at once: Linux delays an ACK up to 40 ms, and a
                // sender whose last, short segment of an instance waits for it (dcmsend does)
                // would stall that long per instance. The kernel leaves quick-ACK mode by
                // itself, so it is asked again after every PDU.
                #[cfg(target_os = "linux")]
                let _ = assoc.inner_stream().set_quickack(true);
                pdu
            }
            Err(e) => {
                if let Some(r) = receiving.take() {
                    r.abort().await;
                }
                return Err(format!("receive failed: {e}"));
            }
        };
        match pdu {
            Pdu::PData { data } => {
                for value in data {
                    match value.value_type {
                        PDataValueType::Command => {
                            // Commands fit one fragment in practice; a split one is joined.
                            let cmd = read_command(&value.data)?;
                            if cmd.field == C_ECHO {
                                send(
                                    &mut assoc,
                                    value.presentation_context_id,
                                    response(&cmd, STATUS_SUCCESS),
                                )
                                .await?;
                            } else if cmd.field == C_STORE || cmd.field == C_FIND {
                                find_identifier.clear();
                                command = Some(cmd);
                            } else if cmd.field == C_CANCEL {
                                // Every C-FIND is answered in full before the next PDU is
                                // read, so there is nothing left to cancel.
                            } else {
                                tracing::warn!(command = cmd.field, "unsupported DIMSE command");
                                send(
                                    &mut assoc,
                                    value.presentation_context_id,
                                    response(&cmd, STATUS_UNRECOGNIZED_OPERATION),
                                )
                                .await?;
                            }
                        }
                        PDataValueType::Data => {
                            let Some(cmd) = command.as_ref() else {
                                return Err("data set without a C-STORE or C-FIND command".into());
                            };
                            if cmd.field == C_FIND {
                                find_identifier.extend_from_slice(&value.data);
                                if value.is_last
                                    && let Some(cmd) = command.take()
                                {
                                    let pc = value.presentation_context_id;
                                    let ts = contexts.get(&pc).cloned().unwrap_or_default();
                                    let caller = FindCaller {
                                        calling_ae: calling_ae.clone(),
                                        institution: institution.clone(),
                                    };
                                    let identifier = std::mem::take(&mut find_identifier);
                                    if let Some(p) = recorded.take() {
                                        ingest.wait_visible(p).await;
                                    }
                                    for (data, status, comment) in
                                        c_find(config, &caller, &cmd, &identifier, &ts).await
                                    {
                                        let with_data = data.is_some();
                                        send(
                                            &mut assoc,
                                            pc,
                                            response_with(
                                                &cmd,
                                                status,
                                                with_data,
                                                comment.as_deref(),
                                            ),
                                        )
                                        .await?;
                                        if let Some(data) = data {
                                            send_data(&mut assoc, pc, data).await?;
                                        }
                                    }
                                }
                                continue;
                            }
                            if receiving.is_none() {
                                count += 1;
                                let ts = contexts
                                    .get(&value.presentation_context_id)
                                    .cloned()
                                    .unwrap_or_default();
                                let mut r = ingest
                                    .begin(
                                        &format!("{association_id}-{count}"),
                                        format!("C-STORE {}", cmd.sop_instance_uid),
                                    )
                                    .await
                                    .map_err(|e| e.to_string())?;
                                let header = part10_header(cmd, ts.trim_end_matches('\0'))?;
                                r.write(Bytes::from(header))
                                    .await
                                    .map_err(|e| e.to_string())?;
                                receiving = Some(r);
                            }
                            if let Some(r) = receiving.as_mut() {
                                r.write(Bytes::from(value.data))
                                    .await
                                    .map_err(|e| e.to_string())?;
                            }
                            if value.is_last
                                && let (Some(r), Some(cmd)) = (receiving.take(), command.take())
                            {
                                let (status, position) =
                                    store_one(&ingest, r, &institution, &actor, &source).await;
                                recorded = recorded.max(position);
                                send(
                                    &mut assoc,
                                    value.presentation_context_id,
                                    response(&cmd, status),
                                )
                                .await?;
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                if let Some(p) = recorded {
                    ingest.wait_visible(p).await;
                }
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                tracing::info!(%calling_ae, instances = count, "DIMSE association released");
                return Ok(());
            }
            Pdu::AbortRQ { .. } => {
                if let Some(r) = receiving.take() {
                    r.abort().await;
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

async fn send<S>(
    assoc: &mut dicom_ul::association::server::AsyncServerAssociation<S>,
    pc: u8,
    data: Vec<u8>,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    send_pdv(assoc, pc, PDataValueType::Command, data).await
}

async fn send_data<S>(
    assoc: &mut dicom_ul::association::server::AsyncServerAssociation<S>,
    pc: u8,
    data: Vec<u8>,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    send_pdv(assoc, pc, PDataValueType::Data, data).await
}

async fn send_pdv<S>(
    assoc: &mut dicom_ul::association::server::AsyncServerAssociation<S>,
    pc: u8,
    value_type: PDataValueType,
    data: Vec<u8>,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| e.to_string())
}

/// One C-FIND response to send: its identifier (encoded), status, and error comment.
type FindResponse = (Option<Vec<u8>>, u16, Option<String>);

/// Answers one C-FIND-RQ: a pending response with an identifier per match, then the final one.
async fn c_find(
    config: &DimseConfig,
    caller: &FindCaller,
    cmd: &Command,
    identifier: &[u8],
    transfer_syntax: &str,
) -> Vec<FindResponse> {
    let fail = |status, why: String| {
        tracing::warn!(calling_ae = %caller.calling_ae, status, reason = %why, "C-FIND refused");
        vec![(None, status, Some(why))]
    };
    let Some(finder) = config.finder.as_ref() else {
        return fail(
            STATUS_SOP_CLASS_NOT_SUPPORTED,
            "C-FIND is not answered by this node; use QIDO-RS".into(),
        );
    };
    if cmd.sop_class_uid != STUDY_ROOT_FIND && cmd.sop_class_uid != PATIENT_ROOT_FIND {
        return fail(
            STATUS_SOP_CLASS_NOT_SUPPORTED,
            format!("{} is not a supported C-FIND model", cmd.sop_class_uid),
        );
    }
    let ts_uid = transfer_syntax.trim_end_matches('\0');
    let Some(ts) = TransferSyntaxRegistry.get(ts_uid) else {
        return fail(
            STATUS_UNABLE_TO_PROCESS,
            format!("unknown transfer syntax {ts_uid}"),
        );
    };
    let request = match InMemDicomObject::read_dataset_with_ts(identifier, ts) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                STATUS_UNABLE_TO_PROCESS,
                format!("unreadable identifier: {e}"),
            );
        }
    };
    let keys = match find_keys(&request) {
        Ok(k) => k,
        Err(why) => return fail(STATUS_IDENTIFIER_MISMATCH, why),
    };
    let studies = match finder.find(caller, &keys).await {
        Ok(s) => s,
        Err(FindError::Refused(why)) => return fail(STATUS_IDENTIFIER_MISMATCH, why),
        Err(FindError::Unavailable(why)) => return fail(STATUS_UNABLE_TO_PROCESS, why),
    };
    let mut out = Vec::with_capacity(studies.len() + 1);
    for study in studies {
        match answer_identifier(&request, study, ts) {
            Ok(bytes) => out.push((Some(bytes), STATUS_PENDING, None)),
            Err(why) => return fail(STATUS_UNABLE_TO_PROCESS, why),
        }
    }
    tracing::info!(calling_ae = %caller.calling_ae, matches = out.len(), "C-FIND answered");
    out.push((None, STATUS_SUCCESS, None));
    out
}

/// Attributes of the identifier that are never matching keys.
const NOT_KEYS: [Tag; 3] = [
    tags::QUERY_RETRIEVE_LEVEL,
    tags::SPECIFIC_CHARACTER_SET,
    tags::TIMEZONE_OFFSET_FROM_UTC,
];

/// The matching keys of a study-level identifier; a non-empty key the catalog cannot match on
/// is refused with its name, never ignored (that would answer more than was asked).
pub fn find_keys(request: &InMemDicomObject) -> Result<FindKeys, String> {
    let text = |e: &dicom_object::mem::InMemElement| -> String {
        e.to_str()
            .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_owned())
            .unwrap_or_default()
    };
    let level = request
        .element(tags::QUERY_RETRIEVE_LEVEL)
        .map(text)
        .unwrap_or_default();
    if level != "STUDY" {
        return Err(format!(
            "QueryRetrieveLevel must be STUDY (this SCP answers study-level C-FIND), got {level:?}"
        ));
    }
    let mut keys = FindKeys::default();
    for element in request.iter() {
        let tag = element.tag();
        if NOT_KEYS.contains(&tag) {
            continue;
        }
        let value = text(element);
        if value.is_empty() || value == "*" {
            continue;
        }
        match tag {
            tags::STUDY_INSTANCE_UID => {
                keys.study_uids = value
                    .split('\\')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect()
            }
            tags::PATIENT_ID => keys.patient_id = Some(value),
            tags::PATIENT_NAME => keys.patient_name = Some(value),
            tags::ACCESSION_NUMBER => keys.accession_number = Some(value),
            tags::STUDY_DATE => keys.study_date = Some(value),
            tags::MODALITIES_IN_STUDY => {
                if value.contains('\\') {
                    return Err(format!(
                        "ModalitiesInStudy matches one modality at a time, got {value:?}"
                    ));
                }
                keys.modality = Some(value)
            }
            other => {
                let name = dicom_dictionary_std::StandardDataDictionary
                    .by_tag(other)
                    .map_or("an attribute", |e| e.alias());
                return Err(format!(
                    "matching on {other} {name} is not supported; match on PatientID, \
                     PatientName, StudyDate, ModalitiesInStudy, AccessionNumber or \
                     StudyInstanceUID and leave other keys empty"
                ));
            }
        }
    }
    Ok(keys)
}

/// The identifier of one match: every attribute the request named, with the study's value or
/// empty, plus the level and the character set (UTF-8).
fn answer_identifier(
    request: &InMemDicomObject,
    study: serde_json::Value,
    ts: &dicom_encoding::TransferSyntax,
) -> Result<Vec<u8>, String> {
    let found: InMemDicomObject =
        dicom_json::from_value(study).map_err(|e| format!("catalog answer: {e}"))?;
    let mut out = InMemDicomObject::new_empty();
    out.put(DataElement::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    out.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("STUDY"),
    ));
    for element in request.iter() {
        let tag = element.tag();
        if NOT_KEYS.contains(&tag) {
            continue;
        }
        match found.element(tag) {
            Ok(e) => out.put(e.clone()),
            Err(_) => out.put(DataElement::new(tag, element.vr(), PrimitiveValue::Empty)),
        };
    }
    let mut bytes = Vec::new();
    out.write_dataset_with_ts(&mut bytes, ts)
        .map_err(|e| format!("encoding the answer: {e}"))?;
    Ok(bytes)
}

/// Finishes and records one instance (durable and appended); the C-STORE status to answer and
/// the position it appended, if any.
async fn store_one(
    ingest: &Ingest,
    r: Receiving,
    institution: &str,
    actor: &str,
    source: &IngestSource,
) -> (u16, Option<hub_events::Position>) {
    let pending = match ingest.finish(r, None).await {
        Ok(Ok(p)) => p,
        Ok(Err(failed)) => {
            tracing::warn!(detail = %failed.detail, "C-STORE refused");
            return (failed.reason, None);
        }
        Err(e) => {
            tracing::error!(error = %e, "C-STORE: blob store failed");
            return (reason::OUT_OF_RESOURCES, None);
        }
    };
    let mut result = StowResult::default();
    if let Err(e) = ingest
        .record_durable(institution, actor, source, vec![pending], &mut result)
        .await
    {
        tracing::error!(error = %e, "C-STORE: recording failed");
        return (reason::OUT_OF_RESOURCES, None);
    }
    if let Some(f) = result.failed.first() {
        tracing::warn!(detail = %f.detail, "C-STORE refused");
        return (f.reason, result.last_position);
    }
    (STATUS_SUCCESS, result.last_position)
}
