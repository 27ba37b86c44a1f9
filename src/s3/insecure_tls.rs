//! `skip-verify=true`: an HTTPS client for the SDK that does not verify the server's certificate.
//!
//! The SDK's own client (aws-smithy-http-client 1.5) offers trust-store settings but no switch to
//! turn verification off, and its connector wrapper is crate-private; so this module builds the
//! same kind of client itself: hyper-util's pooled client over hyper-rustls, with a rustls
//! `ClientConfig` whose certificate verifier accepts any chain and any name.
//!
//! Invariants:
//! - Used only when the user set `skip-verify=true` (Litestream's option for self-signed MinIO and
//!   similar private endpoints). TLS still encrypts, and the handshake signature is still checked
//!   against the certificate the server presented, so only *who* the server is goes unverified.
//! - One hyper client (one connection pool) per distinct connector settings, built on first use and
//!   reused: the SDK asks for a connector on every request.
//! - Errors are classified as the SDK's own connector does (connect/IO → retryable IO error,
//!   timeouts → timeout), so the retry policy is the same with or without verification.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Idle pooled connections are dropped after this long (hyper's default is 90 s; S3 front ends
/// close idle connections after about 20 s, and a reused dead connection costs a retry).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP client for the S3 SDK that skips certificate verification.
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(InsecureClient::default())
}

/// Accepts every certificate chain and server name; checks handshake signatures normally.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth()
}

type TimeoutKey = (Option<Duration>, Option<Duration>);

#[derive(Default)]
struct InsecureClient {
    connectors: Mutex<HashMap<TimeoutKey, SharedHttpConnector>>,
}

impl fmt::Debug for InsecureClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InsecureClient(skip-verify)")
    }
}

impl HttpClient for InsecureClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut map = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| SharedHttpConnector::new(InsecureConnector::new(key.0, key.1)))
            .clone()
    }
}

type HyperClient = Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>;

struct InsecureConnector {
    client: HyperClient,
    read_timeout: Option<Duration>,
}

impl fmt::Debug for InsecureConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InsecureConnector")
    }
}

impl InsecureConnector {
    fn new(connect_timeout: Option<Duration>, read_timeout: Option<Duration>) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        InsecureConnector {
            client,
            read_timeout,
        }
    }
}

#[derive(Debug)]
struct ReadTimedOut(Duration);

impl fmt::Display for ReadTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no response within {:?}", self.0)
    }
}

impl StdError for ReadTimedOut {}

impl HttpConnector for InsecureConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let response = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let result = match read_timeout {
                Some(d) => match tokio::time::timeout(d, response).await {
                    Ok(r) => r,
                    Err(_) => return Err(ConnectorError::timeout(ReadTimedOut(d).into())),
                },
                None => response.await,
            };
            let response = result.map_err(classify)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

fn find<'a, E: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(hit) = err.downcast_ref::<E>() {
            return Some(hit);
        }
        next = err.source();
    }
    None
}

/// The SDK's connector error kinds, decided as its own hyper connector decides them.
fn classify(e: hyper_util::client::legacy::Error) -> ConnectorError {
    if e.is_connect() {
        return ConnectorError::io(e.into());
    }
    if let Some(h) = find::<hyper::Error>(&e) {
        if h.is_timeout() {
            return ConnectorError::timeout(e.into());
        }
        if h.is_user() {
            return ConnectorError::user(e.into());
        }
        if h.is_closed() || h.is_canceled() || find::<std::io::Error>(h).is_some() {
            return ConnectorError::io(e.into());
        }
        if h.is_incomplete_message() {
            return ConnectorError::other(e.into(), Some(ErrorKind::TransientError));
        }
    }
    if find::<std::io::Error>(&e).is_some() {
        return ConnectorError::io(e.into());
    }
    ConnectorError::other(e.into(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_builds_with_the_permissive_verifier() {
        let cfg = tls_config();
        // The verifier is ours: any name, any certificate.
        let v = AcceptAnyCertificate(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let name = ServerName::try_from("not-the-name.example").unwrap();
        assert!(v
            .verify_server_cert(
                &CertificateDer::from(vec![0u8; 4]),
                &[],
                &name,
                &[],
                UnixTime::now()
            )
            .is_ok());
        assert!(!v.supported_verify_schemes().is_empty());
        assert!(cfg.alpn_protocols.is_empty() || cfg.alpn_protocols.iter().all(|p| !p.is_empty()));
    }
}
