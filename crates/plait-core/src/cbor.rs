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
