//! Starting the core: the engine rebuilt from what is stored (definitions and filters in
//! their order, then the state the last committed batch left), or, once, from a schema
//! version 1 directory's snapshot and log.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::engine::{Engine, EngineConfig};
use crate::model::Event;
use crate::store::{LegacyState, LogEntry, Store, StoreError};

use super::super::metrics::Metrics;
use super::super::rate_limits::RateLimiter;
use super::super::runs::RunQueue;
use super::super::{ServiceConfig, ServiceError};
use super::filters::install_filter;
use super::triggers::install;
use super::{render_step, Core, ENGINE_SEEN_WINDOW};

fn engine_config() -> EngineConfig {
    EngineConfig { seen_window: Some(ENGINE_SEEN_WINDOW), track_changes: true, ..EngineConfig::default() }
}

/// Installs the stored definitions and filters in the order they were installed in (which
/// orders firings within a step, and so their ids), then loads the stored state.
fn restore(store: &Store, engine: &mut Engine) -> Result<(), StoreError> {
    let (order, state) = store.engine_state()?.unwrap_or_default();
    let definitions = in_order(store.triggers()?.into_iter().map(|r| r.definition), &order.triggers, |d| d.id.clone());
    for d in &definitions {
        install(engine, d);
    }
    for f in in_order(store.filters()?, &order.filters, |f| f.id) {
        install_filter(engine, f);
    }
    engine.restore(state);
    Ok(())
}

/// `items` in the stored `order` of their keys; any the order does not name (none, unless it
/// was lost) come after, by key.
fn in_order<T, K: std::hash::Hash + Ord + Clone>(
    items: impl IntoIterator<Item = T>,
    order: &[K],
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut by_key: HashMap<K, T> = items.into_iter().map(|t| (key(&t), t)).collect();
    let mut out: Vec<T> = order.iter().filter_map(|k| by_key.remove(k)).collect();
    let mut rest: Vec<(K, T)> = by_key.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(rest.into_iter().map(|(_, t)| t));
    out
}

/// Rebuilds the engine from a schema version 1 directory: the latest snapshot, then every
/// log entry after it. Firings that replaying produces were committed with their entries
/// already, so they are dropped.
fn replay_legacy(store: &Store, engine: &mut Engine, legacy: LegacyState) -> Result<(), StoreError> {
    if let Some(snapshot) = legacy.snapshot {
        for d in &snapshot.definitions {
            install(engine, d);
        }
        for f in snapshot.filters {
            install_filter(engine, f);
        }
        engine.restore(snapshot.state);
    }
    // Firings were stored when they were first made; rendering again only disables the
    // definitions whose rendering panicked then.
    let render = |engine: &mut Engine, step| render_step(engine, step, |id| store.event(id)).map(drop);
    for entry in legacy.entries {
        match entry {
            LogEntry::Event { seq, at } => match store.event_by_seq(seq)? {
                Some(event) => {
                    let step = engine.on_event(at, event);
                    render(engine, step)?;
                }
                None => tracing::warn!(seq, "logged event was pruned before it was snapshotted"),
            },
            LogEntry::Tick { at } => {
                let step = engine.on_tick(at);
                render(engine, step)?;
            }
            LogEntry::PutTrigger { definition, at } => {
                let step = engine.on_tick(at);
                render(engine, step)?;
                install(engine, &definition);
            }
            LogEntry::DeleteTrigger { id, at } => {
                let step = engine.on_tick(at);
                render(engine, step)?;
                engine.remove(&id);
            }
            LogEntry::PutFilter { filter, at } => {
                let step = engine.on_tick(at);
                render(engine, step)?;
                install_filter(engine, filter);
            }
            LogEntry::DeleteFilter { id, at } => {
                let step = engine.on_tick(at);
                render(engine, step)?;
                engine.remove_scope_filter(&id);
            }
        }
    }
    Ok(())
}

impl Core {
    /// Rebuilds the engine from what is stored: the definitions and filters, installed in
    /// their order, and the state the last committed batch left. A data directory of schema
    /// version 1 is rebuilt from its snapshot and log instead, and rewritten.
    pub(in crate::service) fn recover(
        store: Arc<Store>,
        config: ServiceConfig,
        events: broadcast::Sender<Arc<Event>>,
        runs_changed: Arc<watch::Sender<u64>>,
        metrics: Arc<Metrics>,
    ) -> Result<Core, ServiceError> {
        let mut engine = Engine::new(engine_config());
        match store.legacy_recovery()? {
            Some(legacy) => {
                let replayed = legacy.entries.len();
                replay_legacy(&store, &mut engine, legacy)?;
                engine.mark_all_changed();
                let tx = store.begin()?;
                tx.write_state(&engine.take_changes())?;
                tx.finish_migration()?;
                tx.commit()?;
                tracing::info!(
                    replayed,
                    "data of schema version 1 rewritten: the engine state is stored as it changes"
                );
            }
            None => restore(&store, &mut engine)?,
        }
        let limiter = RateLimiter::new(store.rate_limits()?, store.rate_windows()?);
        let runs = RunQueue::new(store.deployments()?, store.active_runs()?, limiter);
        tracing::info!(buckets = engine.bucket_count(), active_runs = runs.active_count(), "engine state restored");
        Ok(Core {
            store,
            engine,
            config,
            events,
            last_prune: None,
            runs,
            outbox: VecDeque::new(),
            runs_changed,
            runs_touched: false,
            metrics,
            notes: Vec::new(),
            gauged: HashSet::new(),
            last_gauged: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::in_order;

    #[test]
    fn restored_items_keep_the_stored_order_and_the_rest_come_after_by_key() {
        let items = vec![("d", 4), ("a", 1), ("c", 3), ("b", 2)];
        let order = ["c", "gone", "a"];
        assert_eq!(in_order(items, &order, |(k, _)| *k), [("c", 3), ("a", 1), ("b", 2), ("d", 4)]);
    }
}
