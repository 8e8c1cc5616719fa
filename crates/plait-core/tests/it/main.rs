//! Integration tests of plait-core: the CRDT laws and the canonical encoding.

mod support;

mod crdt;
mod encoding;
mod snapshot;
