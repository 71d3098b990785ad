//! The one authorization point: every handler asks it who is calling (a verified bearer token)
//! and the policy point ([`hub_policies::AccessControl`]) whether the action is allowed, before
//! touching data. No handler carries a check of its own.
//!
//! The embedded hub can be told to treat requests WITHOUT a token as one configured development
//! identity (`auth = "development"`); a request that carries a token is always verified.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use hub_policies::{AccessControl, Act, Role, Subject};

use crate::problem::Problem;
use crate::token::TokenVerifier;

#[derive(Clone)]
pub struct Auth {
    verifier: Arc<TokenVerifier>,
    development: Option<Subject>,
    access: Arc<AccessControl>,
}

fn unauthorized(reason: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", reason)
}

impl Auth {
    pub fn new(verifier: TokenVerifier, access: Arc<AccessControl>) -> Auth {
        Auth {
            verifier: Arc::new(verifier),
            development: None,
            access,
        }
    }

    /// Requests without an Authorization header act as `subject` (development only).
    pub fn with_development_identity(mut self, subject: Subject) -> Auth {
        self.development = Some(subject);
        self
    }

    pub fn access(&self) -> &Arc<AccessControl> {
        &self.access
    }

    /// Who is calling: the verified token's subject, or 401 with the reason.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Subject, Problem> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return self.development.clone().ok_or_else(|| {
                unauthorized("this hub needs a bearer token: send `Authorization: Bearer <JWT>`")
            });
        };
        let value = value
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <JWT>`"))?;
        let claims = self
            .verifier
            .verify(token.trim())
            .map_err(|e| unauthorized(e.to_string()))?;
        let subject = Subject {
            id: claims.sub,
            role: claims.role,
            institution: claims.institution,
        };
        self.registered(&subject)?;
        Ok(subject)
    }

    /// A user is the pair (institution, subject): a token acting for an institution the hub
    /// never registered names no one, and is refused (403, naming the institution). Only the
    /// hub's own roles act for no registered institution: the hub admin (who registers them) and
    /// commission analysts. A patient's `institution` is the institution that issued their login,
    /// registered like any other. The development identity is configured, not presented, and is
    /// not checked.
    fn registered(&self, subject: &Subject) -> Result<(), Problem> {
        if matches!(subject.role, Role::HubAdmin | Role::CommissionAnalyst)
            || self
                .access
                .with_facts(|f| f.institution(&subject.institution).is_some())
        {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "the token acts for institution '{}', which is not registered at this hub",
                subject.institution
            ),
        ))
    }

    /// `act` on the caller's own institution (store, audit, patients), or 403.
    pub fn require_own(&self, subject: &Subject, act: Act) -> Result<(), Problem> {
        permitted(self.access.allows_own(subject, act), subject, act)
    }

    /// An action on no institution's data (the registry, the raw log), or 403.
    pub fn require(&self, subject: &Subject, act: Act) -> Result<(), Problem> {
        permitted(self.access.allows(subject, act), subject, act)
    }
}

fn permitted(
    allowed: Result<bool, hub_policies::PolicyError>,
    subject: &Subject,
    act: Act,
) -> Result<(), Problem> {
    match allowed {
        Ok(true) => Ok(()),
        Ok(false) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("a {} may not {}", subject.role, act.as_str()),
        )),
        Err(e) => Err(Problem::unavailable(e.to_string())),
    }
}
