use chrono::{TimeZone, Utc};

use super::*;
use crate::envelope::StreamId;

fn recorded(stream: StreamId, new: NewEvent, position: Position) -> RecordedEvent {
    RecordedEvent {
        position,
        event_id: new.event_id,
        stream_id: stream,
        stream_version: 1,
        event_type: new.event_type,
        schema_version: new.schema_version,
        payload: new.payload,
        recorded_at: Utc::now(),
        metadata: new.metadata,
    }
}

fn meta() -> EventMetadata {
    EventMetadata::new("hosp-a", "user:alice")
}

#[test]
fn every_family_round_trips_through_its_stored_form() {
    let share_id = Uuid::now_v7();
    let cases: Vec<(StreamId, HubEvent)> = vec![
        (
            StreamId::new(Family::Study, "1.2.3"),
            StudyEvent::StudyStabilized {
                study_uid: "1.2.3".into(),
                series_count: 2,
                instance_count: 40,
                modalities: vec!["CT".into(), "SR".into()],
            }
            .into(),
        ),
        (
            StreamId::new(Family::Share, share_id),
            ShareEvent::ShareGranted {
                share_id,
                study_uid: "1.2.3".into(),
                series_uid: None,
                owner: "hosp-a".into(),
                grantee: Grantee::Alliance("north".into()),
                scope: ShareScope::Images,
                purpose: PurposeOfUse::Consultation,
                expires_at: Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()),
            }
            .into(),
        ),
        (
            StreamId::new(Family::Access, "1.2.3"),
            AccessEvent::DataAccessed {
                subject: "bob".into(),
                role: "radiologist".into(),
                institution: "hosp-b".into(),
                action: AccessAction::Rendered,
                study_uid: Some("1.2.3".into()),
                series_uid: None,
                sop_instance_uid: None,
                purpose: PurposeOfUse::Treatment,
                decision: Decision::Deny,
                reason: Some("no grant".into()),
                owner: Some("hosp-a".into()),
                results: vec![],
                expires_at: None,
            }
            .into(),
        ),
    ];
    for (stream, event) in cases {
        let new = event.to_new_event(meta());
        assert!(
            !new.payload.contains("\"type\""),
            "the tag is stored apart: {}",
            new.payload
        );
        let back = HubEvent::decode(&recorded(stream, new, 7)).expect("decodes");
        assert_eq!(back, event);
    }
}

#[test]
fn a_share_granted_in_schema_v1_is_read_back_with_the_field_v2_added() {
    // Exactly what a v1 writer stored: no `purpose`.
    let share_id = Uuid::now_v7();
    let v1 = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "ShareGranted".into(),
        schema_version: 1,
        payload: serde_json::json!({
            "share_id": share_id,
            "study_uid": "1.2.3",
            "series_uid": null,
            "owner": "hosp-a",
            "grantee": {"kind": "institution", "id": "hosp-b"},
            "scope": "metadata",
            "expires_at": null
        })
        .to_string(),
        metadata: meta(),
    };
    let decoded = HubEvent::decode(&recorded(StreamId::new(Family::Share, share_id), v1, 3));
    match decoded {
        Ok(HubEvent::Share(ShareEvent::ShareGranted {
            purpose, grantee, ..
        })) => {
            assert_eq!(purpose, PurposeOfUse::Treatment);
            assert_eq!(grantee, Grantee::Institution("hosp-b".into()));
        }
        other => panic!("expected an upcast ShareGranted, got {other:?}"),
    }
    assert_eq!(current_schema_version("ShareGranted"), 3);
}

/// Issue 24, class 2: a v2 user grant named a bare subject, which any institution's token could
/// carry. It is read back as an `UnscopedUser` (which reaches nobody), never as a user of some
/// institution; v3 user grants name institution and subject.
#[test]
fn a_user_grant_of_schema_v2_is_read_back_as_an_unscoped_user() {
    let share_id = Uuid::now_v7();
    let v2 = |grantee: serde_json::Value| NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "ShareGranted".into(),
        schema_version: 2,
        payload: serde_json::json!({
            "share_id": share_id,
            "study_uid": "1.2.3",
            "series_uid": null,
            "owner": "hosp-a",
            "grantee": grantee,
            "scope": "images",
            "purpose": "treatment",
            "expires_at": null
        })
        .to_string(),
        metadata: meta(),
    };
    let stream = StreamId::new(Family::Share, share_id);
    let grantee_of = |e: NewEvent| match HubEvent::decode(&recorded(stream.clone(), e, 4)) {
        Ok(HubEvent::Share(ShareEvent::ShareGranted { grantee, .. })) => Ok(grantee),
        other => Err(format!("{other:?}")),
    };
    assert_eq!(
        grantee_of(v2(serde_json::json!({"kind": "user", "id": "alice"}))),
        Ok(Grantee::UnscopedUser("alice".into()))
    );
    assert_eq!(
        grantee_of(v2(serde_json::json!({"kind": "alliance", "id": "north"}))),
        Ok(Grantee::Alliance("north".into()))
    );
    // A v2 user grantee that is not a bare subject is corrupt, not guessed at.
    assert!(grantee_of(v2(serde_json::json!({"kind": "user", "id": 7}))).is_err());
    // The current shape round-trips.
    let user = Grantee::User(crate::catalog::UserId {
        institution: "hosp-b".into(),
        subject: "alice".into(),
    });
    let v3 = ShareEvent::ShareGranted {
        share_id,
        study_uid: "1.2.3".into(),
        series_uid: None,
        owner: "hosp-a".into(),
        grantee: user.clone(),
        scope: ShareScope::Images,
        purpose: PurposeOfUse::Treatment,
        expires_at: None,
    }
    .to_new_event(meta());
    assert_eq!(grantee_of(v3), Ok(user));
}

