//! Endpoints as typed on a command line, and clients connected to them.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Args;
use rpc_core::tls::ClientTls;
use rpc_core::{Client, Connection, Endpoint, Format, RpcError, transport};

use crate::fail::{Failure, one_line};

/// How long a first connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS flags, for `tls://` and `wss://` endpoints.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TlsArgs {
    /// CA certificates (PEM) to trust for tls:// and wss:// endpoints, instead of the Mozilla
    /// root store (a private CA, or the server's self-signed certificate).
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// A client certificate chain (PEM) for servers that ask for one.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The TLS settings of this run: set once from the flags, before any connection.
static TLS: OnceLock<ClientTls> = OnceLock::new();

impl TlsArgs {
    /// Reads the files the flags name, and makes them the settings of every connection.
    pub(crate) fn install(&self) -> Result<(), Failure> {
        if self.tls_ca.is_none() && self.tls_cert.is_none() {
            return Ok(());
        }
        let mut tls = match &self.tls_ca {
            Some(ca) => ClientTls::with_ca_pem_file(ca)
                .map_err(|e| Failure::usage(format!("--tls-ca: {}", one_line(&e.to_string()))))?,
            None => ClientTls::new(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity_pem_files(cert, key).map_err(|e| {
                Failure::usage(format!(
                    "--tls-cert/--tls-key: {}",
                    one_line(&e.to_string())
                ))
            })?;
        }
        // Set once, from main, before anything connects.
        let _ = TLS.set(tls);
        Ok(())
    }
}

/// A transport connection to `endpoint`, with the TLS settings of the flags.
pub(crate) async fn connection(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Connection, transport::TransportError> {
    match TLS.get() {
        Some(tls) if endpoint.is_tls() => transport::connect_tls(endpoint, timeout, tls).await,
        _ => transport::connect(endpoint, timeout).await,
    }
}

/// Parses an endpoint; `host:port` alone means `tcp://host:port`.
pub(crate) fn endpoint(text: &str) -> Result<Endpoint, Failure> {
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("tcp://{text}")
    };
    full.parse::<Endpoint>().map_err(|e| {
        Failure::usage(format!(
            "invalid endpoint {text:?}: {}",
            one_line(&e.to_string())
        ))
    })
}

/// A client of `endpoint` speaking `format`, connected: an endpoint nobody answers at fails
/// here rather than at the first call.
pub(crate) async fn client(endpoint: &Endpoint, format: Format) -> Result<Client, Failure> {
    let mut builder = Client::builder();
    if let Some(tls) = TLS.get() {
        builder = builder.tls(tls.clone());
    }
    builder
        .format(format)
        .connect_timeout(CONNECT_TIMEOUT)
        .wait_for_reconnect(false)
        .connect(endpoint.clone())
        .await
        .map_err(|e| match e {
            RpcError::Connect { .. } => Failure::rpc("unreachable", &e),
            other => Failure::rpc(&format!("cannot connect to {endpoint}"), &other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_with_or_without_a_scheme() {
        assert_eq!(
            endpoint("127.0.0.1:7000").unwrap(),
            endpoint("tcp://127.0.0.1:7000").unwrap()
        );
        assert!(matches!(endpoint("tcp://"), Err(Failure::Usage(_))));
        assert!(matches!(endpoint("nope://x"), Err(Failure::Usage(_))));
    }
}
