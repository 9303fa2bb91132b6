//! A shard's copy-on-write B+tree: its keys in order on disk, read through the
//! page cache; node formats in `format::tree`.
//!
//! Nothing here does I/O: a [`NodeSource`] hands out verified node images (from
//! the cache, or read by whoever implements it), and a [`NodeSink`] gives a new
//! node its id and extent and takes its image to write. So readers on any
//! thread and the shard's checkpoint share one implementation of the tree, and
//! tests drive it in memory.
//!
//! A checkpoint merges the sorted changes since the last one into the tree
//! ([`merge`]): every node on the path to a changed key is rewritten under a new
//! id to a new extent; nodes not on such a path are shared with the previous
//! version. The old nodes are returned, to be freed once the new root is durable.

use std::ops::Bound;

use bytes::Bytes;

use crate::error::Error;
use crate::format::page::ChunkRef;
use crate::format::tree::{
    BranchItem, LeafItem, LeafValue, NODE_HEADER_BYTES, NodeRef, NodeView, branch_item_bytes, encode_branch,
    encode_leaf, leaf_item_bytes, node_used_bytes,
};
use crate::io::AlignedBuf;

/// The root of one version of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TreeRoot {
    /// The root node; none for an empty tree.
    pub node: Option<NodeRef>,
    /// The root's level (0: the root is a leaf).
    pub level: u8,
    /// Keys in the tree.
    pub keys: u64,
}

/// Why a node could not be loaded.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// Its extent does not hold it (`what`): either the version being read was
    /// superseded and its nodes freed (a reader starts again from the newest root), or
    /// the file is damaged (if the root it started from is still the newest).
    Gone { offset: u64, what: String },
    /// The read failed, or the bytes are not a valid node.
    Failed(Error),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> LoadError {
        LoadError::Failed(e)
    }
}

/// Hands out node images.
pub(crate) trait NodeSource {
    /// The image of `node`, checked by `format::tree::check_node` and against `node.id`.
    fn load(&self, node: &NodeRef) -> Result<Bytes, LoadError>;

    /// Says that `nodes` (in key order) will be loaded soon: a source that reads from a
    /// disk may read them ahead, adjacent extents together. Loading them later must
    /// still work, and still checks them, whatever this did.
    fn prefetch(&self, nodes: &[NodeRef]) {
        let _ = nodes;
    }
}

/// Places new nodes.
pub(crate) trait NodeSink {
    /// A new node's id and an extent of `len` bytes (a multiple of the unit) no live node
    /// uses.
    fn allocate(&mut self, len: usize) -> NodeRef;
    /// Takes the image of node `node` (of `node.len` bytes) to write.
    fn write(&mut self, node: NodeRef, image: AlignedBuf);
}

/// A value as found in a leaf: the bytes (a slice of the leaf's image) or a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// The value.
    Inline(Bytes),
    /// The chunk holding it.
    Chunk(ChunkRef),
}

/// A key's record in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub key: Bytes,
    pub version: u64,
    pub value: Found,
}

fn corrupt(node: &NodeRef, what: impl Into<String>) -> LoadError {
    LoadError::Failed(Error::Corruption {
        file: "pages.dat".into(),
        offset: node.offset,
        what: format!("tree node {}: {}", node.id, what.into()),
    })
}

/// Loads `node`, expecting it at `level`.
fn load_at(src: &dyn NodeSource, node: &NodeRef, level: u8) -> Result<Bytes, LoadError> {
    let image = src.load(node)?;
    let found = NodeView::new(&image).level();
    if found != level {
        return Err(corrupt(node, format!("at level {found} where its parent says {level}")));
    }
    Ok(image)
}

/// Leaf item `n`'s value: a slice of the leaf's image, or its chunk.
pub(crate) fn leaf_found(image: &Bytes, view: &NodeView<'_>, n: usize) -> Found {
    match view.leaf_item(n).value {
        LeafValue::Inline(_) => {
            let (at, len) = view.value_span(n);
            Found::Inline(image.slice(at..at + len))
        }
        LeafValue::Chunk(c) => Found::Chunk(c),
    }
}

