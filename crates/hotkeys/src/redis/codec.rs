//! The byte format of a cached value: plain, or zstd-compressed behind a one-byte tag.
//!
//! Values are written as they come (the JSON of a row) unless they are longer than
//! `redis.compress_over` bytes; then they are stored as the tag byte [`ZSTD_TAG`] followed
//! by one zstd frame, if that is smaller. A reader decodes either.
//!
//! Why `0xFF`: it can never begin a valid UTF-8 text (bytes `0xF5..=0xFF` appear nowhere in
//! UTF-8), so no JSON, text or number another application stores is mistaken for a
//! compressed value. A compressed value is recognised by the tag *and* the zstd frame magic
//! `28 B5 2F FD` after it, so even a binary value of another application that happens to
//! begin with `0xFF` stays plain unless it continues exactly like a zstd frame. Values that
//! do not carry both are returned unchanged: readers accept untagged plain values.

use std::borrow::Cow;

/// First byte of a compressed value.
pub const ZSTD_TAG: u8 = 0xFF;
/// The magic number every zstd frame begins with.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// A stored value that says it is compressed but cannot be decompressed.
#[derive(Debug, thiserror::Error)]
#[error("a value tagged as zstd-compressed does not decompress: {0}")]
pub struct CodecError(#[from] std::io::Error);

/// How values are encoded on the way into Redis; cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Values longer than this are compressed; `None` never compresses.
    pub compress_over: Option<usize>,
    /// zstd level of compressed values.
    pub level: i32,
}

impl Codec {
    /// From `redis.compress_over` (0 turns compression off) and `redis.compress_level`.
    pub fn new(compress_over: usize, level: i32) -> Codec {
        Codec {
            compress_over: (compress_over > 0).then_some(compress_over),
            level,
        }
    }

    /// The bytes to store for `value`: itself, or tag + zstd frame when it is over the
    /// threshold and compressing makes it smaller.
    pub fn encode<'a>(&self, value: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(over) = self.compress_over else {
            return Cow::Borrowed(value);
        };
        if value.len() <= over {
            return Cow::Borrowed(value);
        }
        let mut out = Vec::with_capacity(value.len() / 4 + 16);
        out.push(ZSTD_TAG);
        // Compressing into a Vec cannot fail for I/O reasons; a failure means zstd itself
        // refused (level out of range is clamped by zstd), so store the value plain.
        match zstd::stream::copy_encode(value, &mut out, self.level) {
            Ok(()) if out.len() < value.len() => Cow::Owned(out),
            _ => Cow::Borrowed(value),
        }
    }
}

/// Whether `stored` is a compressed value (tag followed by a zstd frame).
pub fn is_compressed(stored: &[u8]) -> bool {
    stored.len() > ZSTD_MAGIC.len() && stored[0] == ZSTD_TAG && stored[1..5] == ZSTD_MAGIC
}

/// The value behind `stored`: decompressed when it is tagged, unchanged otherwise.
pub fn decode(stored: &[u8]) -> Result<Cow<'_, [u8]>, CodecError> {
    if is_compressed(stored) {
        Ok(Cow::Owned(zstd::stream::decode_all(&stored[1..])?))
    } else {
        Ok(Cow::Borrowed(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn large_json(bytes: usize) -> Vec<u8> {
        let mut v = b"{\"items\":[".to_vec();
        let mut i = 0;
        while v.len() < bytes {
            v.extend_from_slice(format!("{{\"id\":{i},\"name\":\"product {i}\"}},").as_bytes());
            i += 1;
        }
        v.extend_from_slice(b"0]}");
        v
    }

    #[test]
    fn values_up_to_the_threshold_are_stored_unchanged() {
        let codec = Codec::new(16, 3);
        let value = br#"{"id":1,"a":"b"}"#;
        assert_eq!(value.len(), 16);
        assert!(matches!(codec.encode(value), Cow::Borrowed(v) if v == value));
    }

    #[test]
    fn values_over_the_threshold_are_tagged_smaller_and_decode_back() {
        let codec = Codec::new(1024, 3);
        let value = large_json(200_000);
        let stored = codec.encode(&value);
        assert_eq!(stored[0], ZSTD_TAG);
        assert!(is_compressed(&stored));
        assert!(stored.len() < value.len() / 4, "{}", stored.len());
        assert_eq!(decode(&stored).unwrap(), value.as_slice());
    }

    #[test]
    fn incompressible_values_stay_plain() {
        let codec = Codec::new(8, 3);
        let value: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        let stored = codec.encode(&value);
        assert!(
            &*stored == value.as_slice(),
            "random bytes were stored compressed"
        );
    }

    #[test]
    fn zero_threshold_never_compresses() {
        let value = large_json(10_000);
        assert_eq!(&*Codec::new(0, 3).encode(&value), value.as_slice());
    }

    #[test]
    fn plain_values_of_other_applications_decode_unchanged() {
        for plain in [
            &b"{\"id\":1}"[..],
            b"12345",
            b"",
            b"\xff",
            b"\xff\xfe binary",
            // A raw zstd frame without our tag is someone else's binary value.
            &zstd::encode_all(&b"hello"[..], 3).unwrap(),
        ] {
            assert_eq!(decode(plain).unwrap(), plain);
        }
    }

    #[test]
    fn no_utf8_text_can_begin_with_the_tag() {
        assert!(std::str::from_utf8(&[ZSTD_TAG]).is_err());
        assert!(std::str::from_utf8(&[ZSTD_TAG, b'a']).is_err());
    }

    #[test]
    fn a_damaged_compressed_value_is_an_error() {
        let mut stored = vec![ZSTD_TAG];
        stored.extend_from_slice(&ZSTD_MAGIC);
        stored.extend_from_slice(b"garbage");
        assert!(decode(&stored).is_err());
    }
}
