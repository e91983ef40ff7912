//! Dependencies point one way, from I/O inward: `model` and `engine` stay pure. One crate
//! cannot have the compiler police this, so this test reads the sources.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    if dir.is_file() {
        out.push((dir.display().to_string(), std::fs::read_to_string(dir).unwrap()));
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// Every line under `root` (a folder or one file) that names a forbidden path.
fn violations(root: &Path, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    sources(root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                // Whole paths only: `crate::cli` must not match `crate::client`.
                let named = code
                    .match_indices(word)
                    .any(|(at, _)| !code[at + word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
                if named {
                    found.push(format!("{path}:{}: `{word}`", n + 1));
                }
            }
        }
    }
    found
}

/// `src/<layer>` names none of `forbidden`.
fn check(layer: &str, forbidden: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(layer);
    let found = violations(&root, forbidden);
    assert!(found.is_empty(), "in {layer}:\n{}", found.join("\n"));
}

#[test]
fn the_checker_finds_what_it_must_and_only_that() {
    let dir = std::env::temp_dir().join(format!("tripwire-architecture-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("inner")).unwrap();
    std::fs::write(
        dir.join("inner").join("sample.rs"),
        "use crate::store::Store;\nuse crate::client::Client; // crate::store in a comment\nfn f(s: &Service) { s.store(); }\n",
    )
    .unwrap();
    let found = violations(&dir, &["crate::store", "crate::cli", ".store()"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].ends_with("sample.rs:1: `crate::store`"), "{found:?}");
    assert!(found[1].ends_with("sample.rs:3: `.store()`"), "{found:?}");
}

#[test]
fn model_is_pure_data() {
    check(
        "model",
        &[
            "tokio",
            "redb",
            "axum",
            "dashmap",
            "crate::engine",
            "crate::store",
            "crate::service",
            "crate::http",
            "crate::cli",
            "crate::client",
            "crate::flow",
            "crate::embedded",
            "std::fs",
            "std::net",
            "Utc::now",
            "SystemTime",
            "Instant",
        ],
    );
}

#[test]
fn engine_does_no_io_and_reads_no_clock() {
    check(
        "engine",
        &[
            "tokio",
            "redb",
            "axum",
            "dashmap",
            "crate::store",
            "crate::service",
            "crate::http",
            "crate::cli",
            "crate::client",
            "crate::flow",
            "crate::embedded",
            "std::fs",
            "std::net",
            "Utc::now",
            "SystemTime",
            "Instant::now",
        ],
    );
}

#[test]
fn client_speaks_http_and_knows_only_the_model() {
    check(
        "client",
        &["redb", "axum", "dashmap", "crate::engine", "crate::store", "crate::service", "crate::http", "crate::cli"],
    );
}

#[test]
fn flows_run_on_the_client_and_the_model_only() {
    // Embedded mode plugs the service in from outside (src/embedded.rs implements Backend).
    check(
        "flow",
        &["redb", "axum", "dashmap", "crate::engine", "crate::store", "crate::service", "crate::http", "crate::cli"],
    );
}

#[test]
fn http_goes_through_the_service() {
    // The edge parses, calls the service and maps its errors: reads and writes alike.
    check(
        "http",
        &[
            "redb",
            "crate::store",
            "crate::engine",
            "crate::cli",
            "crate::client",
            "crate::flow",
            "crate::embedded",
            ".store()",
        ],
    );
}

#[test]
fn embedded_mode_is_the_service_without_the_http_edge() {
    check("embedded.rs", &["crate::http", "axum", "crate::cli"]);
}

#[test]
fn store_knows_nothing_of_the_edges() {
    check(
        "store",
        &[
            "tokio",
            "axum",
            "crate::service",
            "crate::http",
            "crate::cli",
            "crate::client",
            "crate::flow",
            "crate::embedded",
        ],
    );
}

#[test]
fn service_knows_nothing_of_the_edges() {
    // The service is what the edges call: it owns concurrency, and names none of them.
    check("service", &["axum", "crate::http", "crate::cli", "crate::client", "crate::flow", "crate::embedded"]);
}

#[test]
fn cli_goes_through_the_service_or_the_client() {
    // The CLI may replay files with the pure engine, but never opens the store itself.
    // One exception: `tripwire bench` measures redb's own speed on a temporary file of its
    // own (the machine's limit beside the server's figure), in that one file, which still
    // may not name the store.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join("cli");
    let redb_limit = root.join("bench").join("redb_limit.rs");
    let mut found = violations(&root, &["redb", "crate::store", ".store()"]);
    found.retain(|v| !(v.starts_with(&redb_limit.display().to_string()) && v.ends_with("`redb`")));
    found.extend(violations(&redb_limit, &["tripwire.redb"]));
    assert!(found.is_empty(), "in cli:\n{}", found.join("\n"));
}
