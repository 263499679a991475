//! The TLS flags of the example programs: a server's certificate and key (and the CA its
//! clients' certificates must come from), a client's CA and certificate.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use rpc_core::tls::{ClientTls, ServerTls};

/// A server's TLS flags.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerTlsArgs {
    /// The certificate chain (PEM, leaf first, as an ACME client's fullchain.pem) of the
    /// tls:// and wss:// endpoints.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ask TLS clients for a certificate signed by a CA in this PEM file, and refuse those
    /// without one.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The TLS settings the flags name, if any.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let mut tls = ServerTls::from_pem_files(cert, key).context("--tls-cert/--tls-key")?;
        if let Some(ca) = &self.tls_client_ca {
            tls = tls
                .client_ca_pem_file(ca, true)
                .context("--tls-client-ca")?;
        }
        Ok(Some(tls))
    }
}

/// A client's TLS flags.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// CA certificates (PEM) to trust for a tls:// or wss:// server, instead of the Mozilla
    /// root store (a private CA, or the server's self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate chain (PEM) to present to servers that ask for one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS settings the flags name, if any differ from the default.
    pub fn client_tls(&self) -> anyhow::Result<Option<ClientTls>> {
        if self.tls_ca.is_none() && self.tls_cert.is_none() {
            return Ok(None);
        }
        let mut tls = match &self.tls_ca {
            Some(ca) => ClientTls::with_ca_pem_file(ca).context("--tls-ca")?,
            None => ClientTls::new(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls
                .identity_pem_files(cert, key)
                .context("--tls-cert/--tls-key")?;
        }
        Ok(Some(tls))
    }
}
