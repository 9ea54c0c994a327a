//! A subscription as the router keeps it and the store writes it.

/// One subscription of a client session: granted QoS and MQTT 5 options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sub {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier; 0 for none.
    pub id: u32,
}

impl Sub {
    /// The options as a v5 SUBSCRIBE spells them (retain handling left out: it only matters
    /// when subscribing); how the store keeps them.
    pub fn options_byte(&self) -> u8 {
        self.qos | u8::from(self.no_local) << 2 | u8::from(self.retain_as_published) << 3
    }

    pub fn from_options(options: u8, id: u32) -> Sub {
        Sub {
            qos: (options & 3).min(2),
            no_local: options & 4 != 0,
            retain_as_published: options & 8 != 0,
            id,
        }
    }
}
