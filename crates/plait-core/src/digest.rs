//! A digest of a set of entries that does not depend on the order they arrived in: the
//! sum of their hashes, each read as a 256-bit little-endian number, modulo 2^256. Adding
//! an entry is one 256-bit addition, so a replica keeps the digest of each log as it
//! stores entries, and two replicas that hold the same entries of a log hold the same
//! digest whatever order replication brought them in.
//!
//! It is a check for divergence (an entry lost, corrupted or never delivered), not a
//! commitment an adversary cannot forge: sums of hashes admit crafted collisions (the
//! generalized birthday problem). What a replica proves to a client is the checkpoint's
//! state root; this is what replicas compare among themselves cheaply and often.

use crate::EntryHash;

/// The digest of a set of entries; [`SetDigest::default`] is the empty set's.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SetDigest(pub [u8; 32]);

impl SetDigest {
    /// Adds one entry. The caller adds each entry once: adding an entry twice is not a
    /// set operation.
    pub fn add(&mut self, hash: &EntryHash) {
        // Little-endian: byte 0 is the least significant. Four 64-bit limbs with carries
        // give the same sum as byte by byte, in a few instructions.
        let mut carry = false;
        for (sum, add) in self.0.chunks_exact_mut(8).zip(hash.0.chunks_exact(8)) {
            let a = u64::from_le_bytes(sum.try_into().expect("8-byte limb"));
            let b = u64::from_le_bytes(add.try_into().expect("8-byte limb"));
            let (partial, over1) = a.overflowing_add(b);
            let (total, over2) = partial.overflowing_add(u64::from(carry));
            sum.copy_from_slice(&total.to_le_bytes());
            carry = over1 || over2;
        }
    }

    /// The digest of `hashes`, each counted once however often it appears.
    pub fn of<'a>(hashes: impl IntoIterator<Item = &'a EntryHash>) -> SetDigest {
        let unique: std::collections::BTreeSet<&EntryHash> = hashes.into_iter().collect();
        let mut digest = SetDigest::default();
        for hash in unique {
            digest.add(hash);
        }
        digest
    }

    /// Exactly 32 bytes; anything else (an older peer's empty field) is `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<SetDigest> {
        <[u8; 32]>::try_from(bytes).ok().map(SetDigest)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for SetDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SetDigest({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Addition carries across bytes and wraps at 2^256.
    #[test]
    fn addition_carries_and_wraps() {
        let mut d = SetDigest([0xff; 32]);
        let mut one = [0u8; 32];
        one[0] = 1;
        d.add(&EntryHash(one));
        assert_eq!(d, SetDigest::default(), "2^256 - 1 + 1 wraps to 0");
        let mut d = SetDigest::default();
        let mut low = [0u8; 32];
        low[0] = 0xff;
        d.add(&EntryHash(low));
        d.add(&EntryHash(low));
        let mut expect = [0u8; 32];
        expect[0] = 0xfe;
        expect[1] = 1;
        assert_eq!(d, SetDigest(expect), "0xff + 0xff = 0x1fe");
    }

    /// The byte-by-byte sum the stored digests were first computed with.
    fn add_bytewise(digest: &mut [u8; 32], hash: &[u8; 32]) {
        let mut carry = 0u16;
        for (sum, byte) in digest.iter_mut().zip(hash) {
            let total = u16::from(*sum) + u16::from(*byte) + carry;
            *sum = total as u8;
            carry = total >> 8;
        }
    }

    proptest! {
        /// The limb-wise sum is the byte-wise one, so digests stored by either agree.
        #[test]
        fn limbs_add_like_bytes(start in any::<[u8; 32]>(), hashes in proptest::collection::vec(any::<[u8; 32]>(), 1..8)) {
            let mut reference = start;
            let mut digest = SetDigest(start);
            for hash in &hashes {
                add_bytewise(&mut reference, hash);
                digest.add(&EntryHash(*hash));
            }
            prop_assert_eq!(digest.0, reference);
        }

        /// Any order of adding gives the same digest, and duplicates in the input of `of`
        /// count once: the digest is the set's.
        #[test]
        fn the_digest_is_the_sets_whatever_the_order(
            hashes in proptest::collection::vec(any::<[u8; 32]>(), 0..40),
            seed in any::<u64>(),
            dup in any::<usize>(),
        ) {
            let hashes: Vec<EntryHash> = hashes.into_iter().map(EntryHash).collect();
            let mut shuffled = hashes.clone();
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            if !hashes.is_empty() {
                shuffled.push(hashes[dup % hashes.len()]);
            }
            prop_assert_eq!(SetDigest::of(&hashes), SetDigest::of(&shuffled));
            let unique: std::collections::BTreeSet<_> = hashes.iter().collect();
            let mut added = SetDigest::default();
            for hash in unique.iter().rev() {
                added.add(hash);
            }
            prop_assert_eq!(added, SetDigest::of(&hashes));
        }
    }
}
