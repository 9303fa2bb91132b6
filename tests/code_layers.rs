//! Proves the library's modules form layers: no import cycle among the top-level
//! modules nor among the second-level ones, and every top-level dependency points
//! down the layer table below (`docs/ARCHITECTURE.md`, "Layers"), skipping none of
//! the layers the table below it declares must not be skipped (the API reaches the
//! shards and the storage only through the engine core); and that unsafe code stays
//! in `io`.
//!
//! It reads the sources under `src/` at test time and builds the module graph from
//! the paths the code names: `use` trees (`crate::`, `super::`, `self::` and a child
//! module's name), and `crate::…`/`super::…`/`self::…` paths anywhere else. Comments,
//! doc comments, string and char literals and `#[cfg(test)]` items (unit tests) are
//! left out. A path to an item a module imports (`pub(crate) use handle::Spawned`,
//! or a plain `use`) counts as a path to the module that defines it, so a re-export
//! does not hide an edge. An edge between a module and one of its own ancestors
//! (a child using its parent's items, a parent re-exporting its children) is not a
//! layering edge and is left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use the modules of the layers below its own,
/// never those of its own layer or above. The vocabulary every layer above it may use
/// (`key`, `options`, `stats`, `value`, then `batch`, which holds validated keys) sits
/// just above `format` and `io`. `failpoint` (named crash points, test machinery) uses
/// only `error`, so it sits just above it, where any layer may hit one.
const LAYERS: &[(&str, &[&str])] = &[
    ("errors", &["error"]),
    ("crash points", &["failpoint"]),
    ("encodings and I/O", &["format", "io"]),
    ("vocabulary", &["key", "options", "stats", "value"]),
    ("vocabulary: write batches", &["batch"]),
    ("storage", &["storage"]),
    ("shards", &["shard"]),
    ("engine core", &["engine"]),
    ("API: transactions, the blob log, offline verification", &["transaction", "blob", "verify"]),
    ("API: typed tables", &["table"]),
    ("API: the database", &["db"]),
];

/// Lower layers a module may not use directly although the layer table allows it: the
/// API types are thin handles on the engine core, which alone reaches the shards and
/// the storage below them (`docs/ARCHITECTURE.md`, "Layers"). Each entry: the module,
/// the modules it must not use, and why.
const NOT_USED_DIRECTLY: &[(&str, &[&str], &str)] = &[
    ("db", &["shard", "storage"], "the API reaches shards and storage through the engine core"),
    ("transaction", &["shard", "storage"], "the API reaches shards and storage through the engine core"),
    ("table", &["shard", "storage"], "the API reaches shards and storage through the engine core"),
    (
        "verify",
        &["engine", "shard", "storage"],
        "offline verification reads files with std::fs and decodes them with format: it runs no engine and changes nothing",
    ),
];

/// A module path below the crate root (`["storage", "page", "store"]`).
type ModPath = Vec<String>;