#[test]
fn an_unknown_type_is_an_error_naming_its_position() {
    let mut new = StudyEvent::StudyPurged {
        study_uid: "1".into(),
        reason: "x".into(),
        purged_at: Utc::now(),
    }
    .to_new_event(meta());
    new.event_type = "StudyTeleported".into();
    let err = HubEvent::decode(&recorded(StreamId::new(Family::Study, "1"), new, 42)).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnknownType { position: 42, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("position 42"));
}

#[test]
fn a_corrupt_payload_is_an_error_naming_its_position() {
    let mut new = StudyEvent::StudyPurged {
        study_uid: "1".into(),
        reason: "x".into(),
        purged_at: Utc::now(),
    }
    .to_new_event(meta());
    for payload in ["{not json", "[1,2]", r#"{"study_uid": 5}"#] {
        new.payload = payload.into();
        let err = HubEvent::decode(&recorded(StreamId::new(Family::Study, "1"), new.clone(), 9))
            .unwrap_err();
        assert!(
            matches!(err, DecodeError::CorruptPayload { position: 9, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn an_event_from_a_newer_schema_is_refused_not_misread() {
    let mut new = StudyEvent::StudyPurged {
        study_uid: "1".into(),
        reason: "x".into(),
        purged_at: Utc::now(),
    }
    .to_new_event(meta());
    new.schema_version = 9;
    let err = HubEvent::decode(&recorded(StreamId::new(Family::Study, "1"), new, 5)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::FutureSchema {
            stored: 9,
            current: 1,
            ..
        }
    ));
}

#[test]
fn a_data_accessed_event_without_the_added_fields_reads_back_with_their_defaults() {
    let stored = r#"{"subject":"bob","role":"radiologist","institution":"hosp-b","action":"metadata",
        "study_uid":"1.2.3","series_uid":null,"sop_instance_uid":null,"purpose":"treatment",
        "decision":"permit","reason":null}"#;
    let mut new = AccessEvent::DataAccessed {
        subject: String::new(),
        role: String::new(),
        institution: String::new(),
        action: AccessAction::Query,
        study_uid: None,
        series_uid: None,
        sop_instance_uid: None,
        purpose: PurposeOfUse::Treatment,
        decision: Decision::Permit,
        reason: None,
        owner: None,
        results: vec![],
        expires_at: None,
    }
    .to_new_event(meta());
    new.payload = stored.to_owned();
    let decoded = HubEvent::decode(&recorded(StreamId::new(Family::Access, "1.2.3"), new, 7))
        .expect("decodes");
    let HubEvent::Access(AccessEvent::DataAccessed {
        owner,
        results,
        expires_at,
        decision,
        ..
    }) = decoded
    else {
        panic!("not a DataAccessed: {decoded:?}");
    };
    assert_eq!((owner, results, expires_at), (None, vec![], None));
    assert_eq!(decision, Decision::Permit);
}

#[test]
fn consult_and_report_events_without_the_added_fields_read_back_with_their_defaults() {
    let id = uuid::Uuid::nil();
    let requested = HubEvent::from(ConsultEvent::ConsultRequested {
        consult_id: id,
        study_uid: String::new(),
        kind: ConsultKind::Remote,
        requesting_institution: String::new(),
        requested_by: String::new(),
        expert_institution: String::new(),
        expert: None,
        question: String::new(),
        owner: None,
        specialty: None,
        urgency: ConsultUrgency::Routine,
        participants: vec![],
    });
    let mut new = requested.to_new_event(meta());
    new.payload = format!(
        r#"{{"consult_id":"{id}","study_uid":"1.2.3","kind":"mdt","requesting_institution":"hosp-a",
            "requested_by":"alice","expert_institution":"hosp-c","expert":"bob","question":"?"}}"#
    );
    let decoded =
        HubEvent::decode(&recorded(StreamId::new(Family::Consult, id), new, 3)).expect("decodes");
    let HubEvent::Consult(ConsultEvent::ConsultRequested {
        owner,
        specialty,
        urgency,
        participants,
        kind,
        ..
    }) = decoded
    else {
        panic!("not a ConsultRequested: {decoded:?}");
    };
    assert_eq!((owner, specialty, participants), (None, None, vec![]));
    assert_eq!((urgency, kind), (ConsultUrgency::Routine, ConsultKind::Mdt));

    let amended = HubEvent::from(DiagnosisEvent::ReportAmended {
        report_id: id,
        author: String::new(),
        findings: String::new(),
        impression: String::new(),
        reason: String::new(),
        new_report_id: None,
    });
    let mut new = amended.to_new_event(meta());
    new.payload = format!(
        r#"{{"report_id":"{id}","author":"bob","findings":"f","impression":"i","reason":"r"}}"#
    );
    let decoded = HubEvent::decode(&recorded(StreamId::new(Family::Diagnosis, "1.2.3"), new, 4))
        .expect("decodes");
    assert!(
        matches!(
            decoded,
            HubEvent::Diagnosis(DiagnosisEvent::ReportAmended {
                new_report_id: None,
                ..
            })
        ),
        "{decoded:?}"
    );
}

#[test]
fn ai_diagnosis_events_of_the_first_shape_read_back_with_the_added_fields_empty() {
    let recorded_v1 = r#"{"study_uid":"1.2.3","model_id":"ct-ref","model_version":"1",
        "findings":[{"series_uid":"1.2.3.1","sop_instance_uid":"1.2.3.1.7","frame":null,
        "label":"hyperdense region","score":0.5,"bbox":[1.0,2.0,3.0,4.0]}],"inference_ms":812}"#;
    let failed_v1 = r#"{"study_uid":"1.2.3","model_id":"ct-ref","reason":"frame 1 unreadable"}"#;
    let stream = StreamId::new(Family::Diagnosis, "1.2.3");
    let mut new = DiagnosisEvent::AiFindingsRecorded {
        study_uid: String::new(),
        model_id: String::new(),
        model_version: String::new(),
        findings: vec![],
        inference_ms: 0,
        model_sha256: String::new(),
        slices: 0,
    }
    .to_new_event(meta());
    new.payload = recorded_v1.to_owned();
    let decoded = HubEvent::decode(&recorded(stream.clone(), new, 3)).expect("decodes");
    let HubEvent::Diagnosis(DiagnosisEvent::AiFindingsRecorded {
        model_sha256,
        slices,
        findings,
        inference_ms,
        ..
    }) = decoded
    else {
        panic!("not AiFindingsRecorded: {decoded:?}");
    };
    assert_eq!((model_sha256.as_str(), slices, inference_ms), ("", 0, 812));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].bbox, Some([1.0, 2.0, 3.0, 4.0]));

    let mut new = DiagnosisEvent::AiInferenceFailed {
        study_uid: String::new(),
        model_id: String::new(),
        reason: String::new(),
        model_version: String::new(),
        model_sha256: String::new(),
    }
    .to_new_event(meta());
    new.payload = failed_v1.to_owned();
    let decoded = HubEvent::decode(&recorded(stream, new, 4)).expect("decodes");
    assert_eq!(
        decoded,
        HubEvent::Diagnosis(DiagnosisEvent::AiInferenceFailed {
            study_uid: "1.2.3".into(),
            model_id: "ct-ref".into(),
            reason: "frame 1 unreadable".into(),
            model_version: String::new(),
            model_sha256: String::new(),
        })
    );
}

