//! The receiver's answers to every kind of request, against the real remote Redis: a
//! refused request changes nothing, a re-sent stamp is not applied twice, a stamp re-used
//! for other operations or a stream the receiver has no record of asks for a new stream.

mod common;

use cache_sync::receive::{self, StreamState};
use cache_sync::wire::{self, BatchReply, ErrorReply, Outcome, ResetReason, StreamReply};
use common::{RunningReceiver, SECRET, Stack};
use hotkeys::Topology;
use hotkeys::config::{RedisMode, RingAlgorithm, SyncCompression};
use hotkeys::redis::CacheNodes;
use hotkeys::sync::{Op, QueuedOp, now_ms};
use reqwest::StatusCode;

/// A receiver of the test's topology and a client that speaks to it.
struct Harness {
    stack: Stack,
    receiver: RunningReceiver,
    client: reqwest::Client,
    /// This test's stream: no other test sends on it.
    stream: String,
}

impl Harness {
    async fn start(test: &str, max_body: usize) -> Option<Harness> {
        Harness::start_with(test, |t| t.sync.max_body = max_body).await
    }

    async fn start_with(test: &str, configure: impl FnOnce(&mut Topology)) -> Option<Harness> {
        let stack = common::stack(test).await?;
        let mut t = stack.topology();
        configure(&mut t);
        let receiver = RunningReceiver::start(&t, "127.0.0.1:0").await;
        let mut harness = Harness {
            stack,
            receiver,
            client: reqwest::Client::new(),
            stream: String::new(),
        };
        harness.stream = harness.open_stream(None).await;
        Some(harness)
    }

    /// A stream the receiver issues for this test's queue, leaving `previous`.
    async fn open_stream(&self, previous: Option<&str>) -> String {
        let body = serde_json::to_vec(&wire::StreamRequest {
            queue: format!("test:{}:queue", self.stack.id),
            previous: previous.map(str::to_string),
            sent_ms: now_ms(),
        })
        .unwrap();
        let signature = wire::sign(SECRET.as_bytes(), &body);
        let response = self
            .client
            .post(format!("{}/streams", self.receiver.url()))
            .header(wire::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        serde_json::from_str::<StreamReply>(&text).unwrap().stream
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.stack.prefix())
    }

    fn body(&self, stamp: u64, ops: &[Op]) -> Vec<u8> {
        let lines: Vec<String> = ops
            .iter()
            .map(|op| QueuedOp::now(op.clone()).to_json())
            .collect();
        wire::encode_batch(
            &self.stream,
            stamp,
            now_ms(),
            0,
            lines.iter().map(|l| l.as_bytes()),
        )
    }

    async fn post(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
        encoding: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = self.client.post(self.receiver.url()).body(body);
        if let Some(signature) = signature {
            request = request.header(wire::SIGNATURE_HEADER, signature);
        }
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn post_signed(&self, body: Vec<u8>) -> (StatusCode, String) {
        let signature = wire::sign(SECRET.as_bytes(), &body);
        self.post(body, Some(signature), None).await
    }

    async fn send(&self, stamp: u64, ops: &[Op]) -> (StatusCode, String) {
        self.post_signed(self.body(stamp, ops)).await
    }

    async fn remote_get(&mut self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.stack.remote)
            .await
            .unwrap()
    }

    async fn state(&self) -> StreamState {
        let t = self.stack.topology();
        let conn = hotkeys::redis::RedisConn::connect_home(&common::remote_redis(&t))
            .await
            .unwrap();
        receive::stream_state(&conn, &self.stream).await.unwrap()
    }

    async fn finish(mut self) {
        self.receiver.stop().await;
        self.stack.cleanup().await;
    }
}

fn applied(text: &str) -> BatchReply {
    serde_json::from_str(text).unwrap()
}

fn error(text: &str) -> String {
    serde_json::from_str::<ErrorReply>(text).unwrap().error
}

fn reset(text: &str) -> Option<ResetReason> {
    serde_json::from_str::<ErrorReply>(text).unwrap().reset
}