/// The record of `key`, if the tree holds it.
pub(crate) fn get(src: &dyn NodeSource, root: &TreeRoot, key: &[u8]) -> Result<Option<(u64, Found)>, LoadError> {
    let Some(mut node) = root.node else { return Ok(None) };
    let mut level = root.level;
    loop {
        let image = load_at(src, &node, level)?;
        let view = NodeView::new(&image);
        if view.is_leaf() {
            return Ok(match view.search(key) {
                Ok(n) => Some((view.leaf_item(n).version, leaf_found(&image, &view, n))),
                Err(_) => None,
            });
        }
        node = view.child(view.child_for(key));
        level -= 1;
    }
}

/// Appends to `out` up to `limit` records with keys in `(start, end)`, in key order.
/// Returns whether the range may hold more (the limit was reached).
pub(crate) fn range(
    src: &dyn NodeSource,
    root: &TreeRoot,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: usize,
    out: &mut Vec<Record>,
) -> Result<bool, LoadError> {
    let Some(node) = root.node else { return Ok(false) };
    let mut taken = 0;
    let mut stack: Vec<(Bytes, usize)> = Vec::with_capacity(usize::from(root.level) + 1);
    // Descend to the leaf holding `start`.
    let mut next = Some((node, root.level));
    while let Some((node, level)) = next.take() {
        let image = load_at(src, &node, level)?;
        let view = NodeView::new(&image);
        if view.is_leaf() {
            let at = match start {
                Bound::Unbounded => 0,
                Bound::Included(k) => view.search(k).unwrap_or_else(|n| n),
                Bound::Excluded(k) => view.search(k).map_or_else(|n| n, |n| n + 1),
            };
            stack.push((image, at));
        } else {
            let n = match start {
                Bound::Unbounded => 0,
                Bound::Included(k) | Bound::Excluded(k) => view.child_for(k),
            };
            let child = view.child(n);
            stack.push((image, n + 1));
            next = Some((child, level - 1));
        }
    }
    let past_end = |key: &[u8]| match end {
        Bound::Unbounded => false,
        Bound::Included(e) => key > e,
        Bound::Excluded(e) => key >= e,
    };
    loop {
        let Some((image, at)) = stack.last_mut() else { return Ok(false) };
        let view = NodeView::new(image);
        if *at >= view.count() {
            stack.pop();
            continue;
        }
        if view.is_leaf() {
            let n = *at;
            *at += 1;
            let item = view.leaf_item(n);
            if past_end(item.key) {
                return Ok(false);
            }
            if taken == limit {
                return Ok(true);
            }
            let key_at = item.key.as_ptr() as usize - image.as_ptr() as usize;
            out.push(Record {
                key: image.slice(key_at..key_at + item.key.len()),
                version: item.version,
                value: leaf_found(image, &view, n),
            });
            taken += 1;
        } else {
            let n = *at;
            *at += 1;
            if past_end(view.key(n)) {
                return Ok(false);
            }
            let child = view.child(n);
            let level = view.level() - 1;
            if level == 0 {
                // Read ahead the leaves this scan is about to walk: about one per four
                // records it may still take, or, for a long scan (64 records or more to
                // go), the rest of this branch, so its leaves come in a few large reads.
                let rest = view.count() - n;
                let ahead = if limit - taken >= 64 { rest } else { (limit - taken).div_ceil(4).min(rest) };
                if ahead > 1 {
                    let leaves: Vec<NodeRef> = (n..n + ahead).map(|i| view.child(i)).collect();
                    src.prefetch(&leaves);
                }
            }
            let image = load_at(src, &child, level)?;
            stack.push((image, 0));
        }
    }
}

/// One change a checkpoint merges into the tree.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub key: Bytes,
    pub version: u64,
    pub op: ChangeOp,
}

/// What a change does to its key.
#[derive(Debug, Clone)]
pub(crate) enum ChangeOp {
    /// Sets the value, kept in the leaf.
    Put(Bytes),
    /// Sets the value, kept in a chunk already written.
    PutChunk(ChunkRef),
    /// Removes the key.
    Delete,
}

