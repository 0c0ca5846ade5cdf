//! A streaming decoder for the common shape: a positional batch of positional events.
//!
//! It reads token ids straight into the event without building a value tree, and gives
//! up (`None`) on anything else (map encodings, unknown tags, extra keys, odd types),
//! leaving those to the general decoder, which also does the counting of bad events.

use super::{Batch, BlockStored, Event, Tier};

/// Bytes of the smallest event this decoder reads, `["AllBlocksCleared"]`: the events
/// vector is sized for at most what the rest of the payload can hold.
const MIN_EVENT_BYTES: usize = 18;

/// One msgpack value head.
enum Head<'a> {
    Nil,
    Uint(u64),
    Neg(i64),
    F64(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(usize),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn head(&mut self) -> Option<Head<'a>> {
        let b = *self.take(1)?.first()?;
        Some(match b {
            0x00..=0x7f => Head::Uint(u64::from(b)),
            0xe0..=0xff => Head::Neg(i64::from(b as i8)),
            0x90..=0x9f => self.array(usize::from(b & 0x0f))?,
            0xa0..=0xbf => self.str(usize::from(b & 0x1f))?,
            0xc0 => Head::Nil,
            0xc4 => Head::Bin(self.len_then_take(1)?),
            0xc5 => Head::Bin(self.len_then_take(2)?),
            0xc6 => Head::Bin(self.len_then_take(4)?),
            0xca => Head::F64(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Head::F64(f64::from_bits(self.be(8)?)),
            0xcc => Head::Uint(self.be(1)?),
            0xcd => Head::Uint(self.be(2)?),
            0xce => Head::Uint(self.be(4)?),
            0xcf => Head::Uint(self.be(8)?),
            0xd0 => Head::Neg(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Head::Neg(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Head::Neg(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Head::Neg(self.be(8)? as i64),
            0xd9 => {
                let n = self.be(1)? as usize;
                self.str(n)?
            }
            0xda => {
                let n = self.be(2)? as usize;
                self.str(n)?
            }
            0xdb => {
                let n = self.be(4)? as usize;
                self.str(n)?
            }
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(n)?
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(n)?
            }
            _ => return None, // maps, bools, ext: the general decoder's business
        })
    }

    /// An array head of `n` elements, if the rest of the payload can hold them: every
    /// element takes at least one byte, so a longer declared length is a lie, and
    /// vectors are sized from `n` only once it passed this check.
    fn array(&self, n: usize) -> Option<Head<'a>> {
        (n <= self.0.len()).then_some(Head::Array(n))
    }

    /// A token id: the encodings engines use for them read inline, anything else
    /// through [`Reader::head`] (then checked to fit 32 bits).
    #[inline]
    fn token(&mut self) -> Option<u32> {
        match *self.0.first()? {
            b @ 0x00..=0x7f => {
                self.0 = &self.0[1..];
                Some(u32::from(b))
            }
            0xcd => {
                let [_, hi, lo, ..] = *self.0 else {
                    return None;
                };
                self.0 = &self.0[3..];
                Some(u32::from(u16::from_be_bytes([hi, lo])))
            }
            _ => match self.head()? {
                Head::Uint(t) => u32::try_from(t).ok(),
                _ => None,
            },
        }
    }

    fn len_then_take(&mut self, len_bytes: usize) -> Option<&'a [u8]> {
        let n = self.be(len_bytes)? as usize;
        self.take(n)
    }

    fn str(&mut self, n: usize) -> Option<Head<'a>> {
        Some(Head::Str(std::str::from_utf8(self.take(n)?).ok()?))
    }
}

fn hash(h: Head<'_>) -> Option<u64> {
    match h {
        Head::Uint(u) => Some(u),
        Head::Neg(i) => Some(i as u64),
        Head::Bin(b) => Some(super::event_value(b)),
        _ => None,
    }
}

fn hashes(rd: &mut Reader<'_>) -> Option<Vec<u64>> {
    let Head::Array(n) = rd.head()? else {
        return None;
    };
    (0..n).map(|_| hash(rd.head()?)).collect()
}

fn opt_str<'a>(rd: &mut Reader<'a>) -> Option<Option<&'a str>> {
    match rd.head()? {
        Head::Nil => Some(None),
        Head::Str(s) => Some(Some(s)),
        _ => None,
    }
}

fn opt_uint(rd: &mut Reader<'_>) -> Option<Option<u64>> {
    match rd.head()? {
        Head::Nil => Some(None),
        Head::Uint(u) => Some(Some(u)),
        _ => None,
    }
}

