//! A data directory written by tripwire on redb 2 (file format 2) opens after the move to
//! redb 4: the file is upgraded in place, and its events, triggers, runs and open windows are
//! all there. The fixture was written by the release before the move: a deployment `ship`, a
//! trigger `paid` (`order.paid` after `order.created` per order, within ten years), and three
//! events: order 1 created and paid (one run, and its run-state event), order 2 created (its
//! window open). The window is that long, and the server keeps events for a century, so that
//! the test passes on whatever day it runs: the fixture's clock stopped when it was written.

#![allow(clippy::disallowed_methods)] // the live server runs on the wall clock

mod common;

use std::io::Read;

use common::{temp_dir, Http, Server};
use serde_json::json;

/// Retention long enough that the fixture's events are never pruned.
const KEEP_EVERYTHING: &[&str] = &["--retention", "36500d"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_redb_2_format_is_upgraded_and_everything_reads_back() {
    let data = temp_dir("upgrade-redb2");
    let mut gz = flate2::read::GzDecoder::new(&include_bytes!("data/redb2-format.redb.gz")[..]);
    let mut file = Vec::new();
    gz.read_to_end(&mut file).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tripwire.redb"), file).unwrap();

    let server = Server::start_with(&data, KEEP_EVERYTHING);
    let http = Http::new(&server.api);
    let (status, body) = http.get("/events?limit=10").await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    // The three sent, and the run's `tripwire.run.scheduled`, newest first.
    assert_eq!(names, ["order.created", "tripwire.run.scheduled", "order.paid", "order.created"]);
    assert_eq!(http.get("/triggers/paid").await.0, 200);
    let (_, runs) = http.get("/runs").await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["parameters"], json!({"order": "order.1"}));

    // Order 2's window survived the upgrade: paying it fires.
    let paid = json!({"event": "order.paid", "resource": {"prefect.resource.id": "order.2"}});
    assert_eq!(http.post("/events", paid).await.0, 200);
    let mut orders = Vec::new();
    for _ in 0..100 {
        let (_, runs) = http.get("/runs").await;
        orders = runs.as_array().unwrap().iter().map(|r| r["parameters"]["order"].clone()).collect();
        if orders.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    orders.sort_by_key(|o| o.to_string());
    assert_eq!(orders, [json!("order.1"), json!("order.2")]);

    // And the upgraded file opens again as it is.
    drop(server);
    let server = Server::start_with(&data, KEEP_EVERYTHING);
    let (_, runs) = Http::new(&server.api).get("/runs").await;
    assert_eq!(runs.as_array().unwrap().len(), 2);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