/// How nodes are sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Bytes a node is filled to before a new one starts (a node holding one large item
    /// may be larger).
    pub node_bytes: usize,
    /// Records a leaf holds at most.
    pub records_max: usize,
    /// Page unit: node extents are multiples of it.
    pub unit: usize,
    /// Memory alignment of image buffers.
    pub mem_align: usize,
}

/// What a merge did.
#[derive(Debug, Default)]
pub(crate) struct MergeOutcome {
    /// The new version's root.
    pub root: TreeRoot,
    /// Nodes of the previous version the new one no longer uses.
    pub freed_nodes: Vec<NodeRef>,
    /// Chunks no record references any more.
    pub freed_chunks: Vec<ChunkRef>,
    /// Nodes written.
    pub nodes_written: u64,
    /// Bytes of the nodes written.
    pub bytes_written: u64,
    /// Padding bytes in the nodes written.
    pub bytes_padded: u64,
}

/// A record being placed in a new leaf.
struct Owned {
    key: Bytes,
    version: u64,
    value: OwnedValue,
}

enum OwnedValue {
    Inline(Bytes),
    Chunk(ChunkRef),
}

impl Owned {
    fn bytes(&self) -> usize {
        match &self.value {
            OwnedValue::Inline(v) => leaf_item_bytes(self.key.len(), v.len()),
            OwnedValue::Chunk(_) => leaf_item_bytes(self.key.len(), crate::format::page::CHUNK_REF_BYTES),
        }
    }
}

/// A node of the new version: the smallest key it may hold, and where it is.
struct Entry {
    key: Bytes,
    node: NodeRef,
}

struct Merger<'a> {
    src: &'a dyn NodeSource,
    sink: &'a mut dyn NodeSink,
    shape: Shape,
    out: MergeOutcome,
    keys_added: u64,
    keys_removed: u64,
}

/// Merges `changes` (sorted by key, each key once) into the tree at `root`: see the
/// module docs.
pub(crate) fn merge(
    src: &dyn NodeSource,
    sink: &mut dyn NodeSink,
    root: &TreeRoot,
    changes: &[Change],
    shape: Shape,
) -> Result<MergeOutcome, LoadError> {
    debug_assert!(changes.windows(2).all(|w| w[0].key < w[1].key), "changes are sorted, each key once");
    let mut m = Merger { src, sink, shape, out: MergeOutcome::default(), keys_added: 0, keys_removed: 0 };
    let (mut level, mut entries) = match root.node {
        None => {
            let puts: Vec<Owned> = changes.iter().filter_map(owned_put).collect();
            m.keys_added = puts.len() as u64;
            (0, m.write_leaves(puts))
        }
        Some(node) if root.level == 0 => (0, m.merge_leaf(&node, changes)?),
        Some(node) => (root.level - 1, m.merge_children(&node, root.level, &Bytes::new(), changes)?),
    };
    while entries.len() > 1 {
        level += 1;
        entries = m.write_branches(level, &entries);
    }
    let keys = (root.keys + m.keys_added).checked_sub(m.keys_removed).ok_or_else(|| {
        LoadError::Failed(Error::Corruption {
            file: "pages.dat".into(),
            offset: 0,
            what: "the tree removed more keys than its root says it holds".into(),
        })
    })?;
    m.out.root = TreeRoot { node: entries.first().map(|e| e.node), level, keys };
    Ok(m.out)
}

fn owned_put(c: &Change) -> Option<Owned> {
    let value = match &c.op {
        ChangeOp::Put(v) => OwnedValue::Inline(v.clone()),
        ChangeOp::PutChunk(r) => OwnedValue::Chunk(*r),
        ChangeOp::Delete => return None,
    };
    Some(Owned { key: c.key.clone(), version: c.version, value })
}

