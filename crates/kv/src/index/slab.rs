//! A chunked slab: records addressed by `u32` ids, freed ids reused, memory grown in
//! fixed chunks so a large slab wastes at most one chunk.

/// log2 of the records per chunk.
const CHUNK_BITS: u32 = 14;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Records of type `T` addressed by dense `u32` ids.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    chunks: Vec<Vec<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T: Copy> Slab<T> {
    /// An empty slab.
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Live records.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Ids handed out so far, live or free: every id is below it.
    pub(crate) fn high_water(&self) -> usize {
        self.len + self.free.len()
    }

    /// Stores `value` and returns its id.
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        self.len += 1;
        if let Some(id) = self.free.pop() {
            *self.get_mut(id) = value;
            return id;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let chunk_index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_index];
        chunk.push(value);
        ((chunk_index << CHUNK_BITS) | (chunk.len() - 1)) as u32
    }

    /// The ids the next `n` inserts will hand out, freed ones first (the free list is
    /// a stack), then fresh ones.
    pub(crate) fn upcoming(&self, n: usize) -> impl Iterator<Item = u32> {
        let fresh = self.high_water() as u32..;
        self.free.iter().rev().copied().chain(fresh).take(n)
    }

    /// Starts loading the records the next `n` inserts will reuse (see
    /// [`super::table::prefetch`]).
    #[inline]
    pub(crate) fn prefetch_next(&self, n: usize) {
        for &id in self.free.iter().rev().take(n) {
            super::table::prefetch(self.get(id));
        }
    }

    /// Frees `id`; its record may be handed out again.
    pub(crate) fn remove(&mut self, id: u32) {
        self.len -= 1;
        self.free.push(id);
    }

    /// The record of a live `id`.
    #[inline]
    pub(crate) fn get(&self, id: u32) -> &T {
        &self.chunks[(id >> CHUNK_BITS) as usize][id as usize & (CHUNK - 1)]
    }

    /// The record of a live `id`, mutably.
    #[inline]
    pub(crate) fn get_mut(&mut self, id: u32) -> &mut T {
        &mut self.chunks[(id >> CHUNK_BITS) as usize][id as usize & (CHUNK - 1)]
    }

    /// Bytes allocated for records and the free list.
    pub(crate) fn bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.capacity() * size_of::<T>())
            .sum::<usize>()
            + self.free.capacity() * size_of::<u32>()
            + self.chunks.capacity() * size_of::<Vec<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn upcoming_names_the_ids_inserts_hand_out() {
        let mut slab = Slab::new();
        let ids: Vec<u32> = (0..6).map(|v| slab.insert(v)).collect();
        slab.remove(ids[1]);
        slab.remove(ids[4]);
        let predicted: Vec<u32> = slab.upcoming(4).collect();
        let handed: Vec<u32> = (0..4).map(|v| slab.insert(v)).collect();
        assert_eq!(predicted, handed);
        assert_eq!(
            predicted,
            [4, 1, 6, 7],
            "freed ids first, newest freed first"
        );
    }
}