#[test]
fn no_cycle_among_top_level_or_second_level_modules() {
    let graph = Graph::read(&src_dir());
    for depth in [1, 2] {
        let edges = graph.edges_at(depth);
        if let Some(cycle) = find_cycle(&edges) {
            panic!("an import cycle among the modules of depth {depth}: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn every_top_level_edge_points_down_the_layers() {
    let graph = Graph::read(&src_dir());
    let edges = graph.edges_at(1);
    let rank: HashMap<&str, usize> =
        LAYERS.iter().enumerate().flat_map(|(rank, (_, modules))| modules.iter().map(move |m| (*m, rank))).collect();
    let mut wrong = Vec::new();
    for module in graph.top_level_modules() {
        assert!(rank.contains_key(module.as_str()), "module `{module}` has no layer: add it to LAYERS");
    }
    for (from, tos) in &edges {
        for to in tos {
            let (rank_from, rank_to) = (rank[from.as_str()], rank[to.as_str()]);
            if rank_to >= rank_from {
                wrong.push(format!(
                    "`{from}` ({}) uses `{to}` ({}): {}",
                    LAYERS[rank_from].0,
                    LAYERS[rank_to].0,
                    graph.witness(from, to)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies that do not point down the layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_api_reaches_shards_and_storage_through_the_engine_only() {
    let graph = Graph::read(&src_dir());
    let edges = graph.edges_at(1);
    let modules = graph.top_level_modules();
    let mut wrong = Vec::new();
    for (from, banned, why) in NOT_USED_DIRECTLY {
        assert!(modules.contains(*from), "module `{from}` of NOT_USED_DIRECTLY exists");
        for to in *banned {
            assert!(modules.contains(*to), "module `{to}` of NOT_USED_DIRECTLY exists");
            if edges.get(*from).is_some_and(|tos| tos.contains(*to)) {
                wrong.push(format!("`{from}` uses `{to}` ({why}): {}", graph.witness(from, to)));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies that skip the engine core:\n{}", wrong.join("\n"));
}

/// Unsafe code lives in `io` only (the ring, aligned buffers, the eventfd, a few system
/// calls), where each block carries its `SAFETY:` comment; every other module is safe Rust.
#[test]
fn unsafe_code_lives_in_io_only() {
    let src = src_dir();
    let mut files = Vec::new();
    collect_files(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        if module_of(&src, &file).first().is_some_and(|m| m == "io") {
            continue;
        }
        let text = fs::read_to_string(&file).expect("a source file reads");
        if tokenize(&text).iter().any(|t| t == "unsafe") {
            found.push(file.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    assert!(found.is_empty(), "unsafe code outside src/io/: {}", found.join(", "));
}

/// The graph must see the edges the code has: a sample of them, of each kind of path.
#[test]
fn the_graph_sees_known_edges() {
    let graph = Graph::read(&src_dir());
    let top = graph.edges_at(1);
    // `use crate::shard::{...}` in the engine, and a `use` group.
    assert!(top["engine"].contains("shard"));
    // `crate::Result` in `failpoint` resolves through the root's re-export to `error`.
    assert!(top["failpoint"].contains("error"));
    let second = graph.edges_at(2);
    // `use super::ops::ShardOps` in `engine/commit`.
    assert!(second["engine/commit"].contains("engine/ops"));
    // `use super::registry::TxRegistry` in `shard/txn`.
    assert!(second["shard/txn"].contains("shard/registry"));
    // A unit test's imports are not edges: `format/compression`'s tests use nothing
    // of `format/blob`, and its code must not either.
    assert!(!second.get("format/compression").is_some_and(|to| to.contains("format/blob")));
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every reference from one module (at full depth, inline modules included) to
/// another, with where it was seen.
struct Graph {
    /// (from, to) → "file: path" of the first reference seen.
    refs: BTreeMap<(ModPath, ModPath), String>,
    modules: BTreeSet<ModPath>,
}

impl Graph {
    fn read(src: &Path) -> Graph {
        let mut files = Vec::new();
        collect_files(src, &mut files);
        assert!(files.len() > 10, "found the sources under {}", src.display());
        let mut parsed = BTreeMap::new();
        for file in &files {
            let text = fs::read_to_string(file).expect("a source file reads");
            let module = module_of(src, file);
            parsed.insert(module.clone(), (file.strip_prefix(src).unwrap().display().to_string(), parse(&text)));
        }
        let resolver = Resolver { src, parsed: &parsed };
        let mut refs = BTreeMap::new();
        for (module, (file, items)) in &parsed {
            for r in &items.refs {
                let Some(to) = resolver.resolve(&r.scope(module), &r.path, r.in_use, 0) else { continue };
                refs.entry((r.scope(module), to)).or_insert_with(|| format!("{file}: {}", r.path.join("::")));
            }
        }
        Graph { refs, modules: parsed.keys().cloned().collect() }
    }

    fn top_level_modules(&self) -> BTreeSet<String> {
        self.modules.iter().filter_map(|m| m.first().cloned()).collect()
    }

    /// The edges between modules cut to `depth` components, leaving out the crate root
    /// and edges between a module and its ancestors.
    fn edges_at(&self, depth: usize) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in self.refs.keys() {
            let (a, b) = (cut(from, depth), cut(to, depth));
            if a.is_empty() || b.is_empty() || a.starts_with(&b) || b.starts_with(&a) {
                continue;
            }
            edges.entry(a.join("/")).or_default().insert(b.join("/"));
        }
        edges
    }

    /// Where the code makes `from` (top level) use `to`.
    fn witness(&self, from: &str, to: &str) -> String {
        let seen: Vec<&str> = self
            .refs
            .iter()
            .filter(|((a, b), _)| a.first().is_some_and(|a| a == from) && b.first().is_some_and(|b| b == to))
            .map(|(_, at)| at.as_str())
            .collect();
        seen.join("; ")
    }
}

fn cut(path: &[String], depth: usize) -> Vec<String> {
    path[..path.len().min(depth)].to_vec()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir).expect("src/ lists").map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/mod.rs` and `src/a.rs` are `a`; `src/lib.rs` is the root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// A path named in a module: `in_use` for a `use` tree (whose first segment may be a
/// child module's name); `inline` the inline modules (`mod armed { … }`) it sits in.
struct Ref {
    path: Vec<String>,
    in_use: bool,
    inline: Vec<String>,
}

impl Ref {
    fn scope(&self, file_module: &[String]) -> ModPath {
        file_module.iter().chain(&self.inline).cloned().collect()
    }
}

/// What one file names: its paths and, for each name its top-level `use` items bring
/// in, the path imported (`ShardShared` → `handle::ShardShared`).
struct Parsed {
    refs: Vec<Ref>,
    imports: HashMap<String, Vec<String>>,
}

struct Resolver<'a> {
    src: &'a Path,
    parsed: &'a BTreeMap<ModPath, (String, Parsed)>,
}

impl Resolver<'_> {
    fn is_module(&self, module: &[String]) -> bool {
        let dir = module.iter().fold(self.src.to_path_buf(), |p, c| p.join(c));
        module.is_empty() || dir.with_extension("rs").is_file() || dir.join("mod.rs").is_file()
    }

    /// The module `path`, named in `scope`, refers to (or to an item of); `None` for a
    /// path outside the crate. An item a module imports resolves to where it comes from.
    fn resolve(&self, scope: &[String], path: &[String], in_use: bool, depth: usize) -> Option<ModPath> {
        assert!(depth < 32, "a re-export chain loops at {}", path.join("::"));
        let mut at: ModPath;
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => {
                at = Vec::new();
                rest = &path[1..];
            }
            Some("self") => {
                at = scope.to_vec();
                rest = &path[1..];
            }
            Some("super") => {
                at = scope.to_vec();
                while rest.first().is_some_and(|s| s == "super") {
                    at.pop();
                    rest = &rest[1..];
                }
            }
            Some(first) if in_use => {
                let child: ModPath = scope.iter().cloned().chain([first.to_string()]).collect();
                if !self.is_module(&child) {
                    return None;
                }
                at = scope.to_vec();
            }
            _ => return None,
        }
        for (i, segment) in rest.iter().enumerate() {
            let child: ModPath = at.iter().cloned().chain([segment.clone()]).collect();
            if self.is_module(&child) {
                at = child;
                continue;
            }
            // An item of `at`: defined there, or imported there from elsewhere.
            let imported = self.parsed.get(&at).and_then(|(_, p)| p.imports.get(segment));
            if let Some(source) = imported {
                let tail: Vec<String> = source.iter().chain(&rest[i + 1..]).cloned().collect();
                return self.resolve(&at, &tail, true, depth + 1).or(Some(at));
            }
            return Some(at);
        }
        Some(at)
    }
}

/// Tokens of a source with comments, literals and `#[cfg(test)]` items left out.
fn parse(text: &str) -> Parsed {
    let tokens = remove_test_items(tokenize(text));
    let mut refs = Vec::new();
    let mut imports = HashMap::new();
    // Inline modules open at a brace depth: (name, depth inside).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t == "{") => {
                inline.push((tokens[i + 1].clone(), depth + 1));
            }
            "use" => {
                let mut trees = Vec::new();
                i = parse_tree(&tokens, i + 1, Vec::new(), &mut trees);
                for (path, name) in trees {
                    if inline.is_empty() && depth == 0 {
                        if let Some(name) = name {
                            imports.insert(name, path.clone());
                        }
                    }
                    refs.push(Ref { path, in_use: true, inline: inline.iter().map(|(n, _)| n.clone()).collect() });
                }
                continue;
            }
            "crate" | "super" | "self" if tokens.get(i + 1).is_some_and(|t| t == "::") => {
                let after_dollar = i > 0 && tokens[i - 1] == "$";
                let mut trees = Vec::new();
                i = parse_tree(&tokens, i, Vec::new(), &mut trees);
                if !after_dollar {
                    for (path, _) in trees {
                        refs.push(Ref { path, in_use: false, inline: inline.iter().map(|(n, _)| n.clone()).collect() });
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Parsed { refs, imports }
}

/// Parses a use tree (or a path) from `at` under `prefix`, pushing each leaf path with
/// the name it brings into scope (`None` for a glob). Returns the index after it.
fn parse_tree(
    tokens: &[String],
    mut at: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    let is_ident = |t: &str| t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_');
    loop {
        match tokens.get(at).map(String::as_str) {
            Some("{") => {
                at += 1;
                while tokens.get(at).is_some_and(|t| t != "}") {
                    at = parse_tree(tokens, at, prefix.clone(), out);
                    if tokens.get(at).is_some_and(|t| t == ",") {
                        at += 1;
                    }
                }
                return at + 1;
            }
            Some("*") => {
                out.push((prefix, None));
                return at + 1;
            }
            Some(t) if is_ident(t) => {
                let segment = t.to_string();
                at += 1;
                if tokens.get(at).is_some_and(|t| t == "::") {
                    prefix.push(segment);
                    at += 1;
                    continue;
                }
                let mut name = segment.clone();
                if segment != "self" {
                    prefix.push(segment);
                } else if let Some(last) = prefix.last() {
                    name = last.clone();
                }
                if tokens.get(at).is_some_and(|t| t == "as") {
                    name = tokens.get(at + 1).cloned().unwrap_or_default();
                    at += 2;
                }
                if !prefix.is_empty() {
                    out.push((prefix, Some(name)));
                }
                return at;
            }
            _ => {
                if !prefix.is_empty() {
                    let name = prefix.last().cloned();
                    out.push((prefix, name));
                }
                return at;
            }
        }
    }
}

/// Drops every item under a `#[cfg(test)]` attribute: the attribute, any attributes
/// after it, and the item up to its `;` or the end of its braces.
fn remove_test_items(tokens: Vec<String>) -> Vec<String> {
    let attr = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i..].len() >= attr.len() && tokens[i..i + attr.len()].iter().zip(attr).all(|(a, b)| a == b) {
            i += attr.len();
            let mut depth = 0usize;
            while i < tokens.len() {
                let t = tokens[i].as_str();
                i += 1;
                match t {
                    "{" | "(" | "[" => depth += 1,
                    // The end of the block holding the item (a field or an arm).
                    "}" | ")" | "]" if depth == 0 => {
                        i -= 1;
                        break;
                    }
                    "}" | ")" | "]" => {
                        depth -= 1;
                        if depth == 0 && t == "}" {
                            break;
                        }
                    }
                    ";" | "," if depth == 0 => break,
                    _ => {}
                }
            }
            continue;
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

/// Identifiers, `::` and single punctuation characters; comments, string, byte-string,
/// raw-string and char literals dropped, lifetimes reduced to their name.
fn tokenize(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i = skip_block_comment(&chars, i);
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if (c == 'r' || c == 'b') && raw_string_hashes(&chars, i).is_some() {
            let (start, hashes) = raw_string_hashes(&chars, i).unwrap();
            i = skip_raw_string(&chars, start, hashes);
        } else if c == 'b' && next == Some('"') {
            i = skip_string(&chars, i + 2);
        } else if c == 'b' && next == Some('\'') {
            i = skip_char(&chars, i + 1).expect("a byte literal closes");
        } else if c == '\'' {
            i = skip_char(&chars, i).unwrap_or(i + 1);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == ':' && next == Some(':') {
            tokens.push("::".to_string());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

fn skip_block_comment(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// From just after the opening quote to just after the closing one.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// `r"`, `r#"`, `br"`, `br##"`… at `i`: where the contents start and the hash count.
fn raw_string_hashes(chars: &[char], i: usize) -> Option<(usize, usize)> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if chars[j] == 'b' {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((j + 1, hashes))
}

fn skip_raw_string(chars: &[char], mut i: usize, hashes: usize) -> usize {
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// A char literal at `i` (its opening quote): just after it; `None` for a lifetime.
fn skip_char(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        // Past the backslash and the character it escapes (`'\''`).
        let mut j = i + 3;
        while j < chars.len() && chars[j] != '\'' {
            j += 1;
        }
        return Some(j + 1);
    }
    (chars.get(i + 2) == Some(&'\'')).then_some(i + 3)
}

/// A cycle in `edges`, as the modules along it with the first repeated at the end.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search with the path on a stack: an edge back into the path closes
    // a cycle.
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        let mut path: Vec<(String, Vec<String>)> = Vec::new();
        if done.contains(start) {
            continue;
        }
        path.push((start.clone(), edges[start].iter().cloned().collect()));
        while let Some((node, pending)) = path.last_mut() {
            let Some(next) = pending.pop() else {
                done.insert(node.clone());
                path.pop();
                continue;
            };
            if let Some(at) = path.iter().position(|(n, _)| *n == next) {
                let mut cycle: Vec<String> = path[at..].iter().map(|(n, _)| n.clone()).collect();
                cycle.push(next);
                return Some(cycle);
            }
            if !done.contains(&next) {
                let pending = edges.get(&next).map(|s| s.iter().cloned().collect()).unwrap_or_default();
                path.push((next, pending));
            }
        }
    }
    None
}
