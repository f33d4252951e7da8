//! Index-linked doubly linked lists over the block arena.
//!
//! Every block owns one `Links` slot (`prev`, `next` block ids, `NIL` for none);
//! a block sits in at most one list at a time, so the free list and the LRU
//! list of cached blocks share the same link array. All operations are O(1)
//! except the walks used by the invariant checker.

/// "No block": the end of a list or an unlinked block.
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Links {
    pub prev: u32,
    pub next: u32,
}

impl Links {
    pub const UNLINKED: Links = Links {
        prev: NIL,
        next: NIL,
    };
}

/// Head, tail and length of one list threaded through a `[Links]` arena.
#[derive(Clone, Debug)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    pub fn new() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn head(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Appends `id` (which must be unlinked) at the tail.
    pub fn push_back(&mut self, links: &mut [Links], id: u32) {
        let i = id as usize;
        links[i] = Links {
            prev: self.tail,
            next: NIL,
        };
        if self.tail == NIL {
            self.head = id;
        } else {
            links[self.tail as usize].next = id;
        }
        self.tail = id;
        self.len += 1;
    }

    /// Unlinks and returns the head.
    pub fn pop_front(&mut self, links: &mut [Links]) -> Option<u32> {
        let id = self.head()?;
        self.remove(links, id);
        Some(id)
    }

    /// Unlinks `id`, which must be a member of this list.
    pub fn remove(&mut self, links: &mut [Links], id: u32) {
        let Links { prev, next } = links[id as usize];
        if prev == NIL {
            self.head = next;
        } else {
            links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            links[next as usize].prev = prev;
        }
        links[id as usize] = Links::UNLINKED;
        self.len -= 1;
    }

    /// Walks the list head to tail, checking back links and bounding the walk
    /// by the arena size (a cycle is reported, not looped on forever).
    pub fn walk(&self, links: &[Links]) -> Result<Vec<u32>, String> {
        let mut out = Vec::with_capacity(self.len);
        let mut prev = NIL;
        let mut cur = self.head;
        while cur != NIL {
            if out.len() > links.len() {
                return Err("list walk exceeds the arena size (cycle)".into());
            }
            let l = links
                .get(cur as usize)
                .ok_or_else(|| format!("list links to block {cur} outside the arena"))?;
            if l.prev != prev {
                return Err(format!(
                    "block {cur}: prev link {} but reached from {prev}",
                    l.prev
                ));
            }
            out.push(cur);
            prev = cur;
            cur = l.next;
        }
        if prev != self.tail {
            return Err(format!(
                "list tail is {} but the walk ended at {prev}",
                self.tail
            ));
        }
        if out.len() != self.len {
            return Err(format!(
                "list length is {} but the walk found {}",
                self.len,
                out.len()
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_remove_keep_order() {
        let mut links = vec![Links::UNLINKED; 5];
        let mut l = List::new();
        for id in [3, 1, 4, 0] {
            l.push_back(&mut links, id);
        }
        assert_eq!(l.walk(&links).unwrap(), vec![3, 1, 4, 0]);
        l.remove(&mut links, 4);
        assert_eq!(l.walk(&links).unwrap(), vec![3, 1, 0]);
        assert_eq!(l.pop_front(&mut links), Some(3));
        l.remove(&mut links, 0);
        assert_eq!(l.walk(&links).unwrap(), vec![1]);
        assert_eq!(l.pop_front(&mut links), Some(1));
        assert_eq!(l.pop_front(&mut links), None);
        assert_eq!(l.len(), 0);
        assert!(links.iter().all(|x| *x == Links::UNLINKED));
    }
}
