//! `tripwire events tail [--follow] [--json]`: the newest events on a server, one readable line
//! each (or the events as JSON lines).
//!
//! A readable line is `TIME  NAME  resource=ID  [related=ROLE:ID,...]  [PAYLOAD]`, fields apart
//! by two spaces: the time `occurred` in UTC to the millisecond (fixed width), the event's name,
//! its resource's `prefect.resource.id`, the related resources' roles and ids (the first
//! [`RELATED_SHOWN`], then `+N`) when it has any, and the payload as compact JSON clipped to
//! [`PAYLOAD_WIDTH`] characters (ending in `…`) when it is not empty. Control characters in names
//! and ids are escaped, so an event is always one line.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use chrono::SecondsFormat;
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::client::{Client, EventQuery};
use crate::model::Event;

use super::progress::{Progress, Unit};
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
    /// Print the newest events, oldest first, one readable line each (`TIME  NAME  resource=ID
    /// [related=ROLE:ID,...]  PAYLOAD`; --json for the events as JSON lines); with --follow, keep
    /// printing new ones as they arrive.
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
    /// Print each event as it is, one compact JSON object per line, instead of a readable line.
    #[arg(long)]
    json: bool,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.05..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds from 0.05 to 3600")),
    }
}

/// Events fetched per page while catching up with --follow.
const FOLLOW_PAGE: usize = 200;
/// Pages read at once at most: for the first events, and for one poll with --follow (with more
/// than this many pages of new events in one interval, 10,000 events, the oldest are skipped).
const PAGES_AT_ONCE: usize = 50;
/// Ids remembered to recognise events already printed.
const SEEN_CAPACITY: usize = 100_000;
/// The characters of a payload shown on a readable line at most.
pub const PAYLOAD_WIDTH: usize = 120;
/// The related resources shown on a readable line at most (the rest are counted).
pub const RELATED_SHOWN: usize = 3;

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
    let print = if args.json { Print::Json } else { Print::Readable };
    let mut seen = Seen::default();
    print.oldest_first(backfill(client, &query, usize::from(args.limit)).await?, &mut seen)?;
    if !args.follow {
        return Ok(());
    }
    query.limit = Some(FOLLOW_PAGE);
    let interval = Duration::from_secs_f64(args.interval);
    loop {
        tokio::time::sleep(interval).await;
        // Pages run newest first, so the new events are those before the first one printed
        // already. A burst of more than a page is counted on a spinner while it is read.
        let mut fresh = Vec::new();
        let mut page_query = query.clone();
        let mut catching_up = Progress::hidden();
        'pages: for page_number in 0..PAGES_AT_ONCE {
            if page_number == 1 {
                catching_up = Progress::spinner("catching up", Unit::Items("new events"));
                catching_up.inc(fresh.len() as u64);
            }
            let page = client.events(&page_query).await?;
            for event in page.events {
                if seen.contains(&event.id) {
                    break 'pages;
                }
                fresh.push(event);
                catching_up.inc(1);
            }
            match page.next_page {
                Some(next) => page_query.page = Some(next),
                None => break,
            }
        }
        catching_up.finish();
        print.oldest_first(fresh, &mut seen)?;
    }
}

/// The newest `limit` events of `query`, newest first. A page can come back short (the server
/// scans a bounded number of stored events for one), so pages are read on, at most
/// [`PAGES_AT_ONCE`] of them, until there are `limit` or there are no older ones.
async fn backfill(client: &Client, query: &EventQuery, limit: usize) -> Result<Vec<Event>, Failure> {
    let progress = Progress::spinner("reading the newest events", Unit::Items("events"));
    let mut events = Vec::new();
    let mut page_query = query.clone();
    for _ in 0..PAGES_AT_ONCE {
        page_query.limit = Some(limit - events.len());
        let page = client.events(&page_query).await?;
        progress.inc(page.events.len() as u64);
        events.extend(page.events);
        match page.next_page {
            Some(next) if events.len() < limit => page_query.page = Some(next),
            _ => break,
        }
    }
    Ok(events)
}

/// How `events tail` prints an event.
#[derive(Clone, Copy)]
enum Print {
    /// One readable line ([`readable`]).
    Readable,
    /// The event as one compact JSON line.
    Json,
}

