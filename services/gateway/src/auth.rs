//! The one authorization point: every handler asks it who is calling and whether the action is
//! allowed, before touching data. Until institutions, roles and Casbin policies arrive (issue 4),
//! the embedded hub acts as ONE configured development identity for every request; this module
//! is where that changes, and no handler carries a check of its own.

use axum::http::HeaderMap;

use crate::problem::Problem;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub role: String,
    pub institution: String,
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    StoreInstances,
    QueryStudies,
    RetrieveInstances,
    ReadEventLog,
}

#[derive(Clone, Debug)]
pub struct Auth {
    development_identity: Identity,
}

impl Auth {
    /// Every request acts as `identity` (development mode).
    pub fn development(identity: Identity) -> Auth {
        Auth {
            development_identity: identity,
        }
    }

    /// Identifies the caller and authorizes `action`.
    pub fn authorize(&self, headers: &HeaderMap, action: Action) -> Result<Identity, Problem> {
        if headers.contains_key(axum::http::header::AUTHORIZATION) {
            return Err(Problem::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "bearer tokens are not accepted yet: this hub runs with its development identity \
                 and no Authorization header",
            ));
        }
        let _ = action; // Every action is allowed to the development identity.
        Ok(self.development_identity.clone())
    }
}
