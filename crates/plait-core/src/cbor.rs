//! Canonical CBOR through ciborium.
//!
//! Plait values are fixed-position arrays of unsigned integers, byte strings, text,
//! booleans and nested arrays; never maps, floats, tags or indefinite lengths. ciborium
//! writes the shortest form of every header, so encoding a value gives its one canonical
//! encoding. Decoding goes through `ciborium::Value` with a depth bound, reads the typed
//! value strictly, and then the caller re-encodes it and compares: any input that would
//! not re-encode to the same bytes (long-form integers, indefinite lengths, trailing
//! bytes) is refused.

use ciborium::Value;

use crate::error::DecodeError;
use crate::limits::CBOR_DEPTH_MAX;

pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, and every Value we build is encodable.
    ciborium::into_writer(value, &mut out).expect("encoding a Value into a Vec cannot fail");
    out
}

/// Decodes one value, bounded in nesting depth. Trailing bytes are caught by the
/// re-encoding comparison the callers make.
pub(crate) fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    ciborium::de::from_reader_with_recursion_limit(bytes, CBOR_DEPTH_MAX)
        .map_err(|e| DecodeError::Cbor(e.to_string()))
}

/// A strict reader over the items of a fixed-position array.
pub(crate) struct Fields<'a> {
    what: &'static str,
    items: std::slice::Iter<'a, Value>,
}

impl<'a> Fields<'a> {
    /// Expects `value` to be an array of exactly `len` items.
    pub(crate) fn new(what: &'static str, value: &'a Value, len: usize) -> Result<Self, DecodeError> {
        let items = array(what, value)?;
        if items.len() != len {
            return Err(DecodeError::malformed(
                what,
                format!("expected {len} fields, found {}", items.len()),
            ));
        }
        Ok(Fields { what, items: items.iter() })
    }

    pub(crate) fn next(&mut self) -> &'a Value {
        // `new` checked the length, and callers read exactly that many fields.
        self.items.next().expect("field count checked in Fields::new")
    }

    pub(crate) fn uint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        uint(self.what, field, self.next())
    }

    pub(crate) fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        bytes(self.what, field, self.next(), max)
    }

    pub(crate) fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        fixed(self.what, field, self.next())
    }

    pub(crate) fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        text(self.what, field, self.next(), max)
    }

    pub(crate) fn boolean(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.next() {
            Value::Bool(b) => Ok(*b),
            _ => Err(DecodeError::malformed(self.what, format!("{field} must be a boolean"))),
        }
    }

    pub(crate) fn array(&mut self, field: &'static str, max: usize) -> Result<&'a [Value], DecodeError> {
        let items = array(self.what, self.next())?;
        if items.len() > max {
            return Err(DecodeError::malformed(
                self.what,
                format!("{field} has {} items, over the limit of {max}", items.len()),
            ));
        }
        Ok(items)
    }
}

/// The string items of a fixed-position array, read from a `Value` tree ([`Fields`]) or
/// in place ([`Reader`]): what an op is built from either way.
pub(crate) trait StringFields<'a> {
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError>;
    fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError>;
}

impl<'a> StringFields<'a> for Fields<'a> {
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        Fields::bytes(self, field, max)
    }

    fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        Fields::text(self, field, max)
    }
}

impl<'a> StringFields<'a> for Reader<'a> {
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        Reader::bytes(self, field, max)
    }

    fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        Reader::text(self, field, max)
    }
}

pub(crate) fn array<'a>(what: &'static str, value: &'a Value) -> Result<&'a [Value], DecodeError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(DecodeError::malformed(what, "expected an array")),
    }
}

pub(crate) fn uint(what: &'static str, field: &'static str, value: &Value) -> Result<u64, DecodeError> {
    match value {
        Value::Integer(i) => u64::try_from(*i)
            .map_err(|_| DecodeError::malformed(what, format!("{field} must be an unsigned 64-bit integer"))),
        _ => Err(DecodeError::malformed(what, format!("{field} must be an unsigned integer"))),
    }
}

pub(crate) fn bytes<'a>(
    what: &'static str,
    field: &'static str,
    value: &'a Value,
    max: usize,
) -> Result<&'a [u8], DecodeError> {
    match value {
        Value::Bytes(b) if b.len() <= max => Ok(b),
        Value::Bytes(b) => Err(DecodeError::malformed(
            what,
            format!("{field} is {} bytes, over the limit of {max}", b.len()),
        )),
        _ => Err(DecodeError::malformed(what, format!("{field} must be a byte string"))),
    }
}

