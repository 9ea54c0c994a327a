//! Modbus RTU framing for the master side, without I/O: request bytes out, response bytes in.

use super::super::checksum::crc16_modbus;

/// The four readable Modbus tables, each read by its own function code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Coils,
    DiscreteInputs,
    Holding,
    Input,
}

impl Table {
    pub const NAMES: &'static [&'static str] = &["coil", "discrete", "holding", "input"];

    pub fn from_name(n: &str) -> Option<Table> {
        match n {
            "coil" => Some(Table::Coils),
            "discrete" => Some(Table::DiscreteInputs),
            "holding" => Some(Table::Holding),
            "input" => Some(Table::Input),
            _ => None,
        }
    }

    pub fn function(self) -> u8 {
        match self {
            Table::Coils => 0x01,
            Table::DiscreteInputs => 0x02,
            Table::Holding => 0x03,
            Table::Input => 0x04,
        }
    }

    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coils | Table::DiscreteInputs)
    }

    /// Most items one request may ask for (the PDU's 253-byte limit).
    pub fn max_count(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

/// A read request: `count` items of `table` from `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub slave: u8,
    pub table: Table,
    pub address: u16,
    pub count: u16,
}

impl Request {
    /// The 8-byte RTU frame: slave, function, address, count, CRC (low byte first).
    pub fn encode(&self) -> [u8; 8] {
        let mut f = [0u8; 8];
        f[0] = self.slave;
        f[1] = self.table.function();
        f[2..4].copy_from_slice(&self.address.to_be_bytes());
        f[4..6].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc16_modbus(&f[..6]);
        f[6..8].copy_from_slice(&crc.to_le_bytes());
        f
    }

    fn data_len(&self) -> usize {
        if self.table.is_bits() {
            usize::from(self.count).div_ceil(8)
        } else {
            2 * usize::from(self.count)
        }
    }

    /// Length of a normal response: slave, function, byte count, data, CRC.
    pub fn response_len(&self) -> usize {
        5 + self.data_len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtuError {
    #[error("no response within the timeout")]
    Timeout,
    #[error("{0} bytes then silence: incomplete response")]
    Incomplete(usize),
    #[error("CRC error: received {got:04X}, computed {computed:04X}")]
    Crc { got: u16, computed: u16 },
    #[error("exception {code:#04x} ({})", exception_text(*code))]
    Exception { code: u8 },
    #[error("unexpected response: {0}")]
    Garbled(String),
}

impl RtuError {
    /// The metrics counter this error counts in.
    pub fn kind(&self) -> &'static str {
        match self {
            RtuError::Timeout | RtuError::Incomplete(_) => "timeout",
            RtuError::Crc { .. } | RtuError::Garbled(_) => "crc",
            RtuError::Exception { .. } => "exception",
        }
    }
}

pub fn exception_text(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address: check the register map",
        3 => "illegal data value",
        4 => "slave device failure",
        5 => "acknowledge",
        6 => "slave device busy",
        _ => "unknown",
    }
}

