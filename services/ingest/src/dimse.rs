//! DIMSE (PS3.7, PS3.8): a C-ECHO and C-STORE SCP on top of dicom-ul's async associations, so
//! that hospital PACS and modalities (dcmtk `storescu`, pynetdicom, ...) can push.
//!
//! Each received data set is stored exactly as it arrived on the wire, behind the Part 10 header
//! (preamble, `DICM`, file meta group naming the negotiated transfer syntax). It goes through the
//! same receive/finish/record pipeline as STOW-RS. A C-STORE-RSP reports success only after the
//! instance's blob is durable AND its event appended: instances are recorded one C-STORE at a
//! time, because an SCU waits for each response, so a crash never loses an acknowledged one.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, PDataValue, PDataValueType, UserIdentity};
use dicom_ul::{Pdu, ServerAssociationOptions};
use hub_events::catalog::IngestSource;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::stow::{Ingest, Receiving, StowResult, reason};

const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1437.1";
const STATUS_SUCCESS: u16 = 0x0000;
const STATUS_UNRECOGNIZED_OPERATION: u16 = 0x0211;

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

#[derive(Clone, Debug)]
pub struct DimseConfig {
    pub ae_title: String,
    pub mapping: AeMapping,
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
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut obj = InMemDicomObject::new_empty();
    let sop_class = if cmd.field == 0x0030 {
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
        PrimitiveValue::from(0x0101_u16),
    ));
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
    let mut receiving: Option<Receiving> = None;
    let mut count = 0usize;
    loop {
        let pdu = match assoc.receive().await {
            Ok(pdu) => pdu,
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
                            if cmd.field == 0x0030 {
                                send(
                                    &mut assoc,
                                    value.presentation_context_id,
                                    response(&cmd, STATUS_SUCCESS),
                                )
                                .await?;
                            } else if cmd.field == 0x0001 {
                                command = Some(cmd);
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
                                return Err("data set without a C-STORE command".into());
                            };
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
                                let status =
                                    store_one(&ingest, r, &institution, &actor, &source).await;
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
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| e.to_string())
}

/// Finishes and records one instance; the C-STORE status to answer.
async fn store_one(
    ingest: &Ingest,
    r: Receiving,
    institution: &str,
    actor: &str,
    source: &IngestSource,
) -> u16 {
    let pending = match ingest.finish(r, None).await {
        Ok(Ok(p)) => p,
        Ok(Err(failed)) => {
            tracing::warn!(detail = %failed.detail, "C-STORE refused");
            return failed.reason;
        }
        Err(e) => {
            tracing::error!(error = %e, "C-STORE: blob store failed");
            return reason::OUT_OF_RESOURCES;
        }
    };
    let mut result = StowResult::default();
    if let Err(e) = ingest
        .record(institution, actor, source, vec![pending], &mut result)
        .await
    {
        tracing::error!(error = %e, "C-STORE: recording failed");
        return reason::OUT_OF_RESOURCES;
    }
    if let Some(f) = result.failed.first() {
        tracing::warn!(detail = %f.detail, "C-STORE refused");
        return f.reason;
    }
    STATUS_SUCCESS
}
