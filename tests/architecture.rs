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

/// The code of each line (comments left out), with grouped paths spelt out: a line that
/// opens `crate::{store, engine::Engine}` also names `crate::store` and `crate::engine`, even
/// when the group goes on over the next lines.
fn code_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.split("//").next().unwrap_or("").to_owned()).collect();
    let joined = lines.join("\n");
    let mut from = 0;
    while let Some(at) = joined[from..].find("crate::{").map(|i| from + i) {
        let line = joined[..at].matches('\n').count();
        let (mut depth, mut item, mut named) = (0, String::new(), Vec::new());
        for c in joined[at + "crate::{".len()..].chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => named.push(std::mem::take(&mut item)),
                _ => {}
            }
            item.push(c);
        }
        named.push(item);
        for item in named {
            let head: String = item
                .trim_start_matches(|c: char| c == ',' || c.is_whitespace())
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !head.is_empty() {
                lines[line].push_str(&format!(" crate::{head}"));
            }
        }
        from = at + 1;
    }
    lines
}

/// Every line under `root` (a folder or one file) that names a forbidden path.
fn violations(root: &Path, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    sources(root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for (path, text) in &files {
        for (n, code) in code_lines(text).iter().enumerate() {
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
        "use crate::store::Store;\nuse crate::client::Client; // crate::store in a comment\nfn f(s: &Service) { s.store(); }\n\
         use crate::{model::Event, cli};\nuse crate::{\n    engine::{Engine, Step},\n    store::Tx,\n};\n",
    )
    .unwrap();
    let found = violations(&dir, &["crate::store", "crate::cli", ".store()", "crate::engine", "crate::model::Event"]);
    let _ = std::fs::remove_dir_all(&dir);
    let expected = [
        "sample.rs:1: `crate::store`",
        "sample.rs:3: `.store()`",
        "sample.rs:4: `crate::cli`",
        "sample.rs:5: `crate::store`",
        "sample.rs:5: `crate::engine`",
    ];
    assert_eq!(found.len(), expected.len(), "{found:?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(found.ends_with(expected), "{found} is not {expected}");
    }
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
        &[
            "redb",
            "axum",
            "dashmap",
            "crate::engine",
            "crate::store",
            "crate::service",
            "crate::http",
            "crate::cli",
            "crate::flow",
            "crate::embedded",
        ],
    );
}

#[test]
fn flows_run_on_the_client_and_the_model_only() {
    // Embedded mode plugs the service in from outside: src/embedded.rs implements the
    // `Tripwire` and `WorkerProtocol` traits the flows are written against.
    check(
        "flow",
        &[
            "redb",
            "axum",
            "dashmap",
            "crate::engine",
            "crate::store",
            "crate::service",
            "crate::http",
            "crate::cli",
            "crate::embedded",
        ],
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
    // It calls the service (which owns the engine and the store), never reaches past it.
    check("embedded.rs", &["crate::http", "axum", "crate::cli", "crate::store", "crate::engine", "redb"]);
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
