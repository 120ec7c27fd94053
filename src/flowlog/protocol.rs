//! The protocol field of flow tuples: NSG letters and VNet IANA numbers, read into IANA
//! protocol numbers (part of the format, so decoding needs nothing from enrichment).

use thiserror::Error;

/// IANA protocol numbers flowlogd refers to by name.
pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;
pub const SCTP: u8 = 132;

/// A tuple's protocol field that is not a protocol flowlogd knows how to read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// NSG flow logs document only `T` (TCP) and `U` (UDP).
    #[error("unknown NSG protocol {0:?} (expected T or U)")]
    UnknownNsgLetter(String),
    /// VNet flow logs carry a decimal IANA number, 0 to 255.
    #[error("invalid IANA protocol number {0:?} (expected 0-255)")]
    InvalidIanaNumber(String),
}

/// Reads the protocol field of an NSG flow tuple (v1 and v2): `T` is TCP (6), `U` is UDP (17).
///
/// Microsoft documents only these two letters (NSG flow logs record TCP and UDP flows only),
/// and Elastic's and Microsoft's readers know no others, so anything else is an error for the
/// caller to count rather than a guess. Exact case: the format has never used lower case.
pub fn nsg_protocol(field: &str) -> Result<u8, ProtocolError> {
    match field.as_bytes() {
        [letter] => nsg_protocol_letter(*letter),
        _ => None,
    }
    .ok_or_else(|| ProtocolError::UnknownNsgLetter(field.to_owned()))
}

/// The protocol an NSG protocol letter names (see [`nsg_protocol`]).
pub fn nsg_protocol_letter(letter: u8) -> Option<u8> {
    match letter {
        b'T' => Some(TCP),
        b'U' => Some(UDP),
        _ => None,
    }
}

/// Reads the protocol field of a VNet flow tuple: a decimal IANA number (`6`, `17`, `1`, …),
/// one to three ASCII digits, at most 255.
pub fn iana_protocol(field: &str) -> Result<u8, ProtocolError> {
    let bytes = field.as_bytes();
    if bytes.is_empty() || bytes.len() > 3 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::InvalidIanaNumber(field.to_owned()));
    }
    // At most three digits, so at most 999: no overflow in u16.
    let value = bytes
        .iter()
        .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'));
    u8::try_from(value).map_err(|_| ProtocolError::InvalidIanaNumber(field.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsg_letters() {
        assert_eq!(nsg_protocol("T"), Ok(TCP));
        assert_eq!(nsg_protocol("U"), Ok(UDP));
        for bad in ["", "t", "u", "I", "X", "TCP", "6", "T "] {
            let err = nsg_protocol(bad).expect_err(bad);
            assert_eq!(err, ProtocolError::UnknownNsgLetter(bad.to_owned()));
        }
        assert_eq!(
            nsg_protocol("I").expect_err("I").to_string(),
            "unknown NSG protocol \"I\" (expected T or U)"
        );
    }

    #[test]
    fn iana_numbers() {
        assert_eq!(iana_protocol("6"), Ok(6));
        assert_eq!(iana_protocol("17"), Ok(17));
        assert_eq!(iana_protocol("0"), Ok(0));
        assert_eq!(iana_protocol("255"), Ok(255));
        assert_eq!(iana_protocol("058"), Ok(58));
        for bad in [
            "", "256", "999", "1000", "0006", "-1", "+6", " 6", "6 ", "T", "1e2", "６",
        ] {
            assert!(iana_protocol(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