impl Merger<'_> {
    /// Rewrites leaf `node` with `changes` applied; returns the new leaves (none if it
    /// ends empty).
    fn merge_leaf(&mut self, node: &NodeRef, changes: &[Change]) -> Result<Vec<Entry>, LoadError> {
        let image = load_at(self.src, node, 0)?;
        self.out.freed_nodes.push(*node);
        let view = NodeView::new(&image);
        let mut items: Vec<Owned> = Vec::with_capacity(view.count() + changes.len());
        let mut c = changes.iter().peekable();
        for n in 0..view.count() {
            let item = view.leaf_item(n);
            while let Some(change) = c.next_if(|ch| &ch.key[..] < item.key) {
                self.keys_added += u64::from(!matches!(change.op, ChangeOp::Delete));
                items.extend(owned_put(change));
            }
            let replaced = c.next_if(|ch| &ch.key[..] == item.key);
            if let Some(change) = &replaced {
                if let LeafValue::Chunk(chunk) = item.value {
                    self.out.freed_chunks.push(chunk);
                }
                self.keys_removed += u64::from(matches!(change.op, ChangeOp::Delete));
                items.extend(owned_put(change));
                continue;
            }
            let key_at = item.key.as_ptr() as usize - image.as_ptr() as usize;
            let value = match leaf_found(&image, &view, n) {
                Found::Inline(v) => OwnedValue::Inline(v),
                Found::Chunk(r) => OwnedValue::Chunk(r),
            };
            items.push(Owned { key: image.slice(key_at..key_at + item.key.len()), version: item.version, value });
        }
        for change in c {
            self.keys_added += u64::from(!matches!(change.op, ChangeOp::Delete));
            items.extend(owned_put(change));
        }
        Ok(self.write_leaves(items))
    }

    /// The children of branch `node` (at `level`, reached under separator `lower`) with
    /// `changes` applied below it: the entries of its replacement's children.
    fn merge_children(
        &mut self,
        node: &NodeRef,
        level: u8,
        lower: &Bytes,
        changes: &[Change],
    ) -> Result<Vec<Entry>, LoadError> {
        let image = load_at(self.src, node, level)?;
        self.out.freed_nodes.push(*node);
        let view = NodeView::new(&image);
        let count = view.count();
        let mut children = Vec::with_capacity(count + 1);
        let mut rest = changes;
        for n in 0..count {
            let key = if n == 0 {
                lower.clone()
            } else {
                let k = view.key(n);
                let at = k.as_ptr() as usize - image.as_ptr() as usize;
                image.slice(at..at + k.len())
            };
            // The changes below the next child's separator go to this child.
            let take = if n + 1 < count {
                let next = view.key(n + 1);
                rest.partition_point(|c| &c.key[..] < next)
            } else {
                rest.len()
            };
            let (mine, later) = rest.split_at(take);
            rest = later;
            let child = view.child(n);
            if mine.is_empty() {
                children.push(Entry { key, node: child });
            } else if level == 1 {
                let mut pieces = self.merge_leaf(&child, mine)?;
                if let Some(first) = pieces.first_mut() {
                    first.key = key;
                }
                children.append(&mut pieces);
            } else {
                let grandchildren = self.merge_children(&child, level - 1, &key, mine)?;
                children.append(&mut self.write_branches(level - 1, &grandchildren));
            }
        }
        Ok(children)
    }

    /// Writes `items` (in key order) as leaves filled evenly up to the node size.
    fn write_leaves(&mut self, items: Vec<Owned>) -> Vec<Entry> {
        let sizes: Vec<usize> = items.iter().map(Owned::bytes).collect();
        let groups = split_evenly(&sizes, self.shape.node_bytes, self.shape.records_max, 1);
        let mut entries = Vec::with_capacity(groups.len());
        let mut items = items.into_iter();
        for (count, bytes) in groups {
            let group: Vec<Owned> = items.by_ref().take(count).collect();
            let used = node_used_bytes(bytes, count);
            let (node, mut buf) = self.place(used);
            let leaf: Vec<LeafItem<'_>> = group
                .iter()
                .map(|o| LeafItem {
                    key: &o.key,
                    version: o.version,
                    value: match &o.value {
                        OwnedValue::Inline(v) => LeafValue::Inline(v),
                        OwnedValue::Chunk(r) => LeafValue::Chunk(*r),
                    },
                })
                .collect();
            let written = encode_leaf(node.id, &leaf, &mut buf.as_mut_slice()[..node.len as usize])
                .expect("a leaf is sized by the formula its encoder uses");
            debug_assert_eq!(written, used, "a leaf uses the bytes it was sized for");
            self.finish(node, buf, used);
            entries.push(Entry { key: group[0].key.clone(), node });
        }
        entries
    }

    /// Writes `children` (in key order) as branches of `level`, at least two children
    /// each where there are two.
    fn write_branches(&mut self, level: u8, children: &[Entry]) -> Vec<Entry> {
        let sizes: Vec<usize> =
            children.iter().enumerate().map(|(n, e)| branch_item_bytes(if n == 0 { 0 } else { e.key.len() })).collect();
        let groups = split_evenly(&sizes, self.shape.node_bytes, usize::from(u16::MAX), 2);
        let mut entries = Vec::with_capacity(groups.len());
        let mut at = 0;
        for (count, _) in groups {
            let group = &children[at..at + count];
            at += count;
            let items: Vec<BranchItem<'_>> = group.iter().map(|e| BranchItem { key: &e.key, child: e.node }).collect();
            // The first item's key is not stored; the group's size counted it.
            let bytes: usize = (0..count).map(|n| branch_item_bytes(if n == 0 { 0 } else { group[n].key.len() })).sum();
            let used = node_used_bytes(bytes, count);
            let (node, mut buf) = self.place(used);
            encode_branch(node.id, level, &items, &mut buf.as_mut_slice()[..node.len as usize])
                .expect("a branch is sized by the formula its encoder uses");
            self.finish(node, buf, used);
            entries.push(Entry { key: group[0].key.clone(), node });
        }
        entries
    }

    fn place(&mut self, used: usize) -> (NodeRef, AlignedBuf) {
        let len = used.next_multiple_of(self.shape.unit);
        let node = self.sink.allocate(len);
        debug_assert_eq!(node.len as usize, len, "the sink places a node in an extent of its size");
        let buf = AlignedBuf::zeroed(len.next_multiple_of(self.shape.mem_align), self.shape.mem_align);
        (node, buf)
    }

    fn finish(&mut self, node: NodeRef, buf: AlignedBuf, used: usize) {
        self.out.nodes_written += 1;
        self.out.bytes_written += u64::from(node.len);
        self.out.bytes_padded += u64::from(node.len) - used as u64;
        self.sink.write(node, buf);
    }
}

