//! Logs go to the journal when systemd connected our stderr to it, otherwise to stderr.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// True when stderr is the journal stream systemd set up (`JOURNAL_STREAM` = `DEV:INODE` of it),
/// as systemd.exec(5) recommends checking; a child that merely inherited the variable is not.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let fd = std::os::fd::AsFd::as_fd(&std::io::stderr())
        .try_clone_to_owned()
        .map(std::fs::File::from);
    match fd.and_then(|f| f.metadata()) {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// The filter `RUST_LOG` asks for: a level (`debug`) and/or `target=level` directives
/// (`info,edgegate::bus=debug`); `info` when unset. Not the span and field filters of
/// tracing's `EnvFilter`, whose regex engine would be most of what logging adds to the binary.
fn filter(rust_log: Option<&str>) -> Result<Targets, String> {
    match rust_log.map(str::trim) {
        None | Some("") => Ok(info()),
        Some(text) => text.parse::<Targets>().map_err(|e| {
            format!("RUST_LOG={text:?} is not `LEVEL` or `TARGET=LEVEL,...` ({e}); logging at info")
        }),
    }
}

fn info() -> Targets {
    Targets::new().with_default(LevelFilter::INFO)
}

/// Level from `RUST_LOG` (default `info`).
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(rust_log.as_deref()).unwrap_or_else(|e| {
        eprintln!("{e}");
        info()
    });
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journald.with_syslog_identifier("edgegate".into()))
                    .init();
                return;
            }
            Err(e) => eprintln!("cannot log to the journal ({e}); logging to stderr"),
        }
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_levels_and_targets() {
        let f = filter(None).unwrap();
        assert!(f.would_enable("edgegate::bus", &Level::INFO));
        assert!(!f.would_enable("edgegate::bus", &Level::DEBUG));
        let f = filter(Some("warn,edgegate::bus=debug")).unwrap();
        assert!(f.would_enable("edgegate::bus::server", &Level::DEBUG));
        assert!(!f.would_enable("edgegate::uplink", &Level::INFO));
        assert!(f.would_enable("edgegate::uplink", &Level::WARN));
        let e = filter(Some("edgegate=loud")).unwrap_err();
        assert!(
            e.contains("RUST_LOG=\"edgegate=loud\"") && e.contains("info"),
            "{e}"
        );
    }
}
