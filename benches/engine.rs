//! Engine throughput and memory, on one core (`cargo bench --bench engine`).
//!
//! - `single_key`: one run-on-event trigger (`expect: ["user:signup"]`), every event fires.
//! - `installed_10k`: 10,000 installed triggers on distinct names, one of which matches.
//! - `after_expect_1m`: `order.complete` after `order.created` for each customer, over
//!   1,000,000 live buckets (each measured pair consumes one window and reopens it).
//! - `render_parameters`: the single-key trigger with a parameter template per firing.
//! - memory per live bucket (16-byte keys) is printed before the timings, counted by an
//!   allocator wrapper.

#![allow(missing_docs)]
// criterion's macros generate undocumented items
// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use tripwire::engine::state::{NodeExport, TriggerState, STATE_VERSION};
use tripwire::engine::{compile, Engine, EngineConfig, EngineState};
use tripwire::engine::{Bucket, BucketKey};
use tripwire::model::{Event, EventTrigger, JsonPath, Resource, Timestamp, TriggerDefinition};
use uuid::Uuid;

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 10_000;
const LIVE_BUCKETS: usize = 1_000_000;

fn t0() -> Timestamp {
    Timestamp::parse("2026-01-01T00:00:00Z").unwrap()
}

fn engine_with(defs: &[TriggerDefinition]) -> Engine {
    let mut engine = Engine::new(EngineConfig::default());
    for d in defs {
        engine.upsert(compile(d, &JsonPath::root()).unwrap());
    }
    engine
}

fn key(i: usize) -> String {
    format!("cust-{i:011}") // 16 bytes
}

fn events(name: &str, n: usize, offset: u128) -> Vec<Arc<Event>> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(Uuid::from_u128(offset + i as u128), t0(), name, Resource::new(key(i % 1000)));
            e.payload.insert("amount".into(), json!(i));
            Arc::new(e)
        })
        .collect()
}

/// Decides and renders each event (as the service does; the event being processed travels with
/// its firings, so no past event is needed).
fn run_batch(engine: &mut Engine, batch: &[Arc<Event>]) -> usize {
    let past = HashMap::new();
    let mut fired = 0;
    for e in batch {
        let step = engine.on_event(t0(), e.clone());
        fired += engine.render(step, &past).firings.len();
    }
    fired
}