/// Splits items of `sizes` bytes into consecutive groups: as few as hold at most
/// `node_bytes` (less the node header) and `count_max` items each, filled evenly, and at
/// least `count_min` items each where that many exist (a single item larger than a node
/// gets a node of its own). Returns each group's (count, bytes).
fn split_evenly(sizes: &[usize], node_bytes: usize, count_max: usize, count_min: usize) -> Vec<(usize, usize)> {
    let room = node_bytes.saturating_sub(NODE_HEADER_BYTES + 8).max(1);
    let total: usize = sizes.iter().sum();
    if sizes.is_empty() {
        return Vec::new();
    }
    let nodes = total.div_ceil(room).max(sizes.len().div_ceil(count_max)).max(1);
    let target = total.div_ceil(nodes);
    let per_node = sizes.len().div_ceil(nodes);
    let mut groups = Vec::with_capacity(nodes + 1);
    let (mut count, mut bytes) = (0, 0);
    for (n, &size) in sizes.iter().enumerate() {
        let full = count >= count_min && (bytes + size > room || count >= count_max);
        let even = count >= count_min
            && bytes + size / 2 > target
            && count >= per_node.min(count_max).saturating_sub(1).max(1);
        // Never leave fewer than `count_min` items for the last group.
        if (full || even) && sizes.len() - n >= count_min {
            groups.push((count, bytes));
            (count, bytes) = (0, 0);
        }
        count += 1;
        bytes += size;
    }
    groups.push((count, bytes));
    groups
}

