//! Terminal progress: every bar hangs off one `MultiProgress`, and log lines are written
//! through it ([`LogWriter`]), so a log line is printed above the bars instead of into the
//! middle of a redraw. Off a terminal the bars are hidden and logs go straight to stderr.

use std::io::Write;
use std::sync::LazyLock;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static BARS: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// A bar of `len` steps drawn with `template` (indicatif syntax), shown below the others.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template).expect("valid progress template").progress_chars("=> ");
    BARS.add(ProgressBar::new(len).with_style(style))
}

/// A spinner with elapsed time for work of unknown length (it ticks by itself).
pub fn spinner(message: String) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid progress template");
    let bar = BARS.add(ProgressBar::new_spinner().with_style(style).with_message(message));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Writes to stderr with the bars cleared for the duration; the `tracing` writer.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        BARS.suspend(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
