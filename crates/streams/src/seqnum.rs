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

/// The decimal sequence number of `parts`.
///
/// Hand-written for speed: PutRecords and GetRecords call this once per record, and the
/// obvious version (format the hex layout, then convert it digit by digit) cost about a fifth
/// of PutRecords' CPU. Here the 188-bit value is assembled from its fields as three 64-bit
/// limbs, cut into three base-10^19 chunks by five 128-by-64-bit divisions, and the chunks
/// are written two digits at a time into a stack buffer: one allocation, for the result.
/// `tests::encode_matches_reference` checks it against the reference layout above.
pub fn encode(parts: SeqParts) -> String {
    let mut buf = [0u8; ENCODED_DIGITS_MAX];
    let text = encode_into(parts, &mut buf);
    text.to_owned()
}

/// The longest decimal a sequence number can have (the value is below 2^188 < 10^57).
pub const ENCODED_DIGITS_MAX: usize = 57;

/// [`encode`] into a caller's buffer, without allocating; returns the digits.
pub fn encode_into(parts: SeqParts, buf: &mut [u8; ENCODED_DIGITS_MAX]) -> &str {
    let [hi, mid, lo] = limbs(parts);
    // 10^19 is the largest power of ten below 2^64, so each chunk fits a u64.
    const CHUNK: u64 = 10_000_000_000_000_000_000;
    let (q, chunk_lo) = div_rem_limbs([hi, mid, lo], CHUNK);
    let (q, chunk_mid) = div_rem_limbs(q, CHUNK);
    // What is left is below 2^188 / 10^38 < 10^19: the top chunk.
    let [_, _, chunk_hi] = q;
    for (chunk, slot) in [chunk_hi, chunk_mid, chunk_lo]
        .into_iter()
        .zip(buf.chunks_exact_mut(19))
    {
        write_19_digits(chunk, slot);
    }
    // Leading zeros go (only the value 0 would keep one digit; it cannot occur, since the
    // version digit is always set, but the reference handled it the same way).
    let start = buf
        .iter()
        .position(|&b| b != b'0')
        .unwrap_or(ENCODED_DIGITS_MAX - 1);
    let digits = buf.get(start..).unwrap_or_default();
    // Only ASCII digits were written.
    std::str::from_utf8(digits).unwrap_or_default()
}

/// The 188-bit value of the layout in the module docs, most significant limb first.
fn limbs(parts: SeqParts) -> [u64; 3] {
    let epoch = parts.shard_epoch_secs.min(EPOCH_SECS_MAX);
    let offset = parts.offset.min(OFFSET_MAX);
    let arrival = parts.arrival_secs.min(EPOCH_SECS_MAX);
    let index = u64::from(parts.shard_index);
    // Bit positions from the least significant end: version at 0, shard index at 4,
    // arrival at 36, two reserved hex digits at 72, offset at 80, low nibble of the shard
    // index at 144, epoch at 148, version again at 184.
    let lo = 2 | (index << 4) | (arrival << 36);
    let mid = (arrival >> 28) | (offset << 16);
    let hi = (offset >> 48) | ((index & 0xf) << 16) | (epoch << 20) | (2 << 56);
    [hi, mid, lo]
}

/// Divides a 192-bit number (most significant limb first) by `divisor`; returns the quotient
/// and the remainder.
fn div_rem_limbs(limbs: [u64; 3], divisor: u64) -> ([u64; 3], u64) {
    let mut quotient = [0u64; 3];
    let mut rem = 0u64;
    for (limb, q) in limbs.iter().zip(quotient.iter_mut()) {
        let cur = (u128::from(rem) << 64) | u128::from(*limb);
        // rem < divisor, so the quotient of this step fits 64 bits.
        *q = (cur / u128::from(divisor)) as u64;
        rem = (cur % u128::from(divisor)) as u64;
    }
    (quotient, rem)
}

/// Writes `value` (below 10^19) as exactly 19 digits, zero-padded, two digits per step.
fn write_19_digits(mut value: u64, out: &mut [u8]) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut end = out.len();
    while end >= 2 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        if let (Some(slot), Some(digits)) = (out.get_mut(end - 2..end), PAIRS.get(pair..pair + 2)) {
            slot.copy_from_slice(digits);
        }
        end -= 2;
    }
    if let Some(first) = out.first_mut().filter(|_| end == 1) {
        *first = b'0' + (value % 10) as u8;
    }
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
#[cfg(test)]
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
    use proptest::prelude::*;

    /// The original encoder, kept as the reference the fast one must match: format the hex
    /// layout of the module docs, then convert it to decimal through 32-bit limbs.
    fn encode_reference(parts: SeqParts) -> String {
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

    #[test]
    fn encode_matches_reference_at_the_edges() {
        let edges = [
            0,
            1,
            9,
            10,
            99,
            1 << 35,
            EPOCH_SECS_MAX,
            EPOCH_SECS_MAX + 1,
            u64::MAX,
        ];
        let offsets = [0, 1, 99, 1 << 48, (1 << 48) - 1, OFFSET_MAX, u64::MAX];
        let indexes = [0, 1, 15, 16, 4095, u32::MAX];
        for &epoch in &edges {
            for &offset in &offsets {
                for &shard_index in &indexes {
                    for &arrival in &edges {
                        let parts = SeqParts {
                            shard_epoch_secs: epoch,
                            shard_index,
                            offset,
                            arrival_secs: arrival,
                        };
                        assert_eq!(encode(parts), encode_reference(parts), "{parts:?}");
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn encode_matches_reference(
            epoch in any::<u64>(),
            shard_index in any::<u32>(),
            offset in any::<u64>(),
            arrival in any::<u64>(),
            small in any::<bool>(),
        ) {
            // Half the cases in the ranges real numbers use.
            let parts = if small {
                SeqParts {
                    shard_epoch_secs: epoch % (EPOCH_SECS_MAX + 1),
                    shard_index: shard_index % 10_000,
                    offset: offset % (1 << 40),
                    arrival_secs: arrival % (EPOCH_SECS_MAX + 1),
                }
            } else {
                SeqParts { shard_epoch_secs: epoch, shard_index, offset, arrival_secs: arrival }
            };
            let fast = encode(parts);
            prop_assert_eq!(&fast, &encode_reference(parts));
            if parts.offset <= OFFSET_MAX && parts.shard_epoch_secs <= EPOCH_SECS_MAX
                && parts.arrival_secs <= EPOCH_SECS_MAX
            {
                prop_assert_eq!(decode(&fast), Some(parts));
            }
        }
    }

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
