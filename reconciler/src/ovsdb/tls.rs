//! TLS for `ssl:` remotes (rustls, no OpenSSL): the files, the handshake, and errors that say
//! which side refused what
//!
//! ovsdb-server and ovn-nbctl (OVS `stream-ssl.c`) authenticate peers by their certificate
//! chain only: each side must present a certificate signed by the CA the other side trusts,
//! and the host name or IP in the remote is never compared with the certificate (OVS
//! certificates made by `ovs-pki` carry no subjectAltName for the address at all). wepoq does
//! the same: the server's chain must lead to `--ca-cert` and be within its validity
//! period, and a name mismatch alone is accepted. ovsdb-server always asks for a client
//! certificate, so `--private-key` and `--certificate` are needed in practice; without them
//! the server's refusal is reported as such.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::{
    self, AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use super::error::Error;

/// The files of ovn-nbctl's `--private-key`, `--certificate` and `--ca-cert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub private_key: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
}

/// A loaded TLS client configuration, shared by every `ssl:` connection of a client.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

fn bad_file(what: &'static str, path: &Path, reason: impl ToString) -> Error {
    Error::TlsConfig {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

impl TlsConfig {
    /// Reads and checks the files. The CA is required; the key and certificate come as a
    /// pair (one without the other is refused here, not at the server).
    pub fn load(files: &TlsFiles) -> Result<TlsConfig, Error> {
        let Some(ca) = &files.ca_cert else {
            return Err(Error::TlsMissing {
                what: "--ca-cert (the CA that signed the server's certificate)",
            });
        };
        let mut roots = RootCertStore::empty();
        let cas: Vec<CertificateDer> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad_file("CA certificate", ca, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad_file("CA certificate", ca, e))?;
        if cas.is_empty() {
            return Err(bad_file("CA certificate", ca, "no PEM certificate in it"));
        }
        for cert in cas {
            roots
                .add(cert)
                .map_err(|e| bad_file("CA certificate", ca, e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| bad_file("CA certificate", ca, e))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_file("CA certificate", ca, e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)));
        let config = match (&files.private_key, &files.certificate) {
            (Some(key_path), Some(cert_path)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
                    .map_err(|e| bad_file("certificate", cert_path, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad_file("certificate", cert_path, e))?;
                if chain.is_empty() {
                    return Err(bad_file(
                        "certificate",
                        cert_path,
                        "no PEM certificate in it",
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(key_path)
                    .map_err(|e| bad_file("private key", key_path, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad_file("private key", key_path, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            (None, Some(_)) => {
                return Err(Error::TlsMissing {
                    what: "--private-key (given --certificate)",
                });
            }
            (Some(_), None) => {
                return Err(Error::TlsMissing {
                    what: "--certificate (given --private-key)",
                });
            }
        };
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    pub(crate) async fn handshake(
        &self,
        url: &str,
        host: &str,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| Error::InvalidUrl {
            url: url.to_owned(),
            reason: "the host is neither an IP address nor a DNS name",
        })?;
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| {
                tls_error(url, &e).unwrap_or_else(|| Error::Connect {
                    url: url.to_owned(),
                    source: e,
                })
            })
    }
}

/// The server certificate check of OVS: the chain, not the name (see the module docs).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and validity) first and the name last: a name error
        // means everything else held.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A TLS failure inside an I/O error, said in terms of the flags to fix; `None` when the
/// error is not about TLS.
pub(crate) fn tls_error(url: &str, e: &std::io::Error) -> Option<Error> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let problem = describe(tls);
    Some(Error::Tls {
        url: url.to_owned(),
        problem,
    })
}

fn describe(e: &rustls::Error) -> String {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature | C::UnknownRevocationStatus => format!(
                "the server's certificate is not signed by the CA in --ca-cert ({c:?})"
            ),
            C::Expired | C::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure => {
                "the server requires a client certificate: give --private-key and --certificate"
                    .to_owned()
            }
            AlertDescription::UnknownCA => {
                "the server does not trust our certificate: it is not signed by the CA the server uses (its --ca-cert)".to_owned()
            }
            AlertDescription::CertificateExpired => "the server refused our certificate: it has expired".to_owned(),
            AlertDescription::BadCertificate | AlertDescription::CertificateUnknown | AlertDescription::UnsupportedCertificate => {
                format!("the server refused our certificate ({alert:?})")
            }
            other => format!("the server ended the TLS handshake ({other:?})"),
        },
        other => format!("TLS failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_name_the_cause() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let said = |e| tls_error("ssl:127.0.0.1:1", &io(e)).unwrap().to_string();
        assert!(
            said(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
            .contains("not signed by the CA in --ca-cert")
        );
        assert!(
            said(rustls::Error::InvalidCertificate(CertificateError::Expired))
                .contains("has expired")
        );
        assert!(
            said(rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            ))
            .contains("requires a client certificate")
        );
        assert!(
            said(rustls::Error::AlertReceived(
                AlertDescription::CertificateExpired
            ))
            .contains("refused our certificate: it has expired")
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(tls_error("ssl:x:1", &plain).is_none());
    }

    #[test]
    fn files_are_checked_before_connecting() {
        let err = TlsConfig::load(&TlsFiles::default()).unwrap_err();
        assert!(err.to_string().contains("--ca-cert"), "{err}");
        let err = TlsConfig::load(&TlsFiles {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