#[tokio::test]
async fn a_signed_batch_is_applied_and_its_stamp_recorded() {
    let Some(mut h) = Harness::start("applied", 1 << 20).await else {
        return;
    };
    let (a, b) = (h.key("a"), h.key("b"));
    let (status, text) = h
        .send(
            1,
            &[
                Op::set(&a, "1", None),
                Op::set(&b, "2", None),
                Op::delete(&b),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let reply = applied(&text);
    assert_eq!(
        (reply.status, reply.stamp, reply.ops),
        (Outcome::Applied, 1, 3)
    );
    assert_eq!(h.remote_get(&a).await.as_deref(), Some("1"));
    assert_eq!(h.remote_get(&b).await, None);
    let state = h.state().await;
    assert_eq!(
        (state.processing, state.processed, state.applied),
        (1, 1, 1)
    );
    h.finish().await;
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_refused_with_401_and_changes_nothing() {
    let Some(mut h) = Harness::start("signature", 1 << 20).await else {
        return;
    };
    let key = h.key("k");
    let body = h.body(1, &[Op::set(&key, "v", None)]);
    let forged = wire::sign(b"not the secret", &body);
    let other_body = wire::sign(SECRET.as_bytes(), b"another body");
    for signature in [Some(forged), Some(other_body), Some("sha256=".into()), None] {
        let (status, text) = h.post(body.clone(), signature, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    }
    assert_eq!(h.remote_get(&key).await, None);
    assert_eq!(h.state().await, StreamState::default());
    h.finish().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_and_changes_nothing() {
    let Some(mut h) = Harness::start("oversized", 4096).await else {
        return;
    };
    let key = h.key("k");
    // Too large as sent.
    let big = h.body(1, &[Op::set(&key, "x".repeat(8192), None)]);
    let (status, text) = h.post_signed(big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    // Small as sent, too large once decompressed.
    let packed = wire::compress(big, SyncCompression::Zstd).unwrap();
    assert!(packed.len() < 4096);
    let signature = wire::sign(SECRET.as_bytes(), &packed);
    let (status, text) = h.post(packed, Some(signature), Some("zstd")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_eq!(h.remote_get(&key).await, None);
    assert_eq!(h.state().await, StreamState::default());
    h.finish().await;
}

#[tokio::test]
async fn a_malformed_body_is_refused_with_400_naming_the_first_error_and_changes_nothing() {
    let Some(mut h) = Harness::start("malformed", 1 << 20).await else {
        return;
    };
    let good = h.key("good");
    let first = QueuedOp::now(Op::set(&good, "v", None)).to_json();
    let cases: Vec<(Vec<u8>, &str)> =
        vec![
        (
            format!(
                r#"{{"stream":"{}","stamp":1,"sent_ms":{},"ops":[{first},{{"op":"set","key":"x","at_ms":1}}]}}"#,
                h.stream,
                now_ms()
            )
            .into_bytes(),
            "ops[1]",
        ),
        (b"{not json".to_vec(), "key must be a string"),
        (
            format!(r#"{{"stream":"{}","sent_ms":{},"ops":[]}}"#, h.stream, now_ms()).into_bytes(),
            "stamp",
        ),
    ];
    for (body, expected) in cases {
        let (status, text) = h.post_signed(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(error(&text).contains(expected), "{text}");
    }
    // Signed, but not the compression it claims.
    let body = b"plain bytes".to_vec();
    let signature = wire::sign(SECRET.as_bytes(), &body);
    let (status, _) = h.post(body, Some(signature), Some("gzip")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The valid first operation of the refused batch was not applied either.
    assert_eq!(h.remote_get(&good).await, None);
    assert_eq!(
        h.state().await,
        StreamState::default(),
        "nothing recorded but the stream"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_replayed_stamp_is_acknowledged_without_being_applied_again() {
    let Some(mut h) = Harness::start("replay", 1 << 20).await else {
        return;
    };
    let key = h.key("k");
    let first = h.body(1, &[Op::set(&key, "first", None)]);
    let (status, _) = h.post_signed(first.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.send(2, &[Op::set(&key, "second", None)]).await;
    assert_eq!(status, StatusCode::OK);

    // Stamp 1 again, byte for byte: were it applied, the key would go back to "first".
    let (status, text) = h.post_signed(first).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(applied(&text).status, Outcome::Duplicate);
    assert_eq!(h.remote_get(&key).await.as_deref(), Some("second"));
    let state = h.state().await;
    assert_eq!(
        (state.processed, state.applied, state.duplicates),
        (2, 2, 1)
    );
    h.finish().await;
}

#[tokio::test]
async fn a_stamp_that_skips_ahead_is_refused_with_409_and_changes_nothing() {
    let Some(mut h) = Harness::start("gap", 1 << 20).await else {
        return;
    };
    let key = h.key("k");
    let (status, _) = h.send(1, &[Op::set(&key, "one", None)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = h.send(3, &[Op::set(&key, "three", None)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(error(&text).contains("expects 2"), "{text}");
    assert_eq!(h.remote_get(&key).await.as_deref(), Some("one"));
    let state = h.state().await;
    assert_eq!((state.processed, state.applied), (1, 1));
    // Allowed to wait for stamp 2, which never comes.
    let late = wire::encode_batch(&h.stream, 3, now_ms(), 200, std::iter::empty());
    let (status, text) = h.post_signed(late).await;
    assert_eq!((status, reset(&text)), (StatusCode::CONFLICT, None));
    // A new stream must begin at stamp 1.
    h.stream = h.open_stream(Some(&h.stream)).await;
    let (status, _) = h.send(2, &[Op::set(&key, "two", None)]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(h.remote_get(&key).await.as_deref(), Some("one"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_arrives_before_its_predecessor_waits_and_both_apply_in_order() {
    let Some(h) = Harness::start("out_of_order", 1 << 20).await else {
        return;
    };
    let key = h.key("k");
    let lines = [QueuedOp::now(Op::set(&key, "two", None)).to_json()];
    let second = wire::encode_batch(
        &h.stream,
        2,
        now_ms(),
        30_000,
        lines.iter().map(|l| l.as_bytes()),
    );
    let h = std::sync::Arc::new(h);
    let early = tokio::spawn({
        let h = std::sync::Arc::clone(&h);
        async move { h.post_signed(second).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (status, text) = h.send(1, &[Op::set(&key, "one", None)]).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = early.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(applied(&text).status, Outcome::Applied);
    let mut h = std::sync::Arc::into_inner(h).unwrap();
    assert_eq!(h.remote_get(&key).await.as_deref(), Some("two"));
    let state = h.state().await;
    assert_eq!((state.processed, state.applied), (2, 2));
    h.finish().await;
}

#[tokio::test]
async fn zstd_gzip_and_plain_bodies_are_all_applied() {
    let Some(mut h) = Harness::start("encodings", 1 << 20).await else {
        return;
    };
    for (stamp, compression) in [
        (1, SyncCompression::Zstd),
        (2, SyncCompression::Gzip),
        (3, SyncCompression::None),
    ] {
        let key = h.key(&format!("{compression:?}"));
        let body = h.body(stamp, &[Op::set(&key, vec![0u8, 159, 146, 150], None)]);
        let body = wire::compress(body, compression).unwrap();
        let signature = wire::sign(SECRET.as_bytes(), &body);
        let (status, text) = h
            .post(body, Some(signature), wire::content_encoding(compression))
            .await;
        assert_eq!(status, StatusCode::OK, "{compression:?}: {text}");
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut h.stack.remote)
            .await
            .unwrap();
        assert_eq!(value, Some(vec![0u8, 159, 146, 150]), "{compression:?}");
    }
    let signature = wire::sign(SECRET.as_bytes(), b"x");
    let (status, _) = h.post(b"x".to_vec(), Some(signature), Some("br")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    h.finish().await;
}

#[tokio::test]
async fn a_set_whose_ttl_ran_out_on_the_way_deletes_the_key() {
    let Some(mut h) = Harness::start("expired", 1 << 20).await else {
        return;
    };
    let key = h.key("k");
    let (status, _) = h.send(1, &[Op::set(&key, "old", None)]).await;
    assert_eq!(status, StatusCode::OK);
    let expired = QueuedOp {
        op: Op::set(&key, "new", Some(std::time::Duration::from_secs(1))),
        at_ms: now_ms() - 5_000,
    }
    .to_json();
    let body = wire::encode_batch(
        &h.stream,
        2,
        now_ms(),
        0,
        std::iter::once(expired.as_bytes()),
    );
    let (status, _) = h.post_signed(body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.remote_get(&key).await, None);
    h.finish().await;
}

#[tokio::test]
async fn a_receiving_ring_gets_each_key_on_its_node_and_deletes_on_every_node() {
    // The stack's two servers stand in for two nodes of the receiving data centre.
    let mut ring = None;
    let Some(mut h) = Harness::start_with("receiving_ring", |t| {
        t.redis.mode = RedisMode::Ring;
        t.redis.ring = RingAlgorithm::PeclMemcache;
        t.sync.apply_nodes = vec![t.sync.apply_nodes[0].clone(), t.redis.nodes[0].clone()];
        ring = Some(common::remote_redis(t));
    })
    .await
    else {
        return;
    };
    let placement = CacheNodes::connect(&ring.unwrap()).await.unwrap();
    let keys: Vec<String> = (0..40).map(|i| h.key(&i.to_string())).collect();
    let sets: Vec<Op> = keys.iter().map(|k| Op::set(k, "v", None)).collect();
    let first = h.body(1, &sets);
    let (status, text) = h.post_signed(first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let mut per_node = [0; 2];
    for key in &keys {
        let node = placement.node_for(key);
        per_node[node] += 1;
        for (i, conn) in [&mut h.stack.remote, &mut h.stack.local]
            .into_iter()
            .enumerate()
        {
            let exists: bool = redis::cmd("EXISTS")
                .arg(key)
                .query_async(conn)
                .await
                .unwrap();
            assert_eq!(exists, i == node, "{key} on node {i}");
        }
    }
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");

    // A stale copy on the wrong node goes too: a delete reaches every node.
    let stale = &keys[0];
    let wrong = 1 - placement.node_for(stale);
    let conn = if wrong == 0 {
        &mut h.stack.remote
    } else {
        &mut h.stack.local
    };
    redis::cmd("SET")
        .arg(stale)
        .arg("stale")
        .query_async::<()>(conn)
        .await
        .unwrap();
    let (status, _) = h.send(2, &[Op::delete(stale)]).await;
    assert_eq!(status, StatusCode::OK);
    for conn in [&mut h.stack.remote, &mut h.stack.local] {
        let exists: bool = redis::cmd("EXISTS")
            .arg(stale)
            .query_async(conn)
            .await
            .unwrap();
        assert!(!exists);
    }
    // The stream record lives on the first receiving node.
    let (status, text) = h.post_signed(first).await;
    assert_eq!(applied(&text).status, Outcome::Duplicate, "{status} {text}");
    let state = h.state().await;
    assert_eq!(
        (state.processed, state.applied, state.duplicates),
        (2, 2, 1)
    );
    h.finish().await;
}

#[tokio::test]
async fn a_stamp_resent_with_other_operations_asks_for_a_new_stream_and_applies_nothing() {
    let Some(mut h) = Harness::start("reused", 1 << 20).await else {
        return;
    };
    let key = h.key("k");
    for stamp in 1..=3 {
        let (status, text) = h
            .send(stamp, &[Op::set(&key, format!("v{stamp}"), None)])
            .await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    let (status, text) = h.send(2, &[Op::set(&key, "other", None)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(reset(&text), Some(ResetReason::ReusedStamp));
    assert_eq!(h.remote_get(&key).await.as_deref(), Some("v3"));
    let state = h.state().await;
    assert_eq!(
        (state.processed, state.applied, state.duplicates),
        (3, 3, 0)
    );

    // The shipper leaves the stream: the old one is closed to every batch.
    let old = std::mem::take(&mut h.stream);
    h.stream = h.open_stream(Some(&old)).await;
    let (status, text) = h.send(1, &[Op::set(&key, "new", None)]).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    h.stream = old;
    let (status, text) = h.send(4, &[Op::set(&key, "late", None)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert_eq!(reset(&text), Some(ResetReason::ClosedStream));
    assert!(h.state().await.closed);
    assert_eq!(h.remote_get(&key).await.as_deref(), Some("new"));
    h.finish().await;
}

#[tokio::test]
async fn with_its_stream_record_gone_every_batch_asks_for_a_new_stream_and_applies_nothing() {
    let Some(mut h) = Harness::start("record_gone", 1 << 20).await else {
        return;
    };
    let key = h.key("k");
    for stamp in 1..=3 {
        let (status, text) = h
            .send(stamp, &[Op::set(&key, stamp.to_string(), None)])
            .await;
        assert_eq!(status, StatusCode::OK, "stamp {stamp}: {text}");
    }
    // The record is lost (a flushed or failed-over receiving Redis).
    redis::cmd("DEL")
        .arg(receive::stream_key(&h.stream))
        .query_async::<()>(&mut h.stack.remote)
        .await
        .unwrap();
    for stamp in [1, 3, 4] {
        let (status, text) = h.send(stamp, &[Op::set(&key, "again", None)]).await;
        assert_eq!(status, StatusCode::CONFLICT, "stamp {stamp}: {text}");
        assert_eq!(reset(&text), Some(ResetReason::UnknownStream));
    }
    assert_eq!(h.remote_get(&key).await.as_deref(), Some("3"));
    assert_eq!(h.state().await, StreamState::default());
    h.finish().await;
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_is_answered_408_after_sync_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(h) = Harness::start_with("slow_body", |t| {
        t.sync.timeout = std::time::Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let mut conn = tokio::net::TcpStream::connect(h.receiver.addr)
        .await
        .unwrap();
    conn.write_all(
        b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within 30 s");
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    h.finish().await;
}
