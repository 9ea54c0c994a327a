use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// edgegate: reads a site's sensors, publishes normalized readings on a local MQTT broker, and
/// forwards them upstream through a buffer that survives outages, reboots and power cuts.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGINT or SIGTERM. Log level from RUST_LOG (default: info).
    Run {
        /// The site's YAML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a config file: exit 0 if valid, otherwise print every problem as
    /// FILE:LINE:COL: message and exit 2.
    Check {
        /// The site's YAML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check the machine for this config: device paths, buffer directory, uplink (DNS, TCP, TLS,
    /// MQTT CONNECT), clock sync. One PASS/FAIL line each, with a fix; exit 1 if any failed.
    Doctor {
        /// The site's YAML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Look into the store-and-forward buffer; works while the gateway runs.
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
    },
    /// Look for sensors on the Pi's own buses.
    Sensors {
        #[command(subcommand)]
        command: SensorsCommand,
    },
    /// Hash a password for the local broker: reads it from stdin (without echo on a terminal)
    /// and prints the `USER: HASH` line to put under `broker.auth.users`.
    Passwd {
        /// The MQTT user name.
        user: String,
        /// PBKDF2-SHA256 iterations: more is slower to crack and slower for every CONNECT.
        #[arg(long, default_value_t = edgegate::bus::auth::DEFAULT_ITERATIONS,
              value_parser = clap::value_parser!(u32).range(1..))]
        iterations: u32,
    },
}

#[derive(Subcommand)]
enum SensorsCommand {
    /// List the addresses that answer on an I2C bus, with the models that use them.
    /// Exits 1 if the bus cannot be opened.
    Scan {
        #[arg(long, value_name = "DEVICE", default_value = "/dev/i2c-1")]
        bus: String,
    },
}

#[derive(Subcommand)]
enum BufferCommand {
    /// Messages waiting, their size and the oldest one's age, and what the caps dropped.
    Stats {
        /// The site's YAML config file (for buffer.dir).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Every waiting message as one JSON object per line, oldest first, on stdout.
    Export {
        /// The site's YAML config file (for buffer.dir).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Exit status for an invalid config, as `check` documents.
const EXIT_CONFIG: u8 = 2;

fn load(path: &Path) -> Result<edgegate::site::Config, ExitCode> {
    edgegate::site::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!(
            "{}: {} problem{} found",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

fn passwd(user: &str, iterations: u32) -> ExitCode {
    if user.is_empty() || user.contains(['+', '#', '/', '\0', ':']) {
        eprintln!("user name {user:?}: must be non-empty without `+`, `#`, `/`, `:`");
        return ExitCode::from(EXIT_CONFIG);
    }
    let password = match read_password() {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!("empty password: nothing to hash");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cannot read the password from stdin: {e}");
            return ExitCode::FAILURE;
        }
    };
    match edgegate::bus::auth::PasswordHash::new(&password, iterations) {
        Ok(hash) => {
            println!("{user}: \"{}\"", hash.to_line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot read random bytes for the salt: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line from stdin, echo off while it is typed on a terminal.
fn read_password() -> std::io::Result<String> {
    use std::io::BufRead;
    // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios they fill in.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        (libc::isatty(0) == 1 && libc::tcgetattr(0, &mut t) == 0).then(|| {
            let mut quiet = t;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &quiet);
            eprint!("password: ");
            t
        })
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restores the attributes read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok (site {}, gateway {}, {} devices)",
                    config.display(),
                    cfg.site,
                    cfg.gateway,
                    cfg.devices.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Buffer { command } => buffer(command),
        Command::Passwd { user, iterations } => passwd(&user, iterations),
        Command::Doctor { config } => match load(&config) {
            Ok(cfg) => {
                let checks = edgegate::doctor::run(&config, &cfg);
                if edgegate::doctor::report(&checks, &mut std::io::stdout().lock()) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(code) => code,
        },
        Command::Sensors {
            command: SensorsCommand::Scan { bus },
        } => match edgegate::adapters::i2c::scan::run(&bus) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            edgegate::health::logging::init();
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(on_signal(shutdown.clone()));
                let reloads = edgegate::reload::on_sighup(config.clone());
                match edgegate::app::run_with_reloads(cfg, shutdown, reloads).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

fn buffer(command: BufferCommand) -> ExitCode {
    use edgegate::store::inspect;
    let config = match &command {
        BufferCommand::Stats { config } | BufferCommand::Export { config } => config,
    };
    let cfg = match load(config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let dir = &cfg.buffer.dir;
    let result = match command {
        BufferCommand::Stats { .. } => inspect::stats(dir).map(|s| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            print!("{}", inspect::describe(dir, &s, now));
        }),
        BufferCommand::Export { .. } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            inspect::export(dir, &mut out).map(|n| {
                use std::io::Write;
                let _ = out.flush();
                eprintln!("{n} messages exported");
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("SIGINT received"),
            Err(e) => {
                tracing::error!("cannot watch SIGINT: {e}");
                return;
            }
        },
    }
    shutdown.cancel();
}
