//! The config toolkit every stage writes its section's decoder with. It imports nothing else
//! of the crate (a check in the test command holds it to that): the site file that puts the
//! sections together is the `site` module.
//!
//! - [`yaml`]: YAML text -> node tree with a line and column on every node and key
//! - [`decode`]: the map reader that section decoders are written with, collecting located errors
//! - [`units`]: `200ms` / `1h30m` durations and `512KiB` sizes
//! - [`template`]: ids and `{placeholder}` templates

pub mod decode;
pub mod template;
pub mod units;
pub mod yaml;

pub use template::expand;
pub use units::{parse_duration, parse_size};

use std::fmt;

/// One problem in a config file, located at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}
