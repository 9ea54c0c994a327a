//! Reason codes by name: MQTT 5's (one byte in CONNACK, PUBACK, SUBACK, DISCONNECT...), and the
//! return codes of a 3.1.1 CONNACK, which mean other things with the same small numbers.

/// MQTT 5 reason codes (MQTT 5.0 section 2.4); 0x80 and above are failures.
pub mod mqtt5 {
    pub const SUCCESS: u8 = 0x00;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// The first failure code; in a 3.1.1 SUBACK, "failure" itself.
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8b;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8c;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8d;
    pub const SESSION_TAKEN_OVER: u8 = 0x8e;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8f;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
}

/// MQTT 3.1.1 CONNACK return codes (3.1.1 section 3.2.2.3).
pub mod connack {
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x04;
    pub const NOT_AUTHORIZED: u8 = 0x05;
}
