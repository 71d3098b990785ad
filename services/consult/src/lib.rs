//! The consultation service: a primary hospital asks an expert (or a team) elsewhere for a
//! remote consultation on a study, books a slot, and the expert accepts, declines, or the
//! booking moves or is cancelled; the expert writes a report on the study that is signed and may
//! later be amended.
//!
//! - [`transitions`]: the pure decisions, from (consultation state, command) to events or a
//!   refusal naming the current state.
//! - [`booking`]: slot parsing (an explicit offset is required) and conflict detection against
//!   an attendee's other bookings and declared availability.
//! - [`commands`]: [`Consults`], which authorizes, validates, appends and waits until the policy
//!   facts include the change (the consultation's participants may then open the study during
//!   its window, through the policy point, not through this crate).
//! - [`reports`]: diagnosis reports on stream `diagnosis-<study>`, folded from the log.
//! - [`views`]: turnaround per institution and the Prometheus gauges of consultations.
//!
//! It does not serve HTTP (the gateway does), resolve which institution holds a study (the
//! caller passes a [`hub_policies::StudyRef`]), or decide who may read a study (the policy does).

pub mod booking;
pub mod commands;
pub mod reports;
pub mod transitions;
pub mod views;

pub use commands::{
    AcceptRequest, CompleteRequest, ConsultError, ConsultRequest, Consults, ExpertRequest,
    ParticipantRequest, ReasonRequest, SlotRequest,
};
pub use reports::{AmendRequest, DraftRequest, Report, ReportVersion, Reports};
pub use views::{ConsultMetrics, Turnaround, turnaround_by_institution};
