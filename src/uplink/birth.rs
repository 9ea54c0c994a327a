//! The retained gateway status upstream, as JSON: the birth says which run this is, so a
//! consumer can tell a restart (the sequence numbers jump to the birth's `seq`) from a loss (a
//! gap within one run).

use serde::Serialize;

/// What a run announces with every birth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Birth {
    /// The first sequence number of this run: every reading of it has one at least this large,
    /// and every reading of earlier runs a smaller one.
    pub seq: u64,
    /// SHA-256 of the config file's text, first 16 hex digits.
    pub config: String,
    /// When this run started, UTC (RFC 3339, seconds).
    pub since: String,
}

#[derive(Serialize)]
struct Status<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a str>,
}

impl Birth {
    pub fn new(seq: u64, config: &str) -> Birth {
        Birth {
            seq,
            config: config.to_owned(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// `online` or `degraded`, with the run's facts.
    pub fn payload(&self, status: &str) -> String {
        json(&Status {
            status,
            version: Some(env!("CARGO_PKG_VERSION")),
            config: Some(&self.config),
            seq: Some(self.seq),
            since: Some(&self.since),
        })
    }
}

/// The will's and a clean stop's payload: `{"status":"offline"}`.
pub fn offline() -> String {
    json(&Status {
        status: super::OFFLINE,
        version: None,
        config: None,
        seq: None,
        since: None,
    })
}

fn json(s: &Status<'_>) -> String {
    // Strings and integers only: serialising cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{{\"status\":\"{}\"}}", s.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_birth_names_the_run_and_offline_is_the_status_alone() {
        let b = Birth {
            seq: 65537,
            config: "0123456789abcdef".into(),
            since: "2026-12-04T01:00:00Z".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&b.payload("online")).unwrap();
        assert_eq!(v["status"], "online");
        assert_eq!(v["seq"], 65537);
        assert_eq!(v["config"], "0123456789abcdef");
        assert_eq!(v["since"], "2026-12-04T01:00:00Z");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(offline(), r#"{"status":"offline"}"#);
    }
}
