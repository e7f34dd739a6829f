//! The HTTP surface of the demo app: `/`, `/health`, `/slow?ms=N`, and the `X-Version`
//! header on every answer.
//!
//! The load generator hammers these routes over keep-alive, so the common answers are built
//! without locks and with no allocation beyond hyper's own: bodies are shared `Bytes`, the
//! version header is a pre-built value, and readiness is one atomic load.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;

use crate::config::Color;
use crate::connection::ConnActivity;

/// The header that names the version (color) which answered.
const X_VERSION: HeaderName = HeaderName::from_static("x-version");

/// The longest `/slow` accepts: an hour, far beyond any grace period.
const MAX_SLOW_MS: u64 = 3_600_000;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// Response type of every route.
pub(crate) type Answer = Response<Full<Bytes>>;

/// State every connection of one app shares: written by the lifecycle, read per request.
#[derive(Debug)]
pub(crate) struct Shared {
    version: HeaderValue,
    page: Bytes,
    healthy: AtomicBool,
    /// Every HTTP/1.1 answer says `Connection: close` (set after SIGTERM, on request).
    close_keepalive: AtomicBool,
    in_flight: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(color: &Color) -> Self {
        Self {
            version: color.header().clone(),
            page: Bytes::from(page(color)),
            healthy: AtomicBool::new(false),
            close_keepalive: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Sets what `/health` answers from now on.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// From now on every HTTP/1.1 answer carries `Connection: close`.
    pub(crate) fn close_keepalive(&self) {
        self.close_keepalive.store(true, Ordering::Relaxed);
    }

    /// Requests whose answer is not produced yet. Only `/slow` takes time; every other route
    /// answers within the call, so in practice this counts `/slow` requests.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn answer(&self, status: StatusCode, content_type: HeaderValue, body: Bytes) -> Answer {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(X_VERSION, self.version.clone());
        headers.insert(CONTENT_TYPE, content_type);
        response
    }
}

/// The routes as a hyper service, one per connection.
pub(crate) struct Routes {
    shared: Arc<Shared>,
    conn: Arc<ConnActivity>,
}

impl Routes {
    pub(crate) fn new(shared: Arc<Shared>, conn: Arc<ConnActivity>) -> Self {
        Self { shared, conn }
    }

    fn route(&self, request: &Request<Incoming>) -> Route {
        let shared = &*self.shared;
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut answer = shared.answer(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                Bytes::from_static(b"method not allowed: use GET or HEAD\n"),
            );
            answer
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Route::Now(answer);
        }
        Route::Now(match request.uri().path() {
            "/" => shared.answer(StatusCode::OK, HTML, shared.page.clone()),
            "/health" if shared.healthy.load(Ordering::Relaxed) => {
                shared.answer(StatusCode::OK, TEXT, Bytes::from_static(b"ok\n"))
            }
            "/health" => shared.answer(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                Bytes::from_static(b"not ready\n"),
            ),
            "/slow" => match slow_ms(request.uri().query()) {
                Ok(ms) => return Route::Slow(Duration::from_millis(ms)),
                Err(reason) => shared.answer(StatusCode::BAD_REQUEST, TEXT, Bytes::from(reason)),
            },
            _ => shared.answer(
                StatusCode::NOT_FOUND,
                TEXT,
                Bytes::from_static(b"not found: try /, /health or /slow?ms=N\n"),
            ),
        })
    }

    fn answer_later(&self, wait: Duration, http1: bool) -> Pending {
        let slow = SlowRequest::start(Arc::clone(&self.shared), Arc::clone(&self.conn));
        tracing::debug!(?wait, "slow request started");
        Pending::Later(Box::pin(async move {
            tokio::time::sleep(wait).await;
            let body = format!("slept {}ms\n", wait.as_millis());
            let answer = slow.shared.answer(StatusCode::OK, TEXT, Bytes::from(body));
            close_if_shutting_down(answer, &slow.shared, &slow.conn, http1)
        }))
    }
}

