//! Admin responses: JSON bodies, and every error as one JSON shape
//! `{"error": "...", "issues": [{"field": "...", "message": "..."}]}`
//! with its status decided here, in one place.
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::store::{resources::WriteError, StoreError};

pub type Body = Full<Bytes>;

/// A JSON response.
pub fn json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// An error response.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &json!({"error": message.to_string()}))
}

/// The response of a store error.
pub fn store_error(e: &StoreError) -> Response<Body> {
    match e {
        StoreError::Unavailable(_) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e);
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            r
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The response of a refused write.
pub fn write_error(e: &WriteError) -> Response<Body> {
    match e {
        WriteError::Invalid { issues, .. } => json(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": e.to_string(),
                "issues": issues.iter().map(|i| json!({"field": i.path, "message": i.message})).collect::<Vec<_>>(),
            }),
        ),
        WriteError::NotFound(..) => error(StatusCode::NOT_FOUND, e),
        WriteError::Precondition { current, .. } => json(
            StatusCode::PRECONDITION_FAILED,
            &json!({"error": e.to_string(), "revision": current}),
        ),
        WriteError::Referenced { routes, .. } => json(
            StatusCode::CONFLICT,
            &json!({"error": e.to_string(), "routes": routes}),
        ),
        WriteError::Contended => error(StatusCode::CONFLICT, e),
        WriteError::Store(s) => store_error(s),
    }
}
