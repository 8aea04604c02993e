//! Sequence numbers in the layout AWS uses today ("version 2"), so that clients which look
//! inside them (the KCL's `SequenceNumberValidator` reads the version and the shard index)
//! see what they see on AWS.
//!
//! A sequence number is a 186-bit integer written in decimal (56 digits). In hexadecimal
//! (47 digits), most significant first:
//!
//! ```text
//! 2                 version (bits 184..187)
//! TTTTTTTTT         shard epoch seconds: when the shard was created, or when its current
//!                   owner took it over (room for the ownership epoch of a later cluster)
//! s                 low nibble of the shard index (as AWS)
//! OOOOOOOOOOOOOOOO  offset of the record in the shard's log (top bit always 0)
//! 00                reserved
//! AAAAAAAAA         arrival time of the record, seconds
//! SSSSSSSS          shard index (bits 4..35, where the KCL reads it)
//! 2                 version again
//! ```
//!
//! Within a shard the epoch and index are fixed and the offset grows, so numbers strictly
//! increase. A child shard's epoch is later than its parents' (the splitter makes sure of
//! it), so every child number is above every parent number.

/// The parts of a sequence number this crate cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqParts {
    pub shard_epoch_secs: u64,
    pub shard_index: u32,
    pub offset: u64,
    pub arrival_secs: u64,
}

/// The offset used for the ending sequence number of a closed shard (as AWS: the largest
/// offset a shard could ever hold).
pub const OFFSET_MAX: u64 = 0x7fff_ffff_ffff_ffff;

const EPOCH_SECS_MAX: u64 = (1 << 36) - 1;

pub fn encode(parts: SeqParts) -> String {
    let hex = format!(
        "2{:09x}{:x}{:016x}00{:09x}{:08x}2",
        parts.shard_epoch_secs.min(EPOCH_SECS_MAX),
        parts.shard_index & 0xf,
        parts.offset.min(OFFSET_MAX),
        parts.arrival_secs.min(EPOCH_SECS_MAX),
        parts.shard_index,
    );
    hex_to_decimal(&hex)
}

/// Decodes a sequence number. `None` when it is not one of ours (wrong size or version).
pub fn decode(decimal: &str) -> Option<SeqParts> {
    let hex = decimal_to_hex(decimal)?;
    if hex.len() != 47 || !hex.starts_with('2') || !hex.ends_with('2') {
        return None;
    }
    let field = |range: std::ops::Range<usize>| {
        hex.get(range)
            .and_then(|text| u64::from_str_radix(text, 16).ok())
    };
    let shard_epoch_secs = field(1..10)?;
    let offset = field(11..27)?;
    let arrival_secs = field(29..38)?;
    let shard_index = u32::try_from(field(38..46)?).ok()?;
    if offset > OFFSET_MAX {
        return None;
    }
    Some(SeqParts {
        shard_epoch_secs,
        shard_index,
        offset,
        arrival_secs,
    })
}

// 192-bit unsigned arithmetic on little-endian u32 limbs: just enough to convert between
// the decimal the API uses and the hexadecimal layout above. Written by hand because it is
// twenty lines and a bignum crate would be the largest dependency of this crate.
const LIMBS: usize = 7;

fn hex_to_decimal(hex: &str) -> String {
    let mut limbs = [0u32; LIMBS];
    for c in hex.chars() {
        let digit = c.to_digit(16).unwrap_or(0);
        mul_add(&mut limbs, 16, digit);
    }
    let mut digits = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let rem = div_small(&mut limbs, 1_000_000_000);
        digits.push(rem);
    }
    let mut out = String::new();
    for (i, chunk) in digits.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&chunk.to_string());
        } else {
            out.push_str(&format!("{chunk:09}"));
        }
    }
    if out.is_empty() {
        out.push('0');
    }
    out
}

fn decimal_to_hex(decimal: &str) -> Option<String> {
    if decimal.is_empty() || decimal.len() > 60 || !decimal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut limbs = [0u32; LIMBS];
    for c in decimal.chars() {
        let digit = c.to_digit(10)?;
        if mul_add(&mut limbs, 10, digit) {
            return None;
        }
    }
    let mut out = String::new();
    let mut started = false;
    for limb in limbs.iter().rev() {
        if started {
            out.push_str(&format!("{limb:08x}"));
        } else if *limb != 0 {
            out.push_str(&format!("{limb:x}"));
            started = true;
        }
    }
    Some(out)
}

/// limbs = limbs * factor + addend; returns true on overflow.
fn mul_add(limbs: &mut [u32; LIMBS], factor: u32, addend: u32) -> bool {
    let mut carry = u64::from(addend);
    for limb in limbs.iter_mut() {
        let v = u64::from(*limb) * u64::from(factor) + carry;
        *limb = v as u32;
        carry = v >> 32;
    }
    carry != 0
}

/// limbs = limbs / divisor; returns the remainder.
fn div_small(limbs: &mut [u32; LIMBS], divisor: u32) -> u32 {
    let mut rem = 0u64;
    for limb in limbs.iter_mut().rev() {
        let v = (rem << 32) | u64::from(*limb);
        *limb = (v / u64::from(divisor)) as u32;
        rem = v % u64::from(divisor);
    }
    rem as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(epoch: u64, index: u32, offset: u64) -> SeqParts {
        SeqParts {
            shard_epoch_secs: epoch,
            shard_index: index,
            offset,
            arrival_secs: epoch + offset,
        }
    }

    #[test]
    fn round_trip_and_length() {
        let p = parts(1_700_000_000, 7, 42);
        let s = encode(p);
        assert_eq!(s.len(), 56, "{s}");
        assert_eq!(decode(&s), Some(p));
        let end = encode(parts(1_700_000_000, 4095, OFFSET_MAX));
        assert_eq!(end.len(), 56);
        assert_eq!(decode(&end).map(|p| p.offset), Some(OFFSET_MAX));
    }

    #[test]
    fn kcl_reads_version_and_shard() {
        // The KCL checks bit length 186, version (bits 184..187) == 2 and reads the shard
        // index from bits 4..35. Check the same through the hex form.
        let s = encode(parts(1_700_000_000, 123_456, 9));
        let hex = decimal_to_hex(&s).unwrap_or_default();
        assert_eq!(hex.len(), 47);
        let shard = u32::from_str_radix(&hex[38..46], 16).unwrap_or(0);
        assert_eq!(shard, 123_456);
        assert!(hex.starts_with('2'));
    }

    #[test]
    fn ordering() {
        let as_num = |s: &str| decimal_to_hex(s).map(|h| (h.len(), h));
        let a = encode(parts(100, 0, 5));
        let b = encode(parts(100, 0, 6));
        let child = encode(parts(101, 1, 0));
        assert!(as_num(&a) < as_num(&b));
        assert!(as_num(&b) < as_num(&child));
        // Arrival time never outranks the offset.
        let late = encode(SeqParts {
            arrival_secs: 999_999,
            ..parts(100, 0, 5)
        });
        assert!(as_num(&late) < as_num(&b));
    }

    #[test]
    fn rejects_foreign_numbers() {
        assert_eq!(decode("0"), None);
        assert_eq!(decode("12345"), None);
        assert_eq!(decode(""), None);
        assert_eq!(decode(&"9".repeat(56)), None);
        assert_eq!(decode(&"9".repeat(129)), None);
    }
}