fn single_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(BATCH as u64));
    let single = [TriggerDefinition::new("signup", EventTrigger::new().expect("user:signup"))];
    let batch = events("user:signup", BATCH, 1);
    g.bench_function("single_key", |b| {
        b.iter_batched(
            || engine_with(&single),
            |mut e| {
                assert_eq!(run_batch(&mut e, &batch), BATCH);
                e // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });

    let mut many: Vec<TriggerDefinition> = (0..9_999)
        .map(|i| TriggerDefinition::new(format!("t{i}"), EventTrigger::new().expect(format!("app.event.{i}"))))
        .collect();
    many.push(single[0].clone());
    g.bench_function("installed_10k", |b| {
        b.iter_batched(
            || engine_with(&many),
            |mut e| {
                assert_eq!(run_batch(&mut e, &batch), BATCH);
                e // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });

    let with_params = [TriggerDefinition::new("signup", EventTrigger::new().expect("user:signup"))
        .parameters(json!({"user_id": "{{ event.resource.id }}", "amount": "{{ event.payload.amount }}"}))];
    g.bench_function("render_parameters", |b| {
        b.iter_batched(
            || engine_with(&with_params),
            |mut e| {
                assert_eq!(run_batch(&mut e, &batch), BATCH);
                e // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });
    let with_text = [TriggerDefinition::new("signup", EventTrigger::new().expect("user:signup"))
        .parameters(json!({"message": "user {{ event.resource.id }} paid {{ event.payload.amount }}"}))];
    g.bench_function("render_text", |b| {
        b.iter_batched(
            || engine_with(&with_text),
            |mut e| {
                assert_eq!(run_batch(&mut e, &batch), BATCH);
                e // dropped outside the timing
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn order_trigger() -> TriggerDefinition {
    TriggerDefinition::new(
        "post-order",
        EventTrigger::new()
            .expect("order.complete")
            .after("order.created")
            .for_each("prefect.resource.id")
            .within(Duration::from_secs(3600)),
    )
}

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn after_expect(c: &mut Criterion) {
    let mut engine = engine_with(&[order_trigger()]);
    let at = |i: usize| Timestamp::from_micros(t0().as_micros() + i as i64);
    for i in 0..LIVE_BUCKETS {
        let e = Event::new(Uuid::from_u128(i as u128 + 1), at(i), "order.created", Resource::new(key(i)));
        engine.on_event(at(i), e);
    }
    assert_eq!(engine.bucket_count(), LIVE_BUCKETS);
    let mut next_id = LIVE_BUCKETS as u128 + 1;
    let mut step = LIVE_BUCKETS;
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(2 * BATCH as u64));
    g.bench_function("after_expect_1m", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Pre-parsed pairs for pseudo-random customers: complete (fires, consumes the
                // window), then created (reopens it), so 1,000,000 buckets stay live.
                let pairs: Vec<(Event, Event)> = (0..BATCH)
                    .map(|j| {
                        let k = (j * 7919 + step) % LIVE_BUCKETS;
                        let now = at(step + j);
                        let complete = Event::new(
                            Uuid::from_u128(next_id + 2 * j as u128),
                            now,
                            "order.complete",
                            Resource::new(key(k)),
                        );
                        let created = Event::new(
                            Uuid::from_u128(next_id + 2 * j as u128 + 1),
                            now,
                            "order.created",
                            Resource::new(key(k)),
                        );
                        (complete, created)
                    })
                    .collect();
                next_id += 2 * BATCH as u128;
                let start = Instant::now();
                let mut fired = 0;
                for (j, (complete, created)) in pairs.into_iter().enumerate() {
                    let now = at(step + j);
                    fired += engine.on_event(now, complete).firings.len();
                    engine.on_event(now, created);
                }
                total += start.elapsed();
                step += BATCH;
                assert_eq!(fired, BATCH);
            }
            total
        })
    });
    g.finish();
    assert_eq!(engine.bucket_count(), LIVE_BUCKETS);
}

/// Bytes of heap per live bucket, measured by building 1,000,000 buckets with 16-byte keys
/// through the engine's state restore (so that nothing but buckets is allocated).
fn memory_per_bucket(_: &mut Criterion) {
    let def = order_trigger();
    let compiled = compile(&def, &JsonPath::root()).unwrap();
    let buckets: Vec<(BucketKey, Bucket)> = (0..LIVE_BUCKETS)
        .map(|i| {
            let start = Timestamp::from_micros(t0().as_micros() + i as i64);
            let bucket = Bucket { start, end: start, last_event: Some(Uuid::from_u128(i as u128)), count: 0 };
            (BucketKey::from_values(&[&key(i)]), bucket)
        })
        .collect();
    let state = EngineState {
        version: STATE_VERSION,
        clock: Some(t0()),
        firing_seq: 0,
        triggers: vec![TriggerState {
            id: def.id.clone(),
            fingerprint: compiled.fingerprint.clone(),
            nodes: vec![NodeExport::Event { buckets, next_pass: None }],
        }],
        seen: Vec::new(),
        waiting: Vec::new(),
    };
    let mut engine = Engine::new(EngineConfig::default());
    engine.upsert(compiled);
    let before = ALLOCATED.load(Ordering::Relaxed);
    engine.restore(state); // the state's own vectors are freed inside
    let after = ALLOCATED.load(Ordering::Relaxed);
    assert_eq!(engine.bucket_count(), LIVE_BUCKETS);
    let per_bucket = (after - before) as f64 / LIVE_BUCKETS as f64;
    println!(
        "engine/memory_per_bucket: {per_bucket:.1} bytes per live bucket ({LIVE_BUCKETS} buckets, 16-byte keys, {} bytes of bucket data inline)",
        std::mem::size_of::<(BucketKey, Bucket)>()
    );
    drop(engine);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = memory_per_bucket, single_key, after_expect
}
criterion_main!(benches);
