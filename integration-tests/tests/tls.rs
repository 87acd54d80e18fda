//! TLS on the Flight port: a client that trusts the provider's certificate downloads; a
//! plaintext client gets nothing.

use insitu_flight::client::DownloadClient;
use insitu_flight::{AssetRequest, FlightServiceBuilder, TlsIdentity, serve_on_tls};
use insitu_integration_tests::CONSUMER;

use crate::common::Scene;

#[tokio::test]
async fn a_tls_provider_serves_clients_that_trust_it_and_no_plaintext_client() {
    let s = Scene::start().await.expect("scene");
    let agreement = s.order(CONSUMER, s.free).await.expect("order");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("self-signed certificate");
    let identity = TlsIdentity {
        cert_pem: cert.cert.pem().into_bytes(),
        key_pem: cert.signing_key.serialize_pem().into_bytes(),
    };
    assert!(
        !format!("{identity:?}").contains("PRIVATE"),
        "the key must not print"
    );
    let service = FlightServiceBuilder::new(s.provider.engine.clone(), s.provider.catalog.clone())
        .build()
        .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_on_tls(listener, service, Some(identity), async {
        let _ = stopped.await;
    }));
    let token = s.token(CONSUMER).expect("token");
    let request = AssetRequest {
        did: s.free,
        agreement,
    };

    let mut client = DownloadClient::connect_with_ca(
        &format!("https://localhost:{port}"),
        &token,
        Some(cert.cert.pem().into_bytes()),
    )
    .await
    .expect("TLS connect");
    let info = client.info(request).await.expect("info over TLS");
    let rows: usize =
        insitu_integration_tests::collect(client.stream(&info).await.expect("stream"))
            .await
            .expect("rows")
            .iter()
            .map(|b| b.num_rows())
            .sum();
    assert_eq!(rows, 10_000);

    // A plaintext client cannot talk to the TLS port.
    let plain = async {
        let mut c = DownloadClient::connect(&format!("http://127.0.0.1:{port}"), &token).await?;
        c.info(request).await
    };
    assert!(
        plain.await.is_err(),
        "plaintext must not be served on a TLS port"
    );

    // A client that does not trust the certificate refuses the provider.
    let untrusted = async {
        let mut c = DownloadClient::connect(&format!("https://localhost:{port}"), &token).await?;
        c.info(request).await
    };
    assert!(
        untrusted.await.is_err(),
        "an untrusted certificate must be refused"
    );
    let _ = stop.send(());
}
