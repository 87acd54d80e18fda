//! The outbox against a real local HTTP receiver: an outage loses nothing, a restart
//! loses nothing, and each event reaches the profile's path.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A minimal HTTP/1.1 receiver on 127.0.0.1 that records (path, body) and answers 200.
async fn receiver(listener: TcpListener) -> Arc<Mutex<Vec<(String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                    seen.lock().expect("lock").push((path, body));
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    out
}

async fn outbox(url: &str) -> Outbox {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("pool");
    Outbox::new(pool).await.expect("outbox")
}

#[tokio::test]
async fn a_receiver_outage_loses_nothing() {
    // A port with nobody listening: the receiver is down.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("dir");
    let ob = outbox(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("o.db").display()
    ))
    .await;
    let http: Arc<dyn LineageTransport> =
        Arc::new(HttpTransport::new("datahub", &base, Profile::DataHub, None));
    let dispatcher = Dispatcher::new(ob.clone(), vec![http]);
    let t0 = 1_000_000u64;
    for i in 0..1000 {
        ob.enqueue(&json!({"run": i}), &dispatcher.receivers(), t0)
            .await
            .expect("enqueue");
    }
    assert_eq!(dispatcher.run_once(t0, 500).await.expect("pass"), 0);
    assert_eq!(ob.pending().await.expect("count"), 1000);
    // The receiver comes back on the same port.
    let seen = receiver(
        TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind"),
    )
    .await;
    let later = t0 + backoff(0).as_millis() as u64;
    let mut sent = 0;
    loop {
        let n = dispatcher.run_once(later, 500).await.expect("pass");
        if n == 0 {
            break;
        }
        sent += n;
    }
    assert_eq!(sent, 1000);
    assert_eq!(ob.pending().await.expect("count"), 0);
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .all(|(p, _)| p == "/openapi/openlineage/api/v1/lineage")
    );
    let runs: HashSet<String> = seen.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(runs.len(), 1000, "every event arrived");
}

#[tokio::test]
async fn unsent_events_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
    let file = dir.path().join("lineage.jsonl");
    {
        let ob = outbox(&url).await;
        for i in 0..10 {
            ob.enqueue(&json!({"run": i}), &["file".to_string()], 1)
                .await
                .expect("enqueue");
        }
        // The provider dies here, before any delivery.
    }
    let ob = outbox(&url).await;
    let dispatcher = Dispatcher::new(
        ob.clone(),
        vec![Arc::new(FileTransport::new("file", &file))],
    );
    assert_eq!(dispatcher.run_once(2, 500).await.expect("pass"), 10);
    let lines = std::fs::read_to_string(&file).expect("file");
    assert_eq!(lines.lines().count(), 10);
    assert_eq!(ob.pending().await.expect("count"), 0);
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    assert_eq!(backoff(0).as_millis(), 500);
    assert_eq!(backoff(3).as_millis(), 4000);
    assert_eq!(backoff(40).as_secs(), 300);
}

#[tokio::test]
async fn a_publish_recorded_by_another_process_reaches_every_receiver_once() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    // `insitu publish`: registers an asset; it knows no receivers.
    let publisher = crate::AssetStore::open(&url).await.expect("open");
    let ddo = crate::ddo::sample_ddo();
    publisher
        .insert(
            &ddo,
            &crate::StorageLocation {
                url: "s3://bucket/private/lineitem.parquet?X-Amz-Signature=secret".into(),
                format: crate::DataFormat::Parquet,
                schema_ipc: Vec::new(),
            },
        )
        .await
        .expect("insert");
    publisher.mark_registered(ddo.did).await.expect("register");
    let mut updated = ddo.clone();
    updated.description = "TPC-H lineitem, scale factor 1".into();
    publisher.update(&updated).await.expect("update");

    // `insitu serve`, twice (two replicas), each with two file receivers.
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let server = crate::AssetStore::open(&url).await.expect("open");
    let transports = || -> Vec<Arc<dyn LineageTransport>> {
        vec![
            Arc::new(FileTransport::new("a", &a)),
            Arc::new(FileTransport::new("b", &b)),
        ]
    };
    let one = Dispatcher::new(server.lineage_outbox(), transports());
    let two = Dispatcher::new(server.lineage_outbox(), transports());
    let now = transport::now_ms();
    let (x, y) = tokio::join!(one.run_once(now, 100), two.run_once(now, 100));
    assert_eq!(
        x.expect("one") + y.expect("two"),
        4,
        "two events, two receivers"
    );
    assert_eq!(server.lineage_outbox().pending().await.expect("pending"), 0);
    for file in [&a, &b] {
        let text = std::fs::read_to_string(file).expect("read");
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(events.len(), 2, "each receiver gets each event once");
        let changes: Vec<&str> = events
            .iter()
            .map(|e| {
                e["dataset"]["facets"]["lifecycleStateChange"]["lifecycleStateChange"]
                    .as_str()
                    .expect("change")
            })
            .collect();
        assert_eq!(changes, ["CREATE", "ALTER"]);
        assert_eq!(events[0]["dataset"]["namespace"], "s3://bucket");
        assert_eq!(events[0]["dataset"]["name"], "/private/lineitem.parquet");
        assert!(!text.contains("Signature"), "no credentials from the URL");
        assert_eq!(
            events[1]["dataset"]["facets"]["documentation"]["description"],
            "TPC-H lineitem, scale factor 1"
        );
    }
}
