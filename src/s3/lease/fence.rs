//! Fencing: whether this instance may write to the replica right now, and under which token.
//!
//! Invariants:
//! - A holder uploads only while `now < sent + ttl − margin` on its monotonic clock, where `sent`
//!   is when it sent its last successful lock write (whose `expires_at` is `sent + ttl` by its
//!   wall clock). Standbys take over only after `expires_at` by theirs, so with clock skew below
//!   the margin the old holder has stopped before anyone else starts.
//! - [`Fence`] is checked by the replicator before each upload and by [`FenceInterceptor`] on
//!   every mutating S3 request just before it goes on the wire, so even a holder that was frozen
//!   (SIGSTOP) between the two checks sends nothing once it wakes up past its deadline.
//! - Every object uploaded under a lease carries its token in user metadata
//!   ([`TOKEN_METADATA`]), so a checker can prove that tokens never decrease in TXID order.
//! - Disabled (the default: lease off) the fence allows everything and adds no token.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use once_cell::sync::Lazy;

/// User metadata key carrying the lease token on every uploaded object.
pub const TOKEN_METADATA: &str = "litestream-lease-token";

/// Process-local start of the monotonic clock, so deadlines fit in plain numbers.
static BASE: Lazy<Instant> = Lazy::new(Instant::now);

/// Whether this instance may write to the replica now, and under which token. Disabled (the
/// default, lease off) it allows everything and adds no token.
#[derive(Debug, Default)]
pub struct Fence {
    inner: Mutex<FenceState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct FenceState {
    enabled: bool,
    token: u64,
    /// Deadline as an offset from BASE; None = not held.
    deadline: Option<Duration>,
    /// Acquisitions so far (a grant while not held, or under a new token), and when the latest
    /// happened: uploads under our prefix begun before then are not this holder's.
    acquisitions: u64,
    acquired_at: Option<SystemTime>,
}

impl Fence {
    pub fn new() -> Fence {
        Fence::default()
    }

    fn state(&self) -> MutexGuard<'_, FenceState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on writes need a held lease.
    pub fn enable(&self) {
        let mut s = self.state();
        s.enabled = true;
        s.deadline = None;
    }

    pub fn grant(&self, token: u64, deadline: Instant) {
        let mut s = self.state();
        if s.deadline.is_none() || s.token != token {
            s.acquisitions += 1;
            s.acquired_at = Some(SystemTime::now());
        }
        s.token = token;
        s.deadline = Some(deadline.saturating_duration_since(*BASE));
    }

    pub fn revoke(&self) {
        self.state().deadline = None;
    }

    pub fn enabled(&self) -> bool {
        self.state().enabled
    }

    /// Ok when writes are allowed right now.
    pub fn check(&self) -> std::result::Result<(), String> {
        let s = *self.state();
        if !s.enabled {
            return Ok(());
        }
        match s.deadline {
            Some(d) if BASE.elapsed() < d => Ok(()),
            Some(_) => Err(format!(
                "lost lease: lease token {} was not renewed in time, so this instance stopped writing to the replica",
                s.token
            )),
            None => Err("this instance does not hold the lease, so it does not write to the replica".into()),
        }
    }

    /// How many times the lease was acquired, and when the latest acquisition was ((0, None)
    /// when the lease is off or was never held).
    pub fn acquisition(&self) -> (u64, Option<SystemTime>) {
        let s = self.state();
        (s.acquisitions, s.acquired_at)
    }

