//! Reading structured choices out of fuzz input: each call consumes bytes from the front and
//! returns a default (0, empty) once the input is used up, so every byte string is a valid
//! input and libFuzzer's mutations map to nearby structures.

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) << 32 | u64::from(self.u32())
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A buffer of `len` bytes filled from a seed taken from the input: the seed's bytes
    /// repeated, so a few input bytes decide whether a page compresses well or not at all.
    pub fn fill(&mut self, len: usize) -> Vec<u8> {
        let n = usize::from(self.u8() % 32);
        let seed = self.bytes(n);
        if seed.is_empty() {
            return vec![0; len];
        }
        // Mixing in a running counter keeps a repeated seed from compressing.
        let mixed = self.u8() & 1 == 1;
        (0..len)
            .map(|i| {
                let b = seed[i % seed.len()];
                if mixed {
                    b ^ (i / seed.len()) as u8
                } else {
                    b
                }
            })
            .collect()
    }
}
