//! Progress of the long commands (`replay`, `triggers apply`, `events tail`): a bar or a
//! spinner on stderr, drawn only when stderr is a terminal. Piped or captured, nothing at all is
//! written, so the output of scripts and tests stays byte for byte what it was; and stdout, the
//! commands' data, is never drawn on.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// How often a spinner turns while the command waits (on a terminal only).
const TICK: Duration = Duration::from_millis(120);

/// A bar or spinner on the terminal, or nothing when stderr is not one. Dropping it clears
/// it, so an early return (an error) leaves no half-drawn bar above the message.
pub struct Progress(ProgressBar);

/// What a bar counts.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// Bytes, shown as KiB/MiB with a rate and the time left.
    Bytes,
    /// Things of the kind named, e.g. `triggers`.
    Items(&'static str),
}

impl Progress {
    /// A bar from 0 to `total` in `unit`, with `label` before it.
    pub fn bar(label: &str, total: u64, unit: Unit) -> Progress {
        Progress::draw(Some(total), &bar_template(label, unit), false)
    }

    /// A spinner with `label` and a count in `unit` (for work of unknown size).
    pub fn spinner(label: &str, unit: Unit) -> Progress {
        Progress::draw(None, &spinner_template(label, unit), true)
    }

    /// Nothing drawn, whatever stderr is (for work too small to show).
    pub fn hidden() -> Progress {
        Progress(ProgressBar::hidden())
    }

    fn draw(total: Option<u64>, template: &str, spins: bool) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        // The templates are this module's own: one that does not parse is a bug, caught by
        // the tests below; the default style is still a working bar.
        let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
            .with_style(style.progress_chars("=> "))
            .with_finish(ProgressFinish::AndClear);
        if spins {
            bar.enable_steady_tick(TICK);
        }
        Progress(bar)
    }

    /// Counts `n` more.
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Shows `message` after the count (e.g. the item being worked on).
    pub fn message(&self, message: impl Into<Cow<'static, str>>) {
        self.0.set_message(message);
    }

    /// Runs `print` with the bar taken off the terminal, then draws it again: for lines
    /// written to stdout or stderr while the bar is shown.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.0.suspend(print)
    }

    /// A reader that counts the bytes read through it.
    pub fn wrap_read<R: std::io::Read>(&self, read: R) -> impl std::io::Read {
        self.0.wrap_read(read)
    }

    /// Clears it from the terminal: the work is done (or failed).
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn bar_template(label: &str, unit: Unit) -> String {
    let counts = match unit {
        Unit::Bytes => "{bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)".to_owned(),
        Unit::Items(things) => format!("{{pos}}/{{len}} {things} {{wide_msg}}"),
    };
    format!("{label} [{{bar:30}}] {counts}")
}

fn spinner_template(label: &str, unit: Unit) -> String {
    let counts = match unit {
        Unit::Bytes => "{bytes} ({bytes_per_sec})".to_owned(),
        Unit::Items(things) => format!("{{pos}} {things} {{wide_msg}}"),
    };
    format!("{{spinner}} {label}: {counts}")
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for unit in [Unit::Bytes, Unit::Items("things")] {
            for template in [bar_template("label", unit), spinner_template("label", unit)] {
                assert!(ProgressStyle::with_template(&template).is_ok(), "{template}");
            }
        }
    }

    #[test]
    fn nothing_is_drawn_off_a_terminal() {
        // Tests run with stderr captured, not on a terminal.
        if std::io::stderr().is_terminal() {
            return;
        }
        let bar = Progress::bar("x", 10, Unit::Items("things"));
        assert!(bar.0.is_hidden());
        bar.inc(3);
        assert_eq!(bar.suspend(|| 7), 7);
        assert!(Progress::spinner("x", Unit::Bytes).0.is_hidden());
    }
}
