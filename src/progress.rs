//! Progress is a trait the library calls; the CLI draws it with indicatif on a terminal, and the
//! daemon and tests use the silent implementation.

use std::io::IsTerminal;

pub trait Progress: Send + Sync {
    /// A new phase, with its total in bytes when known.
    fn phase(&self, label: &str, total_bytes: Option<u64>);
    fn bytes(&self, n: u64);
    fn item(&self, name: &str);
    fn done(&self);
}

pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn bytes(&self, _: u64) {}
    fn item(&self, _: &str) {}
    fn done(&self) {}
}

/// An indicatif bar on stderr.
pub struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn phase(&self, label: &str, total: Option<u64>) {
        let style = match total {
            Some(t) => {
                self.0.set_length(t);
                indicatif::ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} {wide_msg}",
                )
            }
            None => indicatif::ProgressStyle::with_template(
                "{prefix:>12} {spinner} {decimal_bytes} {decimal_bytes_per_sec} {wide_msg}",
            ),
        }
        .expect("static template")
        .progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_position(0);
        self.0.set_prefix(label.to_string());
    }
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
    fn item(&self, name: &str) {
        self.0.set_message(name.to_string());
    }
    fn done(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar when stderr is a terminal, silence otherwise (logs, cron, pipes).
pub fn for_terminal() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Box::new(Bar(pb))
    } else {
        Box::new(Silent)
    }
}