/// Whether `buf` holds the whole response to `req`: `None` while more bytes are due, else the
/// values (registers, or bits as 0/1) or what was wrong.
pub fn check_response(req: &Request, buf: &[u8]) -> Option<Result<Vec<u16>, RtuError>> {
    if buf.len() < 2 {
        return None;
    }
    if buf[0] != req.slave {
        return Some(Err(RtuError::Garbled(format!(
            "reply from address {} to a request to {}",
            buf[0], req.slave
        ))));
    }
    let f = req.table.function();
    let len = if buf[1] == f | 0x80 {
        5
    } else if buf[1] == f {
        req.response_len()
    } else {
        return Some(Err(RtuError::Garbled(format!(
            "function {:#04x} in reply to {f:#04x}",
            buf[1]
        ))));
    };
    if buf.len() < len {
        return None;
    }
    let got = u16::from_le_bytes([buf[len - 2], buf[len - 1]]);
    let computed = crc16_modbus(&buf[..len - 2]);
    if got != computed {
        return Some(Err(RtuError::Crc { got, computed }));
    }
    if buf[1] & 0x80 != 0 {
        return Some(Err(RtuError::Exception { code: buf[2] }));
    }
    if usize::from(buf[2]) != req.data_len() {
        return Some(Err(RtuError::Garbled(format!(
            "byte count {} for {} items",
            buf[2], req.count
        ))));
    }
    let data = &buf[3..len - 2];
    Some(Ok(if req.table.is_bits() {
        (0..usize::from(req.count))
            .map(|i| u16::from(data[i / 8] >> (i % 8) & 1))
            .collect()
    } else {
        data.chunks_exact(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .collect()
    }))
}

/// A slave's side, for simulators and tests: the request in `frame` if it is a whole, valid
/// read request.
pub fn parse_request(frame: &[u8]) -> Option<Request> {
    if frame.len() != 8 || crc16_modbus(&frame[..6]).to_le_bytes() != [frame[6], frame[7]] {
        return None;
    }
    let table = match frame[1] {
        1 => Table::Coils,
        2 => Table::DiscreteInputs,
        3 => Table::Holding,
        4 => Table::Input,
        _ => return None,
    };
    Some(Request {
        slave: frame[0],
        table,
        address: u16::from_be_bytes([frame[2], frame[3]]),
        count: u16::from_be_bytes([frame[4], frame[5]]),
    })
}

/// A slave's response carrying `values` (registers, or bits as 0/1), CRC included.
pub fn encode_response(req: &Request, values: &[u16]) -> Vec<u8> {
    let mut f = vec![req.slave, req.table.function(), req.data_len() as u8];
    if req.table.is_bits() {
        let mut bytes = vec![0u8; req.data_len()];
        for (i, v) in values.iter().enumerate() {
            if *v != 0 {
                bytes[i / 8] |= 1 << (i % 8);
            }
        }
        f.extend(bytes);
    } else {
        for v in values {
            f.extend(v.to_be_bytes());
        }
    }
    let crc = crc16_modbus(&f);
    f.extend(crc.to_le_bytes());
    f
}

/// A slave's exception response.
pub fn encode_exception(req: &Request, code: u8) -> Vec<u8> {
    let mut f = vec![req.slave, req.table.function() | 0x80, code];
    let crc = crc16_modbus(&f);
    f.extend(crc.to_le_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ_ONE: Request = Request {
        slave: 1,
        table: Table::Holding,
        address: 0,
        count: 1,
    };

    #[test]
    fn worked_examples() {
        assert_eq!(
            READ_ONE.encode(),
            [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A]
        );
        let ten = Request {
            count: 10,
            ..READ_ONE
        };
        assert_eq!(
            ten.encode(),
            [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]
        );
        let reply = [0x01, 0x03, 0x02, 0x04, 0xD2, 0x3A, 0xD9];
        assert_eq!(encode_response(&READ_ONE, &[1234]), reply);
        assert_eq!(check_response(&READ_ONE, &reply[..6]), None);
        assert_eq!(check_response(&READ_ONE, &reply), Some(Ok(vec![1234])));
        let mut bad = reply;
        bad[6] ^= 0xFF;
        assert!(matches!(
            check_response(&READ_ONE, &bad),
            Some(Err(RtuError::Crc { .. }))
        ));
        let exc = encode_exception(&READ_ONE, 2);
        assert_eq!(
            check_response(&READ_ONE, &exc),
            Some(Err(RtuError::Exception { code: 2 }))
        );
    }

    #[test]
    fn coils_are_bits_low_first() {
        let req = Request {
            slave: 4,
            table: Table::Coils,
            address: 10,
            count: 10,
        };
        let v = [1, 0, 1, 1, 0, 0, 0, 0, 0, 1];
        let r = encode_response(&req, &v);
        assert_eq!(&r[2..5], &[2, 0b0000_1101, 0b0000_0010]);
        assert_eq!(check_response(&req, &r), Some(Ok(v.to_vec())));
        assert_eq!(parse_request(&req.encode()), Some(req));
    }
}