/// Issue 24, class 3: a v1 consent's free-text policy was never read. v2 reads it as one of the
/// documented policies: a text that says no is a refusal, any other kept what it granted
/// (alliance metadata); the text is kept, and v1 consents were recorded by institutions.
#[test]
fn a_consent_of_schema_v1_is_read_back_with_a_documented_policy() {
    let consent_id = Uuid::now_v7();
    let v1 = |text: &str| NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "ConsentRecorded".into(),
        schema_version: 1,
        payload: serde_json::json!({
            "consent_id": consent_id,
            "regional_patient_id": "RP-1",
            "institution_id": "hosp-a",
            "policy": text,
        })
        .to_string(),
        metadata: meta(),
    };
    let stream = StreamId::new(Family::Consent, consent_id);
    for (text, expected) in [
        ("north-sharing-v1", ConsentPolicy::AllianceMetadata),
        ("alliance_metadata", ConsentPolicy::AllianceMetadata),
        ("no", ConsentPolicy::Refused),
        (" Opt-Out ", ConsentPolicy::Refused),
    ] {
        match HubEvent::decode(&recorded(stream.clone(), v1(text), 5)) {
            Ok(HubEvent::Consent(ConsentEvent::ConsentRecorded {
                policy,
                by_patient,
                v1_policy_text,
                ..
            })) => {
                assert_eq!(policy, expected, "{text}");
                assert!(!by_patient);
                assert_eq!(v1_policy_text.as_deref(), Some(text));
            }
            other => panic!("{text}: expected an upcast ConsentRecorded, got {other:?}"),
        }
    }
    let mut bad = v1("x");
    bad.payload = serde_json::json!({"consent_id": consent_id, "regional_patient_id": "RP-1",
        "institution_id": "hosp-a", "policy": 3})
    .to_string();
    assert!(matches!(
        HubEvent::decode(&recorded(stream, bad, 6)),
        Err(DecodeError::CorruptPayload { .. })
    ));
}
