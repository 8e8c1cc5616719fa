//! Operations: what one entry asks a log's view to do.

use ciborium::Value;

use crate::cbor::{self, bytes_value, uint_value};
use crate::error::DecodeError;
use crate::limits::{KEY_BYTES_MAX, LABEL_BYTES_MAX, NODE_BYTES_MAX, PROPS_BYTES_MAX, VALUE_BYTES_MAX};
use crate::manifest::LogType;

/// One operation. Encoded as an array whose first item is a tag:
/// `[0, value]`, `[1, key, value]`, `[2, key]`, `[3, src, label, dst, props]`,
/// `[4, src, label, dst]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Append { value: Vec<u8> },
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
    Link { src: Vec<u8>, label: String, dst: Vec<u8>, props: Vec<u8> },
    Unlink { src: Vec<u8>, label: String, dst: Vec<u8> },
}

/// An operation whose fields are out of bounds, or that its log's type does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLarge { field: &'static str, len: usize, max: usize },
    #[error("a {log_type} log does not accept {op} operations")]
    WrongType { log_type: LogType, op: &'static str },
}

fn bounded(field: &'static str, value: &[u8], max: usize, allow_empty: bool) -> Result<(), OpError> {
    if value.is_empty() && !allow_empty {
        return Err(OpError::Empty { field });
    }
    if value.len() > max {
        return Err(OpError::TooLarge { field, len: value.len(), max });
    }
    Ok(())
}