impl Print {
    /// Prints events given newest first in the order they arrived, skipping any printed before.
    fn oldest_first(self, newest_first: Vec<Event>, seen: &mut Seen) -> Result<(), Failure> {
        for event in newest_first.into_iter().rev() {
            if seen.contains(&event.id) {
                continue;
            }
            seen.insert(event.id);
            match self {
                Print::Readable => remote::line(&readable(&event))?,
                Print::Json => remote::json_line(&event)?,
            }
        }
        Ok(())
    }
}

/// An event as one line for a person: `TIME  NAME  resource=ID  [related=ROLE:ID,...]  [PAYLOAD]`
/// (see the module's documentation).
pub fn readable(event: &Event) -> String {
    let time = event.occurred.to_datetime().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut line = format!("{time}  {}  resource={}", one_line(&event.event), one_line(event.resource.id()));
    if !event.related.is_empty() {
        line.push_str("  related=");
        for (i, related) in event.related.iter().take(RELATED_SHOWN).enumerate() {
            if i > 0 {
                line.push(',');
            }
            if let Some(role) = related.role() {
                let _ = write!(line, "{}:", one_line(role));
            }
            line.push_str(&one_line(related.id()));
        }
        if event.related.len() > RELATED_SHOWN {
            let _ = write!(line, ",+{}", event.related.len() - RELATED_SHOWN);
        }
    }
    if !event.payload.is_empty() {
        // A map of JSON values always serializes; its strings are escaped, so it is one line.
        let payload = serde_json::to_string(&event.payload).unwrap_or_default();
        line.push_str("  ");
        line.push_str(&clip(&payload, PAYLOAD_WIDTH));
    }
    line
}

/// `text` with control characters (a newline, a terminal escape) written as escapes.
fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
    )
}

/// `text` cut to at most `width` characters, the last of them `…` when it was cut.
fn clip(text: &str, width: usize) -> Cow<'_, str> {
    match text.char_indices().nth(width) {
        None => Cow::Borrowed(text),
        Some(_) => {
            let keep = text.char_indices().nth(width.saturating_sub(1)).map_or(text.len(), |(at, _)| at);
            Cow::Owned(format!("{}…", &text[..keep]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::RESOURCE_ROLE;
    use crate::model::Resource;

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

    fn event(name: &str, id: &str) -> Event {
        let at = crate::model::Timestamp::parse("2026-11-30T12:00:00.123456Z").unwrap();
        Event::new(Uuid::from_u128(1), at, name, Resource::new(id))
    }

    #[test]
    fn a_readable_line_has_the_time_name_resource_and_payload() {
        let mut e = event("order.created", "123");
        assert_eq!(readable(&e), "2026-11-30T12:00:00.123Z  order.created  resource=123");
        e.payload.insert("amount".into(), serde_json::json!(5));
        e.related.push(Resource::new("c-9").with(RESOURCE_ROLE, "customer"));
        assert_eq!(
            readable(&e),
            r#"2026-11-30T12:00:00.123Z  order.created  resource=123  related=customer:c-9  {"amount":5}"#
        );
        // Whole seconds keep the width: the times line up.
        e.occurred = crate::model::Timestamp::parse("2026-11-30T12:00:00Z").unwrap();
        assert!(readable(&e).starts_with("2026-11-30T12:00:00.000Z  "));
    }

    #[test]
    fn many_related_resources_are_counted() {
        let mut e = event("a", "r");
        for n in 0..5 {
            e.related.push(Resource::new(format!("id{n}")).with(RESOURCE_ROLE, "role"));
        }
        assert!(readable(&e).ends_with("  related=role:id0,role:id1,role:id2,+2"), "{}", readable(&e));
    }

    #[test]
    fn a_long_payload_is_clipped_and_an_event_is_one_line() {
        let mut e = event("line\nbreak", "id\u{1b}[31m");
        e.payload.insert("text".into(), serde_json::json!("é".repeat(500)));
        let line = readable(&e);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(line.contains("  line\\nbreak  resource=id\\u{1b}[31m  "), "{line}");
        let payload = line.rsplit("  ").next().unwrap();
        assert_eq!(payload.chars().count(), PAYLOAD_WIDTH);
        assert!(payload.starts_with(r#"{"text":"éé"#) && payload.ends_with("é…"), "{payload}");
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
    }
}
