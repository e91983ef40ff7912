//! `tripwire bench --quick --json F` runs every scenario against a server it starts itself and
//! writes every figure: present, finite and positive, with the firings check passed. No timing
//! is asserted (CI machines differ).

use std::process::Command;

/// Every figure the JSON must hold.
const FIGURES: &[&str] = &[
    "limit_redb_inserts_per_s",
    "limit_axum_requests_per_s",
    "limit_axum_events_per_s",
    "limit_axum_p50_ms",
    "limit_axum_p99_ms",
    "limit_axum_max_ms",
    "batched_events_per_s",
    "batched_p50_ms",
    "batched_p99_ms",
    "batched_max_ms",
    "single_events_per_s",
    "single_p50_ms",
    "single_p99_ms",
    "single_max_ms",
    "firings_ingest_events_per_s",
    "firings_ingest_p99_ms",
    "firings_per_s",
    "paced_events_per_s",
    "paced_p50_ms",
    "paced_p99_ms",
    "paced_max_ms",
    "paced_longest_stall_ms",
    "buckets_ingest_events_per_s",
    "bucket_resident_bytes",
    "buckets_rss_bytes",
    "buckets_peak_bytes",
    "buckets_data_bytes",
    "restart_s",
    "shutdown_s",
    "backtest_store_events_per_s",
    "backtest_paced_alone_p99_ms",
    "backtest_paced_beside_p99_ms",
    "backtest_paced_after_p99_ms",
    "backtest_s",
    "backtest_events_per_s",
    "backtest_events_read",
    "backtest_firings",
    "backtest_rss_bytes",
];

#[test]
fn quick_bench_writes_every_figure_and_loses_no_firing() {
    let dir = std::env::temp_dir().join(format!("tripwire-test-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["bench", "--quick", "--json"])
        .arg(&json)
        .arg("--data")
        .arg(&dir)
        .output()
        .expect("the tripwire binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    // The table: a header and one row per figure group.
    for row in [
        "figure",
        "batched ingest",
        "one event per request",
        "firings/s",
        "paced",
        "live buckets",
        "restart",
        "backtest of",
    ] {
        assert!(stdout.contains(row), "no `{row}` row in:\n{stdout}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let figures = report["figures"].as_object().expect("figures");
    for name in FIGURES {
        let value = figures.get(*name).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("no figure {name}: {report}"));
        assert!(value.is_finite() && value > 0.0, "{name} = {value}");
    }
    assert_eq!(report["checks"]["firings_none_lost"], true, "{report}");
    assert_eq!(report["checks"]["firings_found"], report["checks"]["firings_expected"], "{report}");
    assert_eq!(report["quick"], true);
    // The temporary data is gone: only the JSON is left in --data.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("bench.json")]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_tripwire")).args(["bench", "--quick", "--bogus"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--bogus"));
    // An unwritable --json is refused before anything is measured.
    let output = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["bench", "--quick", "--json", "/nonexistent-tripwire-dir/x.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--json: cannot write"), "{output:?}");
    // An unreachable --api is an error naming it, before anything is measured.
    let output = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(["bench", "--quick", "--api", "http://127.0.0.1:1/api"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("127.0.0.1:1"), "{output:?}");
}