    /// The token to tag uploads with (None when the lease is off).
    pub fn token(&self) -> Option<u64> {
        let s = *self.state();
        (s.enabled && s.token > 0).then_some(s.token)
    }
}

/// Refuses every mutating S3 request (PUT, POST, DELETE; not AbortMultipartUpload) while the fence
/// is closed, at the last moment before the request is transmitted (after signing, before the
/// bytes go out).
#[derive(Debug)]
pub struct FenceInterceptor(pub Arc<Fence>);

impl Intercept for FenceInterceptor {
    fn name(&self) -> &'static str {
        "LitestreamLeaseFence"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let request = context.request();
        match request.method() {
            "GET" | "HEAD" => Ok(()),
            // AbortMultipartUpload changes no object; letting it through leaves no orphaned parts.
            "DELETE" if request.uri().contains("uploadId=") => Ok(()),
            _ => self.0.check().map_err(BoxError::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::Client;
    use std::sync::atomic::Ordering;

    #[test]
    fn fence_opens_and_closes() {
        let f = Fence::new();
        assert!(f.check().is_ok() && f.token().is_none()); // lease off
        f.enable();
        assert!(f.check().is_err());
        assert_eq!(f.acquisition().0, 0);
        f.grant(3, Instant::now() + Duration::from_secs(5));
        assert!(f.check().is_ok());
        assert_eq!(f.token(), Some(3));
        // A renewal is no new acquisition; a grant after a revoke, or of a new token, is.
        f.grant(3, Instant::now() + Duration::from_secs(6));
        assert_eq!(f.acquisition().0, 1);
        assert!(f.acquisition().1.is_some());
        f.grant(3, Instant::now() - Duration::from_millis(1));
        assert!(f.check().unwrap_err().contains("lost lease"));
        f.revoke();
        assert!(f.check().is_err());
        f.grant(3, Instant::now() + Duration::from_secs(5));
        f.grant(4, Instant::now() + Duration::from_secs(5));
        assert_eq!(f.acquisition().0, 3);
    }

    /// The fence interceptor refuses mutating requests at the wire while the lease is not held,
    /// and lets reads through: a fake connector counts what is actually sent.
    #[test]
    fn interceptor_stops_writes_before_they_are_sent() {
        use aws_sdk_s3::config::{Credentials, Region};
        use aws_smithy_runtime_api::client::http::{
            http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
        };
        use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
        use std::sync::atomic::AtomicUsize;

        #[derive(Debug)]
        struct Counting(Arc<AtomicUsize>);
        impl HttpConnector for Counting {
            fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
                self.0.fetch_add(1, Ordering::SeqCst);
                let ok = aws_sdk_s3::config::http::HttpResponse::new(
                    200.try_into().unwrap(),
                    aws_smithy_types::body::SdkBody::from(""),
                );
                HttpConnectorFuture::ready(Ok(ok))
            }
        }
        let sent = Arc::new(AtomicUsize::new(0));
        let connector = SharedHttpConnector::new(Counting(sent.clone()));
        let fence = Arc::new(Fence::new());
        fence.enable();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .force_path_style(true)
            .http_client(http_client_fn(move |_, _| connector.clone()))
            .interceptor(FenceInterceptor(fence.clone()))
            .build();
        let client = Client::from_conf(conf);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let put = || {
            rt.block_on(
                client
                    .put_object()
                    .bucket("b")
                    .key("p/0000/x.ltx")
                    .body(ByteStream::from_static(b"x"))
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| crate::s3::error_chain(&e))
        };
        let chain = put().unwrap_err();
        assert_eq!(sent.load(Ordering::SeqCst), 0, "a write reached the wire");
        assert!(chain.contains("does not hold the lease"), "{chain}");
        let _ = rt.block_on(client.head_object().bucket("b").key("k").send());
        assert_eq!(sent.load(Ordering::SeqCst), 1, "reads are not fenced");
        fence.grant(4, Instant::now() + Duration::from_secs(5));
        put().unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        fence.grant(4, Instant::now() - Duration::from_millis(1));
        assert!(put().is_err());
        let _ = rt.block_on(client.delete_object().bucket("b").key("k").send());
        assert_eq!(
            sent.load(Ordering::SeqCst),
            2,
            "an expired lease still wrote"
        );
        // Aborting a multipart upload is allowed: it only cleans up parts.
        let _ = rt.block_on(
            client
                .abort_multipart_upload()
                .bucket("b")
                .key("k")
                .upload_id("u1")
                .send(),
        );
        assert_eq!(sent.load(Ordering::SeqCst), 3, "abort was fenced");
    }
}
