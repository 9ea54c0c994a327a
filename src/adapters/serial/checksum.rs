//! Checksums of serial frames.

/// Sum of the bytes, modulo 256 (DFRobot's A02YYUW and many cheap sensors).
pub fn sum8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// XOR of the bytes (NMEA sentences and many binary protocols).
pub fn xor8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, &b| a ^ b)
}

/// CRC-16/MODBUS: polynomial 0xA001 (0x8005 reflected), init 0xFFFF; sent low byte first.
pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples() {
        assert_eq!(sum8(&[0xFF, 0x07, 0xA1]), 0xA7);
        assert_eq!(
            crc16_modbus(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]).to_le_bytes(),
            [0x84, 0x0A]
        );
        assert_eq!(
            crc16_modbus(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]).to_le_bytes(),
            [0xC5, 0xCD]
        );
        assert_eq!(
            crc16_modbus(&[0x01, 0x03, 0x02, 0x04, 0xD2]).to_le_bytes(),
            [0x3A, 0xD9]
        );
        assert_eq!(xor8(b"GPGLL"), b'G' ^ b'P' ^ b'G' ^ b'L' ^ b'L');
    }
}
