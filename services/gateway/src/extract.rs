//! The gateway's extractors: axum's `Path`, `Query` and `Json`, whose rejections leave as RFC
//! 9457 problems naming the parameter (axum's own answer plain text). Every handler takes these.
//!
//! [`Path`] also refuses a path parameter that names a DICOM UID (`study`, `series`, `instance`)
//! and is not one (digits and dots, at most 64 characters): such a segment is logged and echoed
//! in answers, and a UID has no other characters (PS3.5 §9.1), so a CR, LF or any other
//! control character never gets past it.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, RawPathParams, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Path parameters that hold a DICOM UID.
const UID_PARAMS: &[&str] = &["study", "series", "instance"];

/// The longest UID (PS3.5 §9.1).
pub const MAX_UID_LEN: usize = 64;

/// Why `value` is not a DICOM UID, if it is not one.
pub fn uid_error(value: &str) -> Option<String> {
    if value.is_empty() || value.len() > MAX_UID_LEN {
        return Some(format!(
            "a UID has 1 to {MAX_UID_LEN} characters, this one {}",
            value.len()
        ));
    }
    value
        .bytes()
        .find(|b| !(b.is_ascii_digit() || *b == b'.'))
        .map(|b| {
            format!(
                "a UID has only digits and dots, this one has {:?}",
                b as char
            )
        })
}

/// `axum::extract::Path`, rejected as a problem naming the parameter.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad_request(format!("path: {}", e.body_text())))?;
        let names: Vec<String> = raw.iter().map(|(k, _)| k.to_owned()).collect();
        for (key, value) in &raw {
            if UID_PARAMS.contains(&key)
                && let Some(why) = uid_error(value)
            {
                return Err(Problem::bad_request(format!(
                    "path parameter `{key}` is not a DICOM UID: {why}"
                )));
            }
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| path_problem(&e, &names))
    }
}

/// A path that does not deserialize, naming the parameter: axum's message names it only for
/// some kinds of failure (a single value's does not).
fn path_problem(e: &PathRejection, names: &[String]) -> Problem {
    use axum::extract::path::ErrorKind;
    let named = match e {
        PathRejection::FailedToDeserializePathParams(f) => match f.kind() {
            ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::InvalidUtf8InPathParam { key } => {
                Some(key.clone())
            }
            ErrorKind::ParseErrorAtIndex { index, .. } => names.get(*index).cloned(),
            _ if names.len() == 1 => names.first().cloned(),
            _ => None,
        },
        _ => None,
    };
    match named {
        Some(key) => Problem::bad_request(format!("path parameter `{key}`: {}", e.body_text())),
        None => Problem::bad_request(format!("path: {}", e.body_text())),
    }
}

/// `axum::extract::Query`, rejected as a problem naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| {
                Problem::bad_request(format!("query parameter: {}", e.body_text()))
            })
    }
}

/// `axum::extract::Json`, rejected as a problem naming the field; as an `Option`, absent when the
/// request has no JSON content type.
#[derive(Debug)]
pub struct Json<T>(pub T);

fn json_problem(e: JsonRejection) -> Problem {
    Problem::bad_request(format!("request body: {}", e.body_text()))
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        <axum::Json<T> as FromRequest<S>>::from_request(req, state)
            .await
            .map(|axum::Json(v)| Json(v))
            .map_err(json_problem)
    }
}

impl<T, S> OptionalFromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Problem> {
        <axum::Json<T> as OptionalFromRequest<S>>::from_request(req, state)
            .await
            .map(|v| v.map(|axum::Json(v)| Json(v)))
            .map_err(json_problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_digits_and_dots_of_at_most_64_characters() {
        assert_eq!(uid_error("1.2.840.10008.5.1.4.1.1.2"), None);
        assert_eq!(uid_error(&"1".repeat(64)), None);
        assert!(uid_error(&"1".repeat(65)).is_some());
        assert!(uid_error("").is_some());
        let why = uid_error("1.2\r\nX-Injected: 1").expect("a CR is refused");
        assert!(why.contains("'\\r'"), "{why}");
    }
}