/// Where a request goes: answered within the call, or after a wait.
enum Route {
    Now(Answer),
    Slow(Duration),
}

impl Service<Request<Incoming>> for Routes {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pending;

    fn call(&self, request: Request<Incoming>) -> Pending {
        // HTTP/2 has no `Connection` header; GOAWAY tells its clients instead.
        let http1 = request.version() != Version::HTTP_2;
        match self.route(&request) {
            Route::Now(answer) => {
                self.conn.answered();
                let answer = close_if_shutting_down(answer, &self.shared, &self.conn, http1);
                Pending::Now(std::future::ready(Ok(answer)))
            }
            Route::Slow(wait) => self.answer_later(wait, http1),
        }
    }
}

/// The future of one answer: ready at once for every route but `/slow`, which is boxed
/// because it waits (and then a box costs nothing next to the wait).
pub(crate) enum Pending {
    Now(Ready<Result<Answer, Infallible>>),
    Later(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

impl Future for Pending {
    type Output = Result<Answer, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Pending::Now(ready) => Pin::new(ready).poll(cx),
            Pending::Later(later) => later.as_mut().poll(cx).map(Ok),
        }
    }
}

/// A `/slow` request being answered. Counting it in and out in one place keeps the counters
/// right even when the client goes away and hyper drops the answer half-way.
struct SlowRequest {
    shared: Arc<Shared>,
    conn: Arc<ConnActivity>,
}

impl SlowRequest {
    fn start(shared: Arc<Shared>, conn: Arc<ConnActivity>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.request_started();
        Self { shared, conn }
    }
}

impl Drop for SlowRequest {
    fn drop(&mut self) {
        self.conn.request_finished();
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds `Connection: close` to an HTTP/1 answer once its connection (or the whole app) is
/// shutting down, so the client knows not to send another request on it (hyper closes it
/// after this answer).
fn close_if_shutting_down(
    mut answer: Answer,
    shared: &Shared,
    conn: &ConnActivity,
    http1: bool,
) -> Answer {
    if http1 && (conn.is_closing() || shared.close_keepalive.load(Ordering::Relaxed)) {
        answer
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// Reads `ms` from the query of `/slow`, or explains in the 400 body what is wrong.
fn slow_ms(query: Option<&str>) -> Result<u64, String> {
    let Some(raw) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("ms="))
    else {
        return Err(format!(
            "bad request: /slow needs ?ms=N, N a whole number of milliseconds from 0 to {MAX_SLOW_MS}\n"
        ));
    };
    match raw.parse::<u64>() {
        Ok(ms) if ms <= MAX_SLOW_MS => Ok(ms),
        _ => Err(format!(
            "bad request: ms={raw} is not a whole number of milliseconds from 0 to {MAX_SLOW_MS}\n"
        )),
    }
}

/// The page `/` serves: the color's name on a background of that color.
fn page(color: &Color) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>rollguard demo: {color}</title></head>\n\
         <body style=\"background:{color};font-family:sans-serif;text-align:center;padding-top:20vh\">\n\
         <h1 style=\"background:white;display:inline-block;padding:0.5em 1em\">{color}</h1>\n\
         </body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_reads_ms_from_anywhere_in_the_query() {
        assert_eq!(slow_ms(Some("ms=250")), Ok(250));
        assert_eq!(slow_ms(Some("x=1&ms=0")), Ok(0));
        assert_eq!(slow_ms(Some("ms=3600000")), Ok(MAX_SLOW_MS));
    }

    #[test]
    fn slow_explains_bad_or_missing_ms() {
        for query in [None, Some(""), Some("m=5")] {
            assert!(
                slow_ms(query).unwrap_err().contains("needs ?ms=N"),
                "{query:?}"
            );
        }
        for raw in ["abc", "-1", "1.5", "3600001", ""] {
            let query = format!("ms={raw}");
            let reason = slow_ms(Some(&query)).unwrap_err();
            assert!(reason.contains(&format!("ms={raw} is not")), "{reason}");
        }
    }
}
