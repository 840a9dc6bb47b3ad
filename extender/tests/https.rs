//! HTTPS extenders, with `tlsConfig` read as kube-scheduler reads it: a CA
//! verifies the server, `serverName` overrides the name checked, `insecure`
//! or `enableHTTPS` without a CA skips verification, and an unknown issuer
//! under a CA fails the call, naming the extender.

mod common;

use base64::Engine as _;
use common::{env, placed, result_of, runtime};
use std::sync::Arc;
use strata_scheduler::engine::CycleResult;
use strata_scheduler::testing::pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `names`: its PEM and the server config.
fn server(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    (ck.cert.pem(), Arc::new(cfg))
}

/// An HTTPS extender that keeps every node (one request per connection);
/// its port.
fn serve(rt: &tokio::runtime::Runtime, cfg: Arc<rustls::ServerConfig>) -> u16 {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(at) = text.find("\r\n\r\n") {
                        let len = text[..at]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= at + 4 + len {
                            break buf[at + 4..at + 4 + len].to_vec();
                        }
                    }
                };
                let args: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let answer = serde_json::json!({"NodeNames": args["NodeNames"]}).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

fn attempt(url: &str, tls: &str) -> CycleResult {
    let rt = runtime();
    let mut e = env(
        rt,
        &format!(
            "[{{urlPrefix: '{url}', filterVerb: filter, nodeCacheCapable: true, httpTimeout: 3s, {tls}}}]"
        ),
    );
    e.add_node("n-a", "4", &[]);
    e.add_node("n-b", "4", &[]);
    e.add_pod(pod("p").req("cpu", "1").build());
    let r = e.run();
    let res = result_of(&r, "p").clone();
    if let CycleResult::Scheduled { .. } = res {
        let _ = placed(&r, "p");
    }
    res
}

#[test]
fn tls_config_as_kube_scheduler_reads_it() {
    let rt = runtime();
    let (pem, cfg) = server(&["localhost"]);
    let port = serve(&rt, cfg);
    let ca = base64::engine::general_purpose::STANDARD.encode(&pem);
    let url = format!("https://localhost:{port}");
    let ok = |r: &CycleResult, case: &str| {
        assert!(matches!(r, CycleResult::Scheduled { .. }), "{case}: {r:?}")
    };
    let fails = |r: &CycleResult, case: &str, text: &str| match r {
        CycleResult::Failed { message } => {
            assert!(
                message.contains(&url) && message.contains(text),
                "{case}: {message}"
            )
        }
        other => panic!("{case}: {other:?}"),
    };
    ok(
        &attempt(
            &url,
            &format!("enableHTTPS: true, tlsConfig: {{caData: '{ca}'}}"),
        ),
        "trusted CA",
    );
    ok(
        &attempt(&url, "enableHTTPS: true"),
        "enableHTTPS without a CA does not verify",
    );
    ok(&attempt(&url, "tlsConfig: {insecure: true}"), "insecure");
    // A CA that did not sign the server's certificate.
    let (other, _) = server(&["localhost"]);
    let other = base64::engine::general_purpose::STANDARD.encode(&other);
    fails(
        &attempt(
            &url,
            &format!("enableHTTPS: true, tlsConfig: {{caData: '{other}'}}"),
        ),
        "unknown issuer",
        "certificate",
    );

    // A certificate for another name: serverName makes it match.
    let (pem, cfg) = server(&["extender.test"]);
    let port = serve(&rt, cfg);
    let ca = base64::engine::general_purpose::STANDARD.encode(&pem);
    let url = format!("https://127.0.0.1:{port}");
    ok(
        &attempt(
            &url,
            &format!("enableHTTPS: true, tlsConfig: {{caData: '{ca}', serverName: extender.test}}"),
        ),
        "serverName",
    );
    let fails = |r: &CycleResult, case: &str| match r {
        CycleResult::Failed { message } => assert!(message.contains(&url), "{case}: {message}"),
        other => panic!("{case}: {other:?}"),
    };
    fails(
        &attempt(
            &url,
            &format!("enableHTTPS: true, tlsConfig: {{caData: '{ca}'}}"),
        ),
        "name mismatch without serverName",
    );
}