/// The leaves a merge of `changes` will rewrite, found by reading only branches: a
/// checkpoint reads them all ahead, many in flight, before merging.
pub(crate) fn leaves_touched(
    src: &dyn NodeSource,
    root: &TreeRoot,
    changes: &[Change],
) -> Result<Vec<NodeRef>, LoadError> {
    let mut out = Vec::new();
    let Some(node) = root.node else { return Ok(out) };
    if changes.is_empty() {
        return Ok(out);
    }
    if root.level == 0 {
        out.push(node);
        return Ok(out);
    }
    let mut todo: Vec<(NodeRef, u8, &[Change])> = vec![(node, root.level, changes)];
    while let Some((node, level, changes)) = todo.pop() {
        let image = load_at(src, &node, level)?;
        let view = NodeView::new(&image);
        let mut rest = changes;
        for n in 0..view.count() {
            let take = if n + 1 < view.count() {
                let next = view.key(n + 1);
                rest.partition_point(|c| &c.key[..] < next)
            } else {
                rest.len()
            };
            let (mine, later) = rest.split_at(take);
            rest = later;
            if mine.is_empty() {
                continue;
            }
            if level == 1 {
                out.push(view.child(n));
            } else {
                todo.push((view.child(n), level - 1, mine));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::format::tree::check_node;

    /// Nodes in memory, by id.
    #[derive(Default)]
    struct Mem {
        nodes: RefCell<HashMap<u64, Bytes>>,
        next_id: std::cell::Cell<u64>,
    }

    /// Places nodes into a `Mem` at increasing offsets.
    struct Sink<'a>(&'a Mem);

    impl NodeSource for Mem {
        fn load(&self, node: &NodeRef) -> Result<Bytes, LoadError> {
            let image = self
                .nodes
                .borrow()
                .get(&node.id)
                .cloned()
                .ok_or(LoadError::Gone { offset: node.offset, what: "freed".into() })?;
            let info = check_node(&image).map_err(|what| corrupt(node, what))?;
            assert_eq!(info.id, node.id);
            assert_eq!(image.len(), node.len as usize);
            Ok(image)
        }
    }

    impl NodeSink for Sink<'_> {
        fn allocate(&mut self, len: usize) -> NodeRef {
            let id = self.0.next_id.get() + 1;
            self.0.next_id.set(id);
            NodeRef { id, offset: id << 20, len: len as u32 }
        }
        fn write(&mut self, node: NodeRef, image: AlignedBuf) {
            let image = Bytes::copy_from_slice(&image.as_slice()[..node.len as usize]);
            self.0.nodes.borrow_mut().insert(node.id, image);
        }
    }

    const SHAPE: Shape = Shape { node_bytes: 1024, records_max: 16, unit: 512, mem_align: 512 };

    fn value_of(key: &[u8], version: u64) -> Bytes {
        let n = (version as usize * 7 + key.len()) % 90;
        Bytes::from(vec![key[key.len() - 1]; n])
    }

    /// Applies `changes` to the tree and the model, then checks the whole tree against it.
    fn apply(
        mem: &Mem,
        root: &mut TreeRoot,
        model: &mut BTreeMap<Vec<u8>, (u64, Bytes)>,
        changes: &[Change],
        shape: Shape,
    ) {
        let outcome = merge(mem, &mut Sink(mem), root, changes, shape).unwrap();
        for freed in &outcome.freed_nodes {
            assert!(mem.nodes.borrow_mut().remove(&freed.id).is_some(), "a node is freed once");
        }
        for c in changes {
            match &c.op {
                ChangeOp::Put(v) => {
                    model.insert(c.key.to_vec(), (c.version, v.clone()));
                }
                ChangeOp::Delete => {
                    model.remove(&c.key[..]);
                }
                ChangeOp::PutChunk(_) => unreachable!(),
            }
        }
        *root = outcome.root;
        check(mem, root, model);
    }

    fn check(mem: &Mem, root: &TreeRoot, model: &BTreeMap<Vec<u8>, (u64, Bytes)>) {
        assert_eq!(root.keys, model.len() as u64);
        let mut all = Vec::new();
        assert!(!range(mem, root, Bound::Unbounded, Bound::Unbounded, usize::MAX, &mut all).unwrap());
        let got: Vec<(Vec<u8>, u64, Bytes)> = all
            .into_iter()
            .map(|r| match r.value {
                Found::Inline(v) => (r.key.to_vec(), r.version, v),
                Found::Chunk(_) => unreachable!(),
            })
            .collect();
        let want: Vec<(Vec<u8>, u64, Bytes)> = model.iter().map(|(k, (v, b))| (k.clone(), *v, b.clone())).collect();
        assert_eq!(got, want);
        for (k, (v, b)) in model.iter().step_by(7) {
            assert_eq!(get(mem, root, k).unwrap(), Some((*v, Found::Inline(b.clone()))));
            let mut missing = k.clone();
            missing.push(0);
            if !model.contains_key(&missing) {
                assert_eq!(get(mem, root, &missing).unwrap(), None);
            }
        }
        // Every node reachable is live, and every live node is reachable.
        let mut reachable = 0;
        let mut todo: Vec<NodeRef> = root.node.into_iter().collect();
        while let Some(n) = todo.pop() {
            reachable += 1;
            let image = mem.load(&n).unwrap();
            let view = NodeView::new(&image);
            if !view.is_leaf() {
                todo.extend((0..view.count()).map(|i| view.child(i)));
            }
        }
        assert_eq!(reachable, mem.nodes.borrow().len(), "no node leaks and none is freed while used");
    }

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("k{:08}", i.wrapping_mul(2654435761) % 100_000).into_bytes())
    }

    #[test]
    fn random_rounds_match_a_model() {
        let mem = Mem::default();
        let mut root = TreeRoot::default();
        let mut model = BTreeMap::new();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut version = 1;
        for round in 0..60 {
            let mut changes: BTreeMap<Bytes, Change> = BTreeMap::new();
            let n = if round % 10 == 9 { 3000 } else { next() % 400 };
            let deletes = round % 4 == 3;
            for _ in 0..n {
                let k = key(next() % 20_000);
                version += 1;
                let op =
                    if deletes && next() % 3 != 0 { ChangeOp::Delete } else { ChangeOp::Put(value_of(&k, version)) };
                changes.insert(k.clone(), Change { key: k, version, op });
            }
            apply(&mem, &mut root, &mut model, &changes.into_values().collect::<Vec<_>>(), SHAPE);
        }
        assert!(root.level >= 2, "the test grew a tree of several levels (level {})", root.level);
        // Delete everything: the tree empties.
        version += 1;
        let changes: Vec<Change> =
            model.keys().map(|k| Change { key: Bytes::from(k.clone()), version, op: ChangeOp::Delete }).collect();
        apply(&mem, &mut root, &mut model, &changes, SHAPE);
        assert_eq!(root.node, None);
    }

    #[test]
    fn ranges_and_limits() {
        let mem = Mem::default();
        let mut root = TreeRoot::default();
        let mut model = BTreeMap::new();
        let changes: Vec<Change> = (0..2000u64)
            .map(|i| {
                let k = Bytes::from(format!("r{i:05}").into_bytes());
                Change { key: k.clone(), version: i + 1, op: ChangeOp::Put(value_of(&k, i)) }
            })
            .collect();
        apply(&mem, &mut root, &mut model, &changes, SHAPE);
        let keys = |s: Bound<&[u8]>, e: Bound<&[u8]>, limit| {
            let mut out = Vec::new();
            let more = range(&mem, &root, s, e, limit, &mut out).unwrap();
            (out.into_iter().map(|r| String::from_utf8(r.key.to_vec()).unwrap()).collect::<Vec<_>>(), more)
        };
        let (k, more) = keys(Bound::Included(b"r00100"), Bound::Excluded(b"r00103"), 10);
        assert_eq!((k, more), (vec!["r00100".into(), "r00101".into(), "r00102".into()], false));
        let (k, more) = keys(Bound::Excluded(b"r00100"), Bound::Included(b"r00103"), 2);
        assert_eq!((k, more), (vec!["r00101".into(), "r00102".into()], true));
        let (k, _) = keys(Bound::Included(b"r01999"), Bound::Unbounded, 10);
        assert_eq!(k, vec!["r01999".to_string()]);
        let (k, _) = keys(Bound::Excluded(b"r01999"), Bound::Unbounded, 10);
        assert!(k.is_empty());
        let (k, _) = keys(Bound::Unbounded, Bound::Excluded(b"r00000"), 10);
        assert!(k.is_empty());
        let (k, more) = keys(Bound::Unbounded, Bound::Unbounded, 1999);
        assert_eq!((k.len(), more), (1999, true));
    }

    #[test]
    fn sequential_load_fills_leaves() {
        let mem = Mem::default();
        let mut root = TreeRoot::default();
        let mut model = BTreeMap::new();
        let shape = Shape { node_bytes: 4096, records_max: 1000, unit: 1024, mem_align: 512 };
        for batch in 0..5u64 {
            let changes: Vec<Change> = (batch * 2000..(batch + 1) * 2000)
                .map(|i| {
                    let k = Bytes::from(format!("s{i:07}").into_bytes());
                    Change { key: k, version: i + 1, op: ChangeOp::Put(Bytes::from(vec![1u8; 100])) }
                })
                .collect();
            apply(&mem, &mut root, &mut model, &changes, shape);
        }
        let leaves: Vec<Bytes> = mem.nodes.borrow().values().filter(|i| NodeView::new(i).is_leaf()).cloned().collect();
        let used: usize = leaves.iter().map(|i| NodeView::new(i).used()).sum();
        let fill = used as f64 / (leaves.len() * 4096) as f64;
        assert!(fill > 0.6, "leaves are {:.0}% full after sequential loads", fill * 100.0);
    }

    #[test]
    fn leaves_touched_are_the_leaves_merge_rewrites() {
        let mem = Mem::default();
        let mut root = TreeRoot::default();
        let mut model = BTreeMap::new();
        let changes: Vec<Change> = (0..3000u64)
            .map(|i| {
                let k = Bytes::from(format!("t{i:05}").into_bytes());
                Change { key: k.clone(), version: i + 1, op: ChangeOp::Put(value_of(&k, i)) }
            })
            .collect();
        apply(&mem, &mut root, &mut model, &changes, SHAPE);
        let changes: Vec<Change> = [5u64, 6, 900, 2999, 4000]
            .iter()
            .map(|i| {
                let k = Bytes::from(format!("t{i:05}").into_bytes());
                Change { key: k, version: 10_000 + i, op: ChangeOp::Delete }
            })
            .collect();
        let mut touched = leaves_touched(&mem, &root, &changes).unwrap();
        touched.sort_by_key(|n| n.id);
        let outcome = merge(&mem, &mut Sink(&mem), &root, &changes, SHAPE).unwrap();
        let mut rewritten: Vec<NodeRef> = outcome
            .freed_nodes
            .iter()
            .copied()
            .filter(|n| NodeView::new(&mem.nodes.borrow()[&n.id]).is_leaf())
            .collect();
        rewritten.sort_by_key(|n| n.id);
        assert_eq!(touched, rewritten);
        assert_eq!(outcome.root.keys, 3000 - 4);
    }

    #[test]
    fn split_evenly_respects_limits() {
        assert_eq!(split_evenly(&[], 1000, 10, 1), vec![]);
        let groups = split_evenly(&[100; 25], 1000, 10, 1);
        assert!(groups.iter().all(|&(c, b)| c <= 10 && b <= 1000 - 40), "{groups:?}");
        assert_eq!(groups.iter().map(|g| g.0).sum::<usize>(), 25);
        // One huge item gets a node of its own.
        let groups = split_evenly(&[100, 5000, 100], 1000, 10, 1);
        assert_eq!(groups.iter().map(|g| g.0).sum::<usize>(), 3);
        // Branches keep at least two items per node.
        let groups = split_evenly(&[600, 600, 600], 1000, 100, 2);
        assert!(groups.iter().all(|&(c, _)| c >= 2), "{groups:?}");
    }
}