impl Op {
    /// The op's name as users write it: `feed.append`, `kv.put`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Op::Append { .. } => "feed.append",
            Op::Put { .. } => "kv.put",
            Op::Delete { .. } => "kv.delete",
            Op::Link { .. } => "graph.link",
            Op::Unlink { .. } => "graph.unlink",
        }
    }

    /// The log type that accepts this op.
    pub fn log_type(&self) -> LogType {
        match self {
            Op::Append { .. } => LogType::Feed,
            Op::Put { .. } | Op::Delete { .. } => LogType::Kv,
            Op::Link { .. } | Op::Unlink { .. } => LogType::Graph,
        }
    }

    /// Checks every field against its bound. Empty values are refused: a kv key is removed
    /// with a delete, not with an empty put.
    pub fn validate(&self) -> Result<(), OpError> {
        match self {
            Op::Append { value } => bounded("value", value, VALUE_BYTES_MAX, false),
            Op::Put { key, value } => {
                bounded("key", key, KEY_BYTES_MAX, false)?;
                bounded("value", value, VALUE_BYTES_MAX, false)
            }
            Op::Delete { key } => bounded("key", key, KEY_BYTES_MAX, false),
            Op::Link { src, label, dst, props } => {
                bounded("src", src, NODE_BYTES_MAX, false)?;
                bounded("label", label.as_bytes(), LABEL_BYTES_MAX, true)?;
                bounded("dst", dst, NODE_BYTES_MAX, false)?;
                bounded("props", props, PROPS_BYTES_MAX, true)
            }
            Op::Unlink { src, label, dst } => {
                bounded("src", src, NODE_BYTES_MAX, false)?;
                bounded("label", label.as_bytes(), LABEL_BYTES_MAX, true)?;
                bounded("dst", dst, NODE_BYTES_MAX, false)
            }
        }
    }

    /// Checks that a log of `log_type` accepts this op.
    pub fn check_type(&self, log_type: LogType) -> Result<(), OpError> {
        if self.log_type() == log_type {
            Ok(())
        } else {
            Err(OpError::WrongType { log_type, op: self.name() })
        }
    }

    /// Exact length of the op's canonical CBOR encoding, so a writer can fill an entry up
    /// to [`ENTRY_BYTES_MAX`](crate::limits::ENTRY_BYTES_MAX) without encoding twice.
    pub fn encoded_len(&self) -> usize {
        // Every op is a short array (one header byte) whose first item is a tag under 24
        // (one byte); the remaining items are byte or text strings.
        2 + match self {
            Op::Append { value } => cbor::string_len(value.len()),
            Op::Put { key, value } => cbor::string_len(key.len()) + cbor::string_len(value.len()),
            Op::Delete { key } => cbor::string_len(key.len()),
            Op::Link { src, label, dst, props } => {
                cbor::string_len(src.len())
                    + cbor::string_len(label.len())
                    + cbor::string_len(dst.len())
                    + cbor::string_len(props.len())
            }
            Op::Unlink { src, label, dst } => {
                cbor::string_len(src.len()) + cbor::string_len(label.len()) + cbor::string_len(dst.len())
            }
        }
    }

    /// Rough size in bytes, for batching decisions.
    pub fn size_hint(&self) -> usize {
        16 + match self {
            Op::Append { value } => value.len(),
            Op::Put { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
            Op::Link { src, label, dst, props } => src.len() + label.len() + dst.len() + props.len(),
            Op::Unlink { src, label, dst } => src.len() + label.len() + dst.len(),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        let items = match self {
            Op::Append { value } => vec![uint_value(0), bytes_value(value)],
            Op::Put { key, value } => vec![uint_value(1), bytes_value(key), bytes_value(value)],
            Op::Delete { key } => vec![uint_value(2), bytes_value(key)],
            Op::Link { src, label, dst, props } => vec![
                uint_value(3),
                bytes_value(src),
                Value::Text(label.clone()),
                bytes_value(dst),
                bytes_value(props),
            ],
            Op::Unlink { src, label, dst } => {
                vec![uint_value(4), bytes_value(src), Value::Text(label.clone()), bytes_value(dst)]
            }
        };
        Value::Array(items)
    }

    /// Reads one op in place: the same checks, in the same order and with the same
    /// messages, as [`Op::from_value`].
    pub(crate) fn read(r: &mut cbor::Reader<'_>) -> Result<Op, DecodeError> {
        r.within(WHAT, |r| {
            let len = r.array()?;
            if len == 0 {
                return Err(DecodeError::malformed(WHAT, "empty op"));
            }
            let tag = r.uint("tag")?;
            let expected_len = fields_of(tag)?;
            if len != expected_len {
                return Err(DecodeError::malformed(
                    WHAT,
                    format!("expected {expected_len} fields, found {len}"),
                ));
            }
            from_fields(tag, r)
        })
    }

    #[cfg(any(test, feature = "reference-decoder"))]
    pub(crate) fn from_value(value: &Value) -> Result<Op, DecodeError> {
        let items = cbor::array(WHAT, value)?;
        let tag = items.first().ok_or_else(|| DecodeError::malformed(WHAT, "empty op"))?;
        let tag = cbor::uint(WHAT, "tag", tag)?;
        let mut f = cbor::Fields::new(WHAT, value, fields_of(tag)?)?;
        f.next();
        from_fields(tag, &mut f)
    }
}

const WHAT: &str = "op";

/// How many items an op of `tag` has, the tag included.
fn fields_of(tag: u64) -> Result<usize, DecodeError> {
    match tag {
        0 | 2 => Ok(2),
        1 => Ok(3),
        3 => Ok(5),
        4 => Ok(4),
        other => Err(DecodeError::malformed(WHAT, format!("unknown op tag {other}"))),
    }
}

/// The op of `tag` from the items after its tag, checked against its bounds.
fn from_fields<'a>(tag: u64, f: &mut impl cbor::StringFields<'a>) -> Result<Op, DecodeError> {
    let op = match tag {
        0 => Op::Append { value: f.bytes("value", VALUE_BYTES_MAX)?.to_vec() },
        1 => Op::Put {
            key: f.bytes("key", KEY_BYTES_MAX)?.to_vec(),
            value: f.bytes("value", VALUE_BYTES_MAX)?.to_vec(),
        },
        2 => Op::Delete { key: f.bytes("key", KEY_BYTES_MAX)?.to_vec() },
        3 => Op::Link {
            src: f.bytes("src", NODE_BYTES_MAX)?.to_vec(),
            label: f.text("label", LABEL_BYTES_MAX)?.to_owned(),
            dst: f.bytes("dst", NODE_BYTES_MAX)?.to_vec(),
            props: f.bytes("props", PROPS_BYTES_MAX)?.to_vec(),
        },
        _ => Op::Unlink {
            src: f.bytes("src", NODE_BYTES_MAX)?.to_vec(),
            label: f.text("label", LABEL_BYTES_MAX)?.to_owned(),
            dst: f.bytes("dst", NODE_BYTES_MAX)?.to_vec(),
        },
    };
    op.validate().map_err(|e| DecodeError::malformed(WHAT, e.to_string()))?;
    Ok(op)
}
