//! The local MQTT 3.1.1 broker.
//!
//! - `codec`: strict packet codec (`check` then `parse`).
//! - `topic`: topic name/filter validation and matching.

pub mod codec;
pub mod topic;
