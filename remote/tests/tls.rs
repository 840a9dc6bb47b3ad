//! A remote plugin over TLS: the tests' plugin server behind a certificate
//! made at test time (rcgen), reached through `remote.tls`; a scheduler
//! that does not trust the certificate does not get to the handshake.

mod common;

use common::{Health, Svc};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use strata_remote::pb::remote_plugin_server::RemotePluginServer;
use strata_scheduler::clock::ManualClock;
use strata_scheduler::cluster::ClusterUpdate;
use strata_scheduler::config::SchedulerConfig;
use strata_scheduler::engine::Scheduler;
use strata_scheduler::testing::{RecordingCluster, node, pod};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A server-side TLS connection as tonic's server takes it.
struct TlsIo(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// A self-signed certificate for `localhost`: its PEM and a server config
/// speaking HTTP/2, which with `client_ca` (PEM) requires a client
/// certificate signed by it.
fn certificate(client_ca: Option<&str>) -> (String, Arc<rustls::ServerConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    (ck.cert.pem(), Arc::new(cfg))
}

/// Serves the tests' plugin over TLS on a free port; the port.
fn serve(rt: &tokio::runtime::Runtime, cfg: Arc<rustls::ServerConfig>) -> (u16, Arc<Health>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let incoming = futures::stream::unfold((listener, acceptor), |(l, a)| async move {
        loop {
            let (tcp, _) = l.accept().await.ok()?;
            // A client that refuses the certificate ends its handshake;
            // keep serving the others.
            if let Ok(s) = a.accept(tcp).await {
                return Some((Ok::<_, io::Error>(TlsIo(s)), (l, a)));
            }
        }
    });
    let health = Arc::new(Health::default());
    let svc = RemotePluginServer::new(Svc(health.clone()));
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .ok();
    });
    (port, health)
}

fn scheduler(
    port: u16,
    tls: &str,
    cluster: Arc<RecordingCluster>,
    rt: &tokio::runtime::Runtime,
) -> Result<Scheduler, String> {
    let yaml = format!(
        r#"
parallelism: 1
profiles:
  - schedulerName: strata-scheduler
    plugins:
      multiPoint:
        enabled: [{{name: RemoteTls, weight: 2}}]
    pluginConfig:
      - name: RemoteTls
        args:
          remote:
            endpoint: "https://127.0.0.1:{port}"
            timeout: 5s
            tls: {{{tls}, serverName: localhost}}
"#
    );
    let mut reg = strata_plugins::registry();
    strata_remote::register(&mut reg, "RemoteTls");
    Scheduler::new(
        SchedulerConfig::from_yaml(&yaml).unwrap(),
        &reg,
        &strata_plugins::default_plugins(),
        cluster,
        Arc::new(ManualClock::default()),
        rt.handle().clone(),
    )
    .map_err(|e| format!("{e:?}"))
}

#[test]
fn a_plugin_behind_tls_filters_and_scores() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = common::socket("tls").parent().unwrap().to_owned();
    let (pem, cfg) = certificate(None);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let (port, health) = serve(&rt, cfg);

    let cluster = Arc::new(RecordingCluster::default());
    let tls = format!("caFile: \"{}\"", ca.display());
    let mut s = scheduler(port, &tls, cluster.clone(), &rt).expect("handshake over TLS");
    for (name, h) in [("ok-0", "ok"), ("ok-1", "ok"), ("failed-0", "failed")] {
        s.handle_update(ClusterUpdate::NodeUpserted(Arc::new(
            node(name)
                .alloc("cpu", "4")
                .alloc("pods", "110")
                .annotation("vendor.example.com/health", h)
                .build(),
        )));
    }
    for i in 0..4 {
        s.handle_update(ClusterUpdate::PodUpserted(Arc::new(
            pod(&format!("p-{i}")).req("cpu", "1").build(),
        )));
    }
    while s.schedule_one().is_some() {}
    while s.in_flight() > 0 {
        s.wait_for_completion(Duration::from_secs(5));
    }
    let binds = cluster.binds.lock().clone();
    assert_eq!(binds.len(), 4, "{binds:?}");
    assert!(binds.iter().all(|(_, n)| n.starts_with("ok-")), "{binds:?}");
    let c = &health.counters;
    assert_eq!(c.handshakes.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(c.filters.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // A CA that did not sign the plugin's certificate: no handshake, and
    // the configuration fails naming the endpoint.
    let (other, _) = certificate(None);
    let wrong = dir.join("other.pem");
    std::fs::write(&wrong, other).unwrap();
    let tls = format!("caFile: \"{}\"", wrong.display());
    let e = scheduler(port, &tls, Arc::default(), &rt)
        .err()
        .expect("an untrusted certificate fails the handshake");
    assert!(e.contains("remote.endpoint"), "{e}");
    assert_eq!(c.handshakes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn mutual_tls_sends_the_client_certificate() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = common::socket("mtls").parent().unwrap().to_owned();
    let client = rcgen::generate_simple_self_signed(vec!["strata".to_owned()]).unwrap();
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert, client.cert.pem()).unwrap();
    std::fs::write(&key, client.signing_key.serialize_pem()).unwrap();
    let (pem, cfg) = certificate(Some(&client.cert.pem()));
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let (port, health) = serve(&rt, cfg);

    // Without a client certificate the server ends the handshake.
    let tls = format!("caFile: \"{}\"", ca.display());
    assert!(scheduler(port, &tls, Arc::default(), &rt).is_err());
    let tls = format!(
        "caFile: \"{}\", certFile: \"{}\", keyFile: \"{}\"",
        ca.display(),
        cert.display(),
        key.display()
    );
    scheduler(port, &tls, Arc::default(), &rt).expect("handshake with a client certificate");
    let c = &health.counters;
    assert_eq!(c.handshakes.load(std::sync::atomic::Ordering::SeqCst), 1);
}