pub(crate) fn fixed<const N: usize>(
    what: &'static str,
    field: &'static str,
    value: &Value,
) -> Result<[u8; N], DecodeError> {
    match value {
        Value::Bytes(b) => <[u8; N]>::try_from(b.as_slice()).map_err(|_| {
            DecodeError::malformed(what, format!("{field} must be exactly {N} bytes, found {}", b.len()))
        }),
        _ => Err(DecodeError::malformed(what, format!("{field} must be a byte string"))),
    }
}

pub(crate) fn text<'a>(
    what: &'static str,
    field: &'static str,
    value: &'a Value,
    max: usize,
) -> Result<&'a str, DecodeError> {
    match value {
        Value::Text(s) if s.len() <= max => Ok(s),
        Value::Text(s) => Err(DecodeError::malformed(
            what,
            format!("{field} is {} bytes, over the limit of {max}", s.len()),
        )),
        _ => Err(DecodeError::malformed(what, format!("{field} must be a text string"))),
    }
}

/// Bytes a CBOR head (major type and argument) takes for the argument `n`.
pub(crate) const fn head_len(n: u64) -> usize {
    if n < 24 {
        1
    } else if n <= 0xff {
        2
    } else if n <= 0xffff {
        3
    } else if n <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// Bytes a byte or text string of `len` bytes takes, head included.
pub(crate) const fn string_len(len: usize) -> usize {
    head_len(len as u64) + len
}

pub(crate) fn uint_value(n: u64) -> Value {
    Value::Integer(n.into())
}

pub(crate) fn bytes_value(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

/// Refuses input whose canonical re-encoding differs.
pub(crate) fn ensure_canonical(input: &[u8], canonical: &[u8]) -> Result<(), DecodeError> {
    if input == canonical { Ok(()) } else { Err(DecodeError::NotCanonical) }
}

/// Reads a list of 32-byte ids that must be strictly ascending (sorted, no duplicates).
pub(crate) fn sorted_ids<T>(
    what: &'static str,
    field: &'static str,
    items: &[Value],
    make: impl Fn([u8; 32]) -> T,
) -> Result<Vec<T>, DecodeError> {
    let mut out = Vec::with_capacity(items.len());
    let mut previous: Option<[u8; 32]> = None;
    for item in items {
        let id: [u8; 32] = fixed(what, field, item)?;
        if previous.is_some_and(|p| p >= id) {
            return Err(DecodeError::malformed(
                what,
                format!("{field} must be sorted ascending without duplicates"),
            ));
        }
        previous = Some(id);
        out.push(make(id));
    }
    Ok(out)
}

/// Major types of the CBOR head (RFC 8949, section 3.1).
const MAJOR_UINT: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_SIMPLE: u8 = 7;

/// Reads canonical CBOR in place, one typed item at a time, without building a
/// `ciborium::Value` tree: for the entry, whose decoding is on every replication, restore
/// and submit path.
///
/// It accepts exactly what decoding through `Value` and comparing the re-encoding accepts:
/// every head must take its shortest form and have a definite length (anything else
/// would re-encode differently: [`DecodeError::NotCanonical`]), text must be UTF-8 and
/// nothing may follow the value. A wrong type gets the message the `Value` readers above
/// give. The entry's unit tests check both decoders against each other on mutated inputs,
/// and so does the `entry` fuzz target.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    what: &'static str,
}

fn truncated() -> DecodeError {
    DecodeError::Cbor("unexpected end of input".into())
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, input: &'a [u8]) -> Reader<'a> {
        Reader { input, what }
    }

    /// What is left; empty once the value was read whole.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.input
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.input.len() {
            return Err(truncated());
        }
        let (taken, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(taken)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// The next head: its major type and argument. For major types 0 to 6 the argument
    /// must be in its shortest form and definite; major type 7 (simple values, floats)
    /// is returned as it is, for the caller to refuse by type.
    fn head(&mut self) -> Result<(u8, u64), DecodeError> {
        let initial = self.take(1)?[0];
        let (major, info) = (initial >> 5, initial & 0x1f);
        let (argument, shortest_above) = match info {
            0..=23 => return Ok((major, u64::from(info))),
            24 => (self.be(1)?, 23),
            25 => (self.be(2)?, 0xff),
            26 => (self.be(4)?, 0xffff),
            27 => (self.be(8)?, 0xffff_ffff),
            28..=30 => return Err(DecodeError::Cbor(format!("reserved additional information {info}"))),
            // An indefinite length (or a break), which re-encodes with a definite one.
            _ => {
                return if major == MAJOR_SIMPLE {
                    Err(DecodeError::Cbor("unexpected break".into()))
                } else {
                    Err(DecodeError::NotCanonical)
                };
            }
        };
        if major != MAJOR_SIMPLE && argument <= shortest_above {
            return Err(DecodeError::NotCanonical);
        }
        Ok((major, argument))
    }

    /// A length that the rest of the input can hold (each item or byte takes at least a
    /// byte), so nothing is allocated for a length the input does not back.
    fn length(&self, n: u64) -> Result<usize, DecodeError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.input.len() => Ok(n),
            _ => Err(truncated()),
        }
    }

    /// The head of an array, its item count.
    pub(crate) fn array(&mut self) -> Result<usize, DecodeError> {
        match self.head()? {
            (MAJOR_ARRAY, n) => self.length(n),
            _ => Err(DecodeError::malformed(self.what, "expected an array")),
        }
    }

    /// The head of an array field of at most `max` items.
    pub(crate) fn array_field(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n = self.array()?;
        if n > max {
            return Err(DecodeError::malformed(
                self.what,
                format!("{field} has {n} items, over the limit of {max}"),
            ));
        }
        Ok(n)
    }

    pub(crate) fn uint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        match self.head()? {
            (MAJOR_UINT, n) => Ok(n),
            (MAJOR_NEGATIVE, _) => {
                Err(DecodeError::malformed(self.what, format!("{field} must be an unsigned 64-bit integer")))
            }
            _ => Err(DecodeError::malformed(self.what, format!("{field} must be an unsigned integer"))),
        }
    }

    fn string(&mut self, major: u8, field: &'static str, kind: &str) -> Result<&'a [u8], DecodeError> {
        match self.head()? {
            (m, n) if m == major => {
                let n = self.length(n)?;
                self.take(n)
            }
            _ => Err(DecodeError::malformed(self.what, format!("{field} must be a {kind}"))),
        }
    }

    pub(crate) fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let b = self.string(MAJOR_BYTES, field, "byte string")?;
        if b.len() > max {
            return Err(DecodeError::malformed(
                self.what,
                format!("{field} is {} bytes, over the limit of {max}", b.len()),
            ));
        }
        Ok(b)
    }

    pub(crate) fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.string(MAJOR_BYTES, field, "byte string")?;
        <[u8; N]>::try_from(b).map_err(|_| {
            DecodeError::malformed(self.what, format!("{field} must be exactly {N} bytes, found {}", b.len()))
        })
    }

    pub(crate) fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let b = self.string(MAJOR_TEXT, field, "text string")?;
        let s = std::str::from_utf8(b).map_err(|e| DecodeError::Cbor(format!("{field}: {e}")))?;
        if s.len() > max {
            return Err(DecodeError::malformed(
                self.what,
                format!("{field} is {} bytes, over the limit of {max}", s.len()),
            ));
        }
        Ok(s)
    }

    /// `n` 32-byte ids that must be strictly ascending (sorted, no duplicates).
    pub(crate) fn sorted_ids<T>(
        &mut self,
        field: &'static str,
        n: usize,
        make: impl Fn([u8; 32]) -> T,
    ) -> Result<Vec<T>, DecodeError> {
        let mut out = Vec::with_capacity(n);
        let mut previous: Option<[u8; 32]> = None;
        for _ in 0..n {
            let id: [u8; 32] = self.fixed(field)?;
            if previous.is_some_and(|p| p >= id) {
                return Err(DecodeError::malformed(
                    self.what,
                    format!("{field} must be sorted ascending without duplicates"),
                ));
            }
            previous = Some(id);
            out.push(make(id));
        }
        Ok(out)
    }

    /// Reads with errors naming `what` (an entry's reader reads its ops as "op").
    pub(crate) fn within<T>(
        &mut self,
        what: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let outer = std::mem::replace(&mut self.what, what);
        let result = read(self);
        self.what = outer;
        result
    }
}
