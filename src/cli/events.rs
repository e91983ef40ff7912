//! `tripwire events tail [--follow]`: the newest events on a server, as JSON lines.

use std::collections::{HashSet, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::client::{Client, EventQuery};
use crate::model::Event;

use super::remote::{self, ApiArgs, Failure};

/// Arguments of `tripwire events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print the newest events as JSON lines, oldest first; with --follow, keep printing new
    /// ones as they arrive.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
struct TailArgs {
    /// Only events with exactly this name.
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// Only events whose name starts with this.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Only events about the resource with this `prefect.resource.id`.
    #[arg(long, value_name = "R")]
    resource: Option<String>,
    /// Only events with a related resource of this `prefect.resource.id`.
    #[arg(long, value_name = "R")]
    related: Option<String>,
    /// How many of the newest events to print first (1 to 1000).
    #[arg(long, short = 'n', value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Keep polling the server and print new events as they arrive (stop with Ctrl-C).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Seconds between polls with --follow.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.05..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds from 0.05 to 3600")),
    }
}

/// Events fetched per page while catching up with --follow.
const FOLLOW_PAGE: usize = 200;
/// Pages read per poll at most: with more than this many pages of new events in one interval
/// (10,000 events), the oldest of them are skipped.
const FOLLOW_PAGES_PER_POLL: usize = 50;
/// Ids remembered to recognise events already printed.
const SEEN_CAPACITY: usize = 100_000;

/// Runs `tripwire events ...`.
pub fn run(args: EventsArgs) -> ExitCode {
    remote::run(&args.api, |client| async move {
        match args.command {
            EventsCommand::Tail(tail_args) => tail(&client, tail_args).await,
        }
    })
}

/// The ids printed so far (the newest [`SEEN_CAPACITY`] of them).
#[derive(Default)]
struct Seen {
    order: VecDeque<Uuid>,
    ids: HashSet<Uuid>,
}

impl Seen {
    fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: Uuid) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > SEEN_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

async fn tail(client: &Client, args: TailArgs) -> Result<(), Failure> {
    let mut query = EventQuery {
        name: args.name,
        prefix: args.prefix,
        resource: args.resource,
        related: args.related,
        limit: Some(usize::from(args.limit)),
        ..EventQuery::default()
    };
    let mut seen = Seen::default();
    let first = client.events(&query).await?;
    print_oldest_first(first.events, &mut seen)?;
    if !args.follow {
        return Ok(());
    }
    query.limit = Some(FOLLOW_PAGE);
    let interval = Duration::from_secs_f64(args.interval);
    loop {
        tokio::time::sleep(interval).await;
        // Pages run newest first, so the new events are those before the first one printed
        // already.
        let mut fresh = Vec::new();
        let mut page_query = query.clone();
        'pages: for _ in 0..FOLLOW_PAGES_PER_POLL {
            let page = client.events(&page_query).await?;
            for event in page.events {
                if seen.contains(&event.id) {
                    break 'pages;
                }
                fresh.push(event);
            }
            match page.next_page {
                Some(next) => page_query.page = Some(next),
                None => break,
            }
        }
        print_oldest_first(fresh, &mut seen)?;
    }
}

/// Prints events given newest first in the order they arrived, skipping any printed before.
fn print_oldest_first(newest_first: Vec<Event>, seen: &mut Seen) -> Result<(), Failure> {
    for event in newest_first.into_iter().rev() {
        if seen.contains(&event.id) {
            continue;
        }
        seen.insert(event.id);
        remote::json_line(&event)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_bounded() {
        let mut seen = Seen::default();
        for n in 0..(SEEN_CAPACITY as u128 + 5) {
            seen.insert(Uuid::from_u128(n));
        }
        assert_eq!(seen.ids.len(), SEEN_CAPACITY);
        assert!(!seen.contains(&Uuid::from_u128(0)));
        assert!(seen.contains(&Uuid::from_u128(SEEN_CAPACITY as u128 + 4)));
    }
}