/// The batch, if it has the common shape; `None` means "ask the general decoder".
pub(super) fn decode(payload: &[u8]) -> Option<Batch> {
    let mut rd = Reader(payload);
    let Head::Array(outer @ 2..=3) = rd.head()? else {
        return None;
    };
    let ts = match rd.head()? {
        Head::F64(f) => f,
        Head::Uint(u) => u as f64,
        _ => return None,
    };
    let Head::Array(n) = rd.head()? else {
        return None;
    };
    let mut events = Vec::with_capacity(n.min(rd.0.len() / MIN_EVENT_BYTES));
    for _ in 0..n {
        events.push(event(&mut rd)?);
    }
    let dp_rank = if outer == 3 {
        opt_uint(&mut rd)?.map(u32::try_from).transpose().ok()?
    } else {
        None
    };
    Some(Batch {
        ts,
        events,
        dp_rank,
        skipped: 0,
    })
}

fn event(rd: &mut Reader<'_>) -> Option<Event> {
    let Head::Array(fields @ 1..) = rd.head()? else {
        return None;
    };
    let Head::Str(tag) = rd.head()? else {
        return None;
    };
    match (tag, fields) {
        ("AllBlocksCleared", 1) => Some(Event::Cleared),
        ("BlockRemoved", 2..=4) => {
            let hashes = hashes(rd)?;
            let medium = if fields > 2 { opt_str(rd)? } else { None };
            if fields > 3 {
                opt_uint(rd)?; // group_idx
            }
            Some(Event::Removed {
                hashes,
                tier: Tier::from_medium(medium),
            })
        }
        ("BlockStored", 5..=12) => stored(rd, fields - 1).map(Event::Stored),
        _ => None,
    }
}

fn stored(rd: &mut Reader<'_>, fields: usize) -> Option<BlockStored> {
    let hashes = hashes(rd)?;
    let parent = match rd.head()? {
        Head::Nil => None,
        h => Some(hash(h)?),
    };
    let Head::Array(n) = rd.head()? else {
        return None;
    };
    let tokens = (0..n).map(|_| rd.token()).collect::<Option<Vec<u32>>>()?;
    let block_size = u32::try_from(opt_uint(rd)?.unwrap_or(0)).ok()?;
    let mut medium = None;
    let mut lora_name = None;
    let mut kind = None;
    for i in 4..fields {
        match i {
            4 | 8 | 10 => {
                opt_uint(rd)?; // lora_id, group_idx, sliding window
            }
            5 => medium = opt_str(rd)?,
            6 => lora_name = opt_str(rd)?,
            7 => {
                let Head::Nil = rd.head()? else { return None }; // extra_keys
            }
            _ => kind = opt_str(rd)?,
        }
    }
    Some(BlockStored {
        hashes,
        parent,
        tokens,
        block_size,
        lora_name: lora_name.map(str::to_owned),
        tier: Tier::from_medium(medium),
        is_full_attention: kind.is_none_or(|k| k == "full_attention"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::decode_general;
    use super::*;

    /// G3, G5, G8 of the spec, and a batch with signed and bytes hashes, a LoRA name, a
    /// CPU medium and a sliding-window group.
    const CASES: [&str; 4] = [
        "93cb3ff8000000000000919cab426c6f636b53746f726564920102c0940102030402c0a3475055c0c0c0c0c000",
        "92cb3ff80000000000009196ab426c6f636b53746f726564920102c0940102030402c0",
        "93cb3ff80000000000009294ac426c6f636b52656d6f7665649102a3475055c091b0416c6c426c6f636b73436c6561726564c0",
        "93cb3ff8000000000000919cab426c6f636b53746f72656492d3fffffffffffffffec4020102c4080000000000000001940102030402c0a3435055a46c6f7261c001ae736c6964696e675f77696e646f771005",
    ];

    #[test]
    fn agrees_with_the_general_decoder() {
        for case in CASES {
            let payload = hex::decode(case).expect("hex");
            let fast = decode(&payload).expect("the common shape takes the fast path");
            assert_eq!(Some(fast), decode_general(&payload).ok(), "{case}");
        }
    }

    #[test]
    fn leaves_other_shapes_to_the_general_decoder() {
        // Map-encoded event (G7), truncated payload, unknown tag.
        for case in [
            "93cb3ff80000000000009183a474797065ac426c6f636b52656d6f766564ac626c6f636b5f6861736865739102a66d656469756da3475055c0",
            "93cb3ff8000000000000919cab426c6f636b53746f726564",
            "93cb3ff8000000000000919192a74d79737465727901c0",
        ] {
            assert!(decode(&hex::decode(case).expect("hex")).is_none(), "{case}");
        }
    }
}
