//! Every conformance case in `tests/conformance/` (copies of `../shared/conformance/cases`,
//! produced by the real Prefect 3.8.8 trigger engine) run through the library's replay: one
//! test per case file, so a failure names the case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use tripwire::engine::compile_all;
use tripwire::engine::replay::replay;
use tripwire::model::{Event, Firing, JsonPath, Timestamp, TriggerDefinition};

fn main() {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/conformance exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no conformance cases in {}", dir.display());
    let trials = cases
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            Trial::test(name, move || run_case(&path))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// What identifies a firing: trigger, bucket, instant, triggering event (as the runner does).
type Ident = (String, BTreeMap<String, String>, Timestamp, Option<String>);

fn run_case(path: &Path) -> Result<(), Failed> {
    let case: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let defs = TriggerDefinition::list_from_json(&case["triggers"]).map_err(|p| format!("triggers: {p}"))?;
    let compiled = compile_all(&defs).map_err(|p| format!("triggers: {p}"))?;
    let events = case["events"]
        .as_array()
        .ok_or("events is not an array")?
        .iter()
        .enumerate()
        .map(|(i, e)| Event::from_json(e, &JsonPath::root().index(i), None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| format!("events: {p}"))?;
    let until = case["until"].as_str().map(Timestamp::parse).transpose()?;
    let got = replay(compiled, events, until);
    compare(case["expected"].as_array().ok_or("expected is not an array")?, &got)
}

fn ident_of_expected(e: &Value) -> Result<Ident, Failed> {
    let bucket: BTreeMap<String, String> = serde_json::from_value(e["bucket"].clone())?;
    let at = Timestamp::parse(e["at"].as_str().ok_or("expected firing without `at`")?)?;
    Ok((
        e["trigger"].as_str().unwrap_or_default().to_owned(),
        bucket,
        at,
        e["triggering_event"].as_str().map(str::to_owned),
    ))
}

fn ident_of(f: &Firing) -> Ident {
    (f.trigger.clone(), f.bucket.clone(), f.at, f.triggering_event.map(|u| u.to_string()))
}

/// Firings must match one to one; parameters are compared where the case gives them
/// (null means Prefect's own rendering failed, so only the firing is checked).
fn compare(expected: &[Value], got: &[Firing]) -> Result<(), Failed> {
    let mut pool: Vec<&Firing> = got.iter().collect();
    let mut problems = Vec::new();
    for e in expected {
        let want = ident_of_expected(e)?;
        let candidates: Vec<usize> = (0..pool.len()).filter(|&i| ident_of(pool[i]) == want).collect();
        let Some(&first) = candidates.first() else {
            problems.push(format!("missing firing {want:?}"));
            continue;
        };
        let hit = match e.get("parameters") {
            Some(p) if !p.is_null() => match candidates.iter().find(|&&i| pool[i].parameters.as_ref() == Some(p)) {
                Some(&i) => i,
                None => {
                    problems.push(format!("firing {want:?}: parameters {:?}, want {p}", pool[first].parameters));
                    first
                }
            },
            _ => first,
        };
        pool.remove(hit);
    }
    for extra in pool {
        problems.push(format!("unexpected firing {:?}", ident_of(extra)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}
