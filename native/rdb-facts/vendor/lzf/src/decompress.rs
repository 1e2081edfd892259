//! LZF decompression, rewritten from the published crate's for speed.
//!
//! Why: the `rdb` crate decompresses every LZF string of a snapshot through this function,
//! and lzf 1.0.0 copied each back-reference one bounds-checked byte at a time. Redis
//! compresses repetitive values (padding, repeated JSON keys) into many long back-references,
//! so that loop was a quarter of `redis-load`'s CPU (perf, 100 k DEBUG POPULATE keys). Here a
//! back-reference is one `extend_from_within` when it does not overlap what it writes, else a
//! few growing ones (an overlapping reference repeats its last `distance` bytes, so whole
//! periods can be copied at once). The crate is deprecated upstream and nothing maintained
//! replaces it under `rdb`, hence the vendored copy. Same inputs, same outputs, same errors.

use super::{LzfError, LzfResult};

/// Decompress `data` into at most `out_len_should` bytes: the bytes (their real length may be
/// less); BufferTooSmall if they would not fit, DataCorrupted if `data` is not valid LZF.
pub fn decompress(data: &[u8], out_len_should: usize) -> LzfResult<Vec<u8>> {
    if data.is_empty() {
        return Err(LzfError::DataCorrupted);
    }
    let mut out: Vec<u8> = Vec::with_capacity(out_len_should);
    let mut at = 0;
    while at < data.len() {
        let ctrl = data[at] as usize;
        at += 1;
        if ctrl < 1 << 5 {
            // a literal run of ctrl + 1 bytes
            let len = ctrl + 1;
            if out.len() + len > out_len_should {
                return Err(LzfError::BufferTooSmall);
            }
            let literal = data.get(at..at + len).ok_or(LzfError::DataCorrupted)?;
            out.extend_from_slice(literal);
            at += len;
            continue;
        }
        // a back-reference: length (3 bits, 7 = one more byte) + 2, distance 13 bits + 1
        let mut len = ctrl >> 5;
        if len == 7 {
            len += *data.get(at).ok_or(LzfError::DataCorrupted)? as usize;
            at += 1;
        }
        let low = *data.get(at).ok_or(LzfError::DataCorrupted)? as usize;
        at += 1;
        let len = len + 2;
        let distance = ((ctrl & 0x1f) << 8) + low + 1;
        if out.len() + len > out_len_should {
            return Err(LzfError::BufferTooSmall);
        }
        let start = out
            .len()
            .checked_sub(distance)
            .ok_or(LzfError::DataCorrupted)?;
        // Copying out[start..] forward: every whole multiple of `distance` copied so far can be
        // copied again as one slice (one slice in all when the reference does not overlap).
        let mut copied = 0;
        while copied < len {
            let n = (distance + copied).min(len - copied);
            out.extend_from_within(start..start + n);
            copied += n;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decompress;
    use crate::{compress, LzfError};

    /// The published crate's decompress, byte by byte: the reference the new one must match.
    fn reference(data: &[u8], out_len_should: usize) -> Result<Vec<u8>, LzfError> {
        let mut out: Vec<u8> = Vec::new();
        let mut i = 0;
        if data.is_empty() {
            return Err(LzfError::DataCorrupted);
        }
        while i < data.len() {
            let ctrl = data[i] as usize;
            i += 1;
            if ctrl < 32 {
                let len = ctrl + 1;
                if out.len() + len > out_len_should {
                    return Err(LzfError::BufferTooSmall);
                }
                if i + len > data.len() {
                    return Err(LzfError::DataCorrupted);
                }
                out.extend_from_slice(&data[i..i + len]);
                i += len;
            } else {
                let mut len = ctrl >> 5;
                if i >= data.len() {
                    return Err(LzfError::DataCorrupted);
                }
                if len == 7 {
                    len += data[i] as usize;
                    i += 1;
                    if i >= data.len() {
                        return Err(LzfError::DataCorrupted);
                    }
                }
                let distance = ((ctrl & 0x1f) << 8) + 1 + data[i] as usize;
                i += 1;
                if out.len() + len + 2 > out_len_should {
                    return Err(LzfError::BufferTooSmall);
                }
                if distance > out.len() {
                    return Err(LzfError::DataCorrupted);
                }
                let from = out.len() - distance;
                for k in 0..len + 2 {
                    out.push(out[from + k]);
                }
            }
        }
        Ok(out)
    }

    /// Deterministic bytes of many shapes: runs (distance 1), short periods (overlapping
    /// references of distance 2..16), repeated words (long references) and noise.
    fn samples() -> Vec<Vec<u8>> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut all = vec![];
        for case in 0..400 {
            let mut v = vec![];
            while v.len() < 40 + case * 23 {
                match rand() % 4 {
                    0 => v.extend(std::iter::repeat_n(rand() as u8, (rand() % 300) as usize)),
                    1 => {
                        let period: Vec<u8> = (0..1 + rand() % 16).map(|_| rand() as u8).collect();
                        let n = (rand() % 400) as usize;
                        v.extend(period.iter().cycle().take(n));
                    }
                    2 if v.len() > 8 => {
                        let from = (rand() as usize) % (v.len() - 4);
                        let n = ((rand() % 200) as usize).min(v.len() - from);
                        v.extend_from_within(from..from + n);
                    }
                    _ => v.extend((0..rand() % 40).map(|_| rand() as u8)),
                }
            }
            all.push(v);
        }
        all.push(b"value:12345".iter().copied().chain([0u8; 501]).collect());
        all
    }

    #[test]
    fn round_trips_and_matches_the_published_decompress() {
        for raw in samples() {
            let Ok(packed) = compress(&raw) else { continue };
            assert_eq!(decompress(&packed, raw.len()).as_deref(), Ok(&raw[..]));
            assert_eq!(decompress(&packed, raw.len() + 10).as_deref(), Ok(&raw[..]));
            assert_eq!(
                decompress(&packed, raw.len()),
                reference(&packed, raw.len())
            );
        }
    }

    #[test]
    fn refuses_what_the_published_decompress_refuses() {
        for raw in samples().into_iter().take(60) {
            let Ok(packed) = compress(&raw) else { continue };
            for short in [0, 1, raw.len() / 2, raw.len() - 1] {
                assert_eq!(decompress(&packed, short), reference(&packed, short));
                assert_eq!(decompress(&packed, short), Err(LzfError::BufferTooSmall));
            }
            for cut in [1, 2, packed.len() / 3, packed.len() - 1] {
                let truncated = &packed[..cut];
                assert_eq!(
                    decompress(truncated, raw.len()),
                    reference(truncated, raw.len())
                );
            }
            let mut flipped = packed.clone();
            for i in (0..flipped.len()).step_by(7) {
                flipped[i] ^= 0xa5;
                assert_eq!(
                    decompress(&flipped, raw.len()),
                    reference(&flipped, raw.len())
                );
            }
        }
        assert_eq!(decompress(&[], 10), Err(LzfError::DataCorrupted));
        // a back-reference to before the start
        assert_eq!(decompress(&[0x20, 0x00], 10), Err(LzfError::DataCorrupted));
    }
}
