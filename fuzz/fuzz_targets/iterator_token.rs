//! Shard iterator tokens: any text decodes to `None` unless it is a token we issued, and a
//! token built from the input's fields round-trips exactly; flipping one bit of it makes it
//! invalid (the HMAC covers everything).
#![no_main]

use millrace_fuzz::ITERATOR_SECRET;
use millrace_streams::iterator::IteratorToken;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = IteratorToken::decode(&text, ITERATOR_SECRET);
    let Some((fixed, names)) = data.split_first_chunk::<21>() else {
        return;
    };
    let issued_ms = i64::from_le_bytes(fixed[..8].try_into().unwrap_or_default());
    let offset = u64::from_le_bytes(fixed[8..16].try_into().unwrap_or_default());
    let shard_index = u32::from_le_bytes(fixed[16..20].try_into().unwrap_or_default());
    let split = usize::from(fixed[20]).min(names.len());
    let (id, name) = names.split_at(split);
    let token = IteratorToken {
        stream_name: String::from_utf8_lossy(name).chars().take(128).collect(),
        stream_id: String::from_utf8_lossy(id).chars().take(64).collect(),
        shard_index,
        offset,
        issued_ms,
    };
    let encoded = token.encode(ITERATOR_SECRET);
    assert_eq!(IteratorToken::decode(&encoded, ITERATOR_SECRET), Some(token));
    assert_eq!(IteratorToken::decode(&encoded, b"another secret"), None);
});
