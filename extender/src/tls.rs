//! The TLS client settings of an extender, from kube-scheduler's
//! `tlsConfig`, as kube-scheduler reads them: trusted roots (`caFile` or
//! `caData`, else the system's), a client certificate (`certFile`+`keyFile`
//! or `certData`+`keyData`), `serverName` (applied by the connector) and
//! `insecure`, which skips verifying the server. As in kube-scheduler,
//! `enableHTTPS` without a CA does not verify the server either, and the
//! scheme of `urlPrefix` decides whether a call uses TLS at all.

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use strata_scheduler::extenders::ExtenderConfig;

/// A field (relative to the extender's entry) and what is wrong with it.
pub(crate) type TlsError = (String, String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// PEM bytes from a file or from base64 data; `None` when neither is set.
fn pem_source(
    file: &str,
    data: &str,
    file_field: &str,
    data_field: &str,
) -> Result<Option<Vec<u8>>, TlsError> {
    if !data.is_empty() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| {
                (
                    format!("tlsConfig.{data_field}"),
                    format!("is not base64: {e}"),
                )
            })?;
        return Ok(Some(bytes));
    }
    if !file.is_empty() {
        let bytes = std::fs::read(file).map_err(|e| {
            (
                format!("tlsConfig.{file_field}"),
                format!("reading {file:?}: {e}"),
            )
        })?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// The rustls client configuration of `cfg` (used for `https://` URLs).
pub(crate) fn client_config(cfg: &ExtenderConfig) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tlsConfig".to_owned(), e.to_string()))?;
    let tls = cfg.tls_config.clone().unwrap_or_default();
    let has_ca = !tls.ca_file.is_empty() || !tls.ca_data.is_empty();
    let builder = if tls.insecure || (cfg.enable_https && !has_ca) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match pem_source(&tls.ca_file, &tls.ca_data, "caFile", "caData")? {
            Some(pem) => {
                for c in CertificateDer::pem_slice_iter(&pem) {
                    let c = c.map_err(|e| {
                        (
                            "tlsConfig.caFile".to_owned(),
                            format!("not PEM certificates: {e}"),
                        )
                    })?;
                    roots.add(c).map_err(|e| {
                        (
                            "tlsConfig.caFile".to_owned(),
                            format!("a certificate is not usable: {e}"),
                        )
                    })?;
                }
                if roots.is_empty() {
                    return Err((
                        "tlsConfig.caFile".to_owned(),
                        "holds no certificate".to_owned(),
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let cert = pem_source(&tls.cert_file, &tls.cert_data, "certFile", "certData")?;
    let key = pem_source(&tls.key_file, &tls.key_data, "keyFile", "keyData")?;
    match (cert, key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    (
                        "tlsConfig.certFile".to_owned(),
                        format!("not PEM certificates: {e}"),
                    )
                })?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                (
                    "tlsConfig.keyFile".to_owned(),
                    format!("not a PEM private key: {e}"),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    "tlsConfig.certFile".to_owned(),
                    format!("unusable client certificate: {e}"),
                )
            })
        }
        (Some(_), None) => Err((
            "tlsConfig.keyFile".to_owned(),
            "a client certificate needs its key".to_owned(),
        )),
        (None, Some(_)) => Err((
            "tlsConfig.certFile".to_owned(),
            "a client key needs its certificate".to_owned(),
        )),
    }
}

/// `insecure: true`: any server certificate is accepted (signatures are
/// still checked, so the handshake itself is sound).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
