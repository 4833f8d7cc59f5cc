//! A small HTTP client for the API, used by CLI verbs while `run` holds the store (or against
//! any control plane with `--api URL --token T`).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;

/// Talks to one control plane's API.
#[derive(Clone)]
pub struct ApiClient {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("https", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// `url` is `http://HOST:PORT` or `https://HOST:PORT`; HTTPS trusts only `ca`.
    pub fn new(
        url: &str,
        token: &str,
        ca: Option<&rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<ApiClient> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!("API URL {url:?} must start with http:// or https://");
        };
        let authority = rest.trim_end_matches('/');
        let (host, port) = crate::datadir::split_host_port(authority)
            .with_context(|| format!("API URL {url:?}"))?;
        let tls = if https {
            let ca = ca.with_context(|| {
                format!("{url} is HTTPS: the deployment's CA certificate is needed (--ca-file)")
            })?;
            Some(Arc::new(crate::tls::https_client_config(ca)?))
        } else {
            None
        };
        Ok(ApiClient {
            host,
            port,
            tls,
            token: token.to_owned(),
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let address = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let tcp = tokio::net::TcpStream::connect(&address)
            .await
            .with_context(|| format!("connecting to the control plane API at {address}"))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, &address)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = match &self.tls {
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .with_context(|| format!("{:?} is not a valid server name", self.host))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {address}"))?;
                send(TokioIo::new(tls), request).await?
            }
            None => send(TokioIo::new(tcp), request).await?,
        };
        Ok(response)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let (status, bytes) = self.request(method.clone(), path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|body| body.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{method} {path}: {status}: {message}");
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {path}: unexpected response"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::PUT, path, Some(serde_json::to_vec(body)?))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None).await
    }

    /// A text resource (such as `/metrics`).
    pub async fn call_text(&self, path: &str) -> Result<String> {
        let (status, bytes) = self.request(Method::GET, path, None).await?;
        if !status.is_success() {
            bail!("GET {path}: {status}");
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The raw status of a request (for probes such as `/readyz`).
    pub async fn status(&self, path: &str) -> Result<StatusCode> {
        Ok(self.request(Method::GET, path, None).await?.0)
    }
}

async fn send<Io>(io: Io, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)>
where
    Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the control plane")?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .context("sending the API request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the API response")?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}
