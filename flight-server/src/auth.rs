//! Authentication of every Flight call, as a tower layer.
//!
//! Putting the check in a layer rather than in each RPC means a new RPC cannot be added
//! without it. Only `Handshake` passes unauthenticated, because it is how a client that
//! only knows Basic auth obtains its bearer token; it verifies the token itself.
//!
//! Accepted credentials: `authorization: Bearer <token>`, or `authorization: Basic
//! base64(user:token)` (any user name; BI tools that only do Basic auth put the token in
//! the password field). The verified [`Principal`] is put in the request extensions,
//! where the RPC handlers find it.

use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::future::BoxFuture;
use http::{Request, Response};
use insitu_policy::{PolicyEngine, Principal};
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::{Layer, Service};

/// Paths that skip authentication. Handshake authenticates inside the handler.
const UNAUTHENTICATED_SUFFIXES: &[&str] = &["/Handshake"];

/// Extracts the token from an `authorization` header value.
pub fn token_from_header(value: &str) -> Option<String> {
    let value = value.trim();
    if let Some(rest) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return Some(rest.trim().to_string());
    }
    let rest = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// Verifies the request's credentials with the policy engine.
pub fn authenticate(engine: &PolicyEngine, headers: &http::HeaderMap) -> Result<Principal, Status> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| {
            Status::unauthenticated(
                "missing authorization header: send `Bearer <token>` (get one with `insitu token`)",
            )
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not text"))?;
    let token = token_from_header(value)
        .ok_or_else(|| Status::unauthenticated("authorization must be Bearer or Basic"))?;
    engine
        .authenticate(&token)
        .map_err(|e| Status::unauthenticated(e.to_string()))
}

/// The layer. Wrap a Flight (or Flight SQL) service with it.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    engine: Arc<PolicyEngine>,
}

impl AuthLayer {
    pub fn new(engine: Arc<PolicyEngine>) -> Self {
        AuthLayer { engine }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            engine: self.engine.clone(),
        }
    }
}

/// The service the layer produces.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    engine: Arc<PolicyEngine>,
}

impl<S: NamedService> NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let exempt = UNAUTHENTICATED_SUFFIXES
            .iter()
            .any(|s| req.uri().path().ends_with(s));
        if !exempt {
            match authenticate(&self.engine, req.headers()) {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                }
                Err(status) => {
                    tracing::info!(path = %req.uri().path(), reason = %status.message(), "unauthenticated call refused");
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        }
        // Take the service that was driven to readiness and leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(req).await })
    }
}

/// The principal the layer attached to a request.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_headers_yield_the_token() {
        assert_eq!(token_from_header("Bearer abc").as_deref(), Some("abc"));
        let basic = format!("Basic {}", STANDARD.encode("user:tok123"));
        assert_eq!(token_from_header(&basic).as_deref(), Some("tok123"));
        assert_eq!(token_from_header("Digest x"), None);
    }
}
