//! Dependencies point one way, from I/O inward: `model` and `engine` stay pure. One crate
//! cannot have the compiler police this, so this test reads the sources.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
}

fn check(layer: &str, forbidden: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(layer);
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(!files.is_empty(), "no sources under src/{layer}");
    let mut violations = Vec::new();
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                // Whole paths only: `crate::cli` must not match `crate::client`.
                let found = code
                    .match_indices(word)
                    .any(|(at, _)| !code[at + word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
                if found {
                    violations.push(format!("{path}:{}: `{word}` in {layer}", n + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
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
    check("http", &["redb", "crate::store", "crate::engine", "crate::cli", ".store()"]);
}

#[test]
fn store_knows_nothing_of_the_edges() {
    check("store", &["tokio", "axum", "crate::service", "crate::http", "crate::cli", "crate::client"]);
}
