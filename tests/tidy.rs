//! The tidy test: rules about the code itself rather than what it does, checked over every
//! `.rs` file of the workspace (the root package, every crate in `[workspace] members`, any
//! crate under `examples/`: every folder below the root, skipping `target/` and hidden ones).
//! It owns these rules and their ratchet; it never edits a source file, and writes the ratchet
//! only when asked to.
//!
//! 1. **Function length.** No function (free, method, trait default method, or one nested in a
//!    body) is longer than 70 lines, counted from the first line of its signature (`pub`, `fn`)
//!    to the line of its closing brace, both included. Doc comments and attributes above it do
//!    not count, so documenting a function never pushes it over. Closures count in the function
//!    that holds them. As TigerBeetle's tidy puts it, the most value is in preventing originally
//!    small functions from growing over time.
//! 2. **Module doc.** Every file starts with its module doc (`//!` lines or `#![doc = ...]`),
//!    before any other attribute or item: what the module owns and what it must never do. Crate
//!    roots are modules too: `lib.rs`, `main.rs` (the program's doc), each file of `tests/`,
//!    `benches/` and `examples/` (what it tests or shows), and `build.rs` (what it generates).
//!    Plain `//` comments, a licence header say, may come before it.
//! 3. **No import circles.** In each crate (one per crate root: `src/lib.rs`, `src/main.rs`,
//!    each test, bench, example and build script), the top-level modules must not import each
//!    other in a circle; a submodule of `a` counts as `a`. An import is any path that names
//!    another top-level module: `crate::b::..`, a `super::` that climbs to the crate root, a
//!    name the crate root re-exports from `b`, in `use`, in code and in macro invocations. Code
//!    under `#[cfg(test)]` does not count: unit tests may use any module.
//!
//! **The ratchet.** `tests/tidy-ratchet.txt` lists what broke these rules when it was written,
//! one line each: `PATH FN LINES` (a function and its length) and `PATH no-module-doc`. A
//! circle is never allowed: none is left, so one is always a failure, listed or not. The test
//! fails on anything new, on a listed function that grew, and on a line the tree no longer
//! matches (the function shrank, was split, renamed or moved; the file got its doc), so the list only
//! ever shrinks. After such a change, or after moving files, rewrite it from the tree with
//! `TIDY_UPDATE=1 cargo test --test tidy` and review the diff: it must only lose lines, lower
//! numbers or change paths.
//!
//! Functions are named `Type::method` (`impl Trait for Type` too), `Trait::method` (a default
//! body), `outer::inner` (nested), `module::f` (inline modules such as `tests`); a name that
//! occurs twice in a file gets `#2`, `#3`... in source order. Every output is sorted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::{self, Visit};

/// The longest a function may be, in lines.
const FN_LINES_MAX: usize = 70;
/// The ratchet, from the workspace root.
const RATCHET: &str = "tests/tidy-ratchet.txt";
/// The command that rewrites the ratchet.
const UPDATE: &str = "TIDY_UPDATE=1 cargo test --test tidy";
/// Circles are listed one by one; past this many in one crate, the crate's modules are a knot.
const CYCLES_MAX: usize = 1_000;

/// Something that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Finding {
    LongFn {
        path: String,
        name: String,
        line: usize,
        lines: usize,
    },
    NoDoc {
        path: String,
        why: &'static str,
    },
    Cycle {
        root: String,
        cycle: Vec<String>,
        evidence: Vec<String>,
    },
}

impl Finding {
    /// The ratchet line that allows it, less a function's length.
    fn key(&self) -> String {
        match self {
            Finding::LongFn { path, name, .. } => format!("{path} {name}"),
            Finding::NoDoc { path, .. } => format!("{path} no-module-doc"),
            Finding::Cycle { root, cycle, .. } => format!("{root} cycle {}", cycle.join(" -> ")),
        }
    }

    /// Its whole ratchet line.
    fn ratchet_line(&self) -> String {
        match self {
            Finding::LongFn { lines, .. } => format!("{} {lines}", self.key()),
            _ => self.key(),
        }
    }
}

/// What the checks saw: the findings, and every function's `(line, lines)` by ratchet key.
#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
    fns: BTreeMap<String, (usize, usize)>,
}

/// A message for the developer, sorted by where it points.
type Problem = (String, usize, String);

#[test]
fn tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let (crate_dirs, sources) = read_workspace(root, &mut problems);
    let report = check(&crate_dirs, &sources);
    if std::env::var_os("TIDY_UPDATE").is_some_and(|v| v == "1") {
        let text = ratchet_text(&report.findings);
        fs::write(root.join(RATCHET), text).expect("write the ratchet");
        eprintln!("tidy: wrote {RATCHET}: {}", summary(&report.findings));
    } else {
        let text = fs::read_to_string(root.join(RATCHET)).unwrap_or_else(|e| {
            panic!("tidy: cannot read {RATCHET} ({e}): create it with `{UPDATE}`")
        });
        let ratchet = parse_ratchet(&text, &mut problems);
        problems.extend(compare(&report, &ratchet));
    }
    problems.sort();
    problems.dedup();
    let messages: Vec<&str> = problems.iter().map(|(_, _, m)| m.as_str()).collect();
    assert!(
        messages.is_empty(),
        "tidy: {} problem(s) (rules: tests/tidy.rs):\n{}\n",
        messages.len(),
        messages.join("\n")
    );
}

/// Every crate folder (one holding a `Cargo.toml`) and every parsed `.rs` file, by path from the
/// root with `/` separators. A file that does not parse is a problem, not a finding.
fn read_workspace(
    root: &Path,
    problems: &mut Vec<Problem>,
) -> (Vec<String>, BTreeMap<String, syn::File>) {
    let mut crate_dirs = Vec::new();
    let mut files = Vec::new();
    walk(root, "", &mut crate_dirs, &mut files);
    let mut sources = BTreeMap::new();
    for path in files {
        let text = fs::read_to_string(root.join(&path)).expect("read a source file");
        match syn::parse_file(&text) {
            Ok(file) => {
                sources.insert(path, file);
            }
            Err(e) => {
                let line = e.span().start().line;
                let message = format!("{path}:{line}: does not parse ({e}); fix it first");
                problems.push((path, line, message));
            }
        }
    }
    crate_dirs.sort();
    (crate_dirs, sources)
}

/// Collects the crate folders and `.rs` files under `rel`, skipping `target/` and hidden folders.
fn walk(root: &Path, rel: &str, crate_dirs: &mut Vec<String>, files: &mut Vec<String>) {
    let dir = root.join(rel);
    if dir.join("Cargo.toml").is_file() {
        crate_dirs.push(rel.to_string());
    }
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .expect("read a folder")
        .map(|e| e.expect("read a folder entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = join(rel, &name);
        let kind = entry.file_type().expect("stat a folder entry");
        if kind.is_dir() && !name.starts_with('.') && name != "target" {
            walk(root, &path, crate_dirs, files);
        } else if kind.is_file() && name.ends_with(".rs") {
            files.push(path);
        }
    }
}

/// `dir/rel`, with `.` and `..` resolved; paths are relative to the workspace root.
fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// The folder of a path (`""` for a file at the root).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Runs every rule over the parsed files.
fn check(crate_dirs: &[String], sources: &BTreeMap<String, syn::File>) -> Report {
    let mut report = Report::default();
    for (path, file) in sources {
        if let Some(why) = doc_problem(file) {
            let path = path.clone();
            report.findings.push(Finding::NoDoc { path, why });
        }
        for (name, line, lines) in functions(file) {
            report.fns.insert(format!("{path} {name}"), (line, lines));
            if lines > FN_LINES_MAX {
                let (path, line) = (path.clone(), line);
                report.findings.push(Finding::LongFn {
                    path,
                    name,
                    line,
                    lines,
                });
            }
        }
    }
    for root in crate_roots(crate_dirs, sources) {
        report.findings.extend(circles(&root, sources));
    }
    report.findings.sort_by_key(Finding::key);
    report
}

// ---------------------------------------------------------------------------------------------
// Module docs

/// Why a file does not start with its module doc, if it does not.
fn doc_problem(file: &syn::File) -> Option<&'static str> {
    let leading: Vec<&syn::Attribute> = file.attrs.iter().take_while(|a| is_doc(a)).collect();
    if leading.is_empty() && file.attrs.iter().any(is_doc) {
        return Some("its module doc comes after another inner attribute; put the doc first");
    }
    if leading.is_empty() {
        return Some("it does not start with its module doc");
    }
    let empty = leading.iter().all(|a| match &a.meta {
        syn::Meta::NameValue(syn::MetaNameValue {
            value:
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }),
            ..
        }) => s.value().trim().is_empty(),
        _ => false,
    });
    empty.then_some("its module doc is empty")
}

/// Whether an attribute is doc text (`//!`, `///`, `#[doc = ...]`), not `#[doc(hidden)]`.
fn is_doc(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("doc") && matches!(attr.meta, syn::Meta::NameValue(_))
}

// ---------------------------------------------------------------------------------------------
// Function length

/// Every function with a body in a file: its name, first line and length in lines.
fn functions(file: &syn::File) -> Vec<(String, usize, usize)> {
    let mut visitor = FnVisitor::default();
    visitor.visit_file(file);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut found = visitor.found;
    found.sort_by_key(|&(_, line, _)| line);
    for (name, _, _) in &mut found {
        let count = seen.entry(name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            *name = format!("{name}#{count}");
        }
    }
    found
}

/// Walks a file, keeping the names of the modules, impls, traits and functions it is inside.
#[derive(Default)]
struct FnVisitor {
    scope: Vec<String>,
    found: Vec<(String, usize, usize)>,
}

impl FnVisitor {
    /// Records one function, then walks its body with its name in scope.
    fn function(
        &mut self,
        vis: &syn::Visibility,
        sig: &syn::Signature,
        block: &syn::Block,
        walk: impl FnOnce(&mut Self),
    ) {
        let start = match vis {
            syn::Visibility::Inherited => sig.span().start().line,
            _ => vis.span().start().line,
        };
        let end = block.brace_token.span.close().start().line;
        let name = self.name(&sig.ident.to_string());
        self.found.push((name, start, end + 1 - start));
        self.scoped(sig.ident.to_string(), walk);
    }

    fn name(&self, ident: &str) -> String {
        let mut parts = self.scope.clone();
        parts.push(ident.to_string());
        parts.join("::")
    }

    fn scoped(&mut self, name: String, walk: impl FnOnce(&mut Self)) {
        self.scope.push(name);
        walk(self);
        self.scope.pop();
    }
}

impl<'ast> Visit<'ast> for FnVisitor {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.scoped(m.ident.to_string(), |v| visit::visit_item_mod(v, m));
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        self.scoped(type_name(&i.self_ty), |v| visit::visit_item_impl(v, i));
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        self.scoped(t.ident.to_string(), |v| visit::visit_item_trait(v, t));
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.function(&f.vis, &f.sig, &f.block, |v| visit::visit_item_fn(v, f));
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.function(&f.vis, &f.sig, &f.block, |v| {
            visit::visit_impl_item_fn(v, f)
        });
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        match &f.default {
            Some(block) => {
                let vis = syn::Visibility::Inherited;
                self.function(&vis, &f.sig, block, |v| visit::visit_trait_item_fn(v, f));
            }
            None => visit::visit_trait_item_fn(self, f),
        }
    }
}

/// The name an impl block's functions are listed under: its type's last path segment.
fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => match p.path.segments.last() {
            Some(segment) => segment.ident.to_string(),
            None => "_".to_string(),
        },
        syn::Type::Reference(r) => type_name(&r.elem),
        syn::Type::Paren(p) => type_name(&p.elem),
        syn::Type::Group(g) => type_name(&g.elem),
        syn::Type::Slice(s) => format!("[{}]", type_name(&s.elem)),
        syn::Type::Array(a) => format!("[{};_]", type_name(&a.elem)),
        syn::Type::Ptr(p) => type_name(&p.elem),
        syn::Type::TraitObject(t) => t
            .bounds
            .iter()
            .find_map(|bound| match bound {
                syn::TypeParamBound::Trait(t) => t.path.segments.last(),
                _ => None,
            })
            .map_or("_".to_string(), |segment| format!("dyn-{}", segment.ident)),
        _ => "_".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Import circles

/// The crate roots in each crate folder: library, binaries, tests, benches, examples, build.
fn crate_roots(crate_dirs: &[String], sources: &BTreeMap<String, syn::File>) -> Vec<String> {
    let mut roots = BTreeSet::new();
    for dir in crate_dirs {
        for name in ["src/lib.rs", "src/main.rs", "build.rs"] {
            roots.insert(join(dir, name));
        }
        for folder in ["src/bin", "tests", "benches", "examples"] {
            let folder = join(dir, folder);
            for path in sources.keys() {
                let Some(rest) = path.strip_prefix(&folder).and_then(|r| r.strip_prefix('/'))
                else {
                    continue;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                if parts.len() == 1 || (parts.len() == 2 && parts[1] == "main.rs") {
                    roots.insert(path.clone());
                }
            }
        }
    }
    roots.retain(|r| sources.contains_key(r));
    roots.into_iter().collect()
}

/// One file of a crate: the module it holds and whether all of it is `#[cfg(test)]`.
struct Unit<'a> {
    path: &'a str,
    module: Vec<String>,
    test_only: bool,
}

/// Every file of the crate rooted at `root`, following `mod` declarations (and `#[path]`).
fn crate_files<'a>(root: &'a str, sources: &'a BTreeMap<String, syn::File>) -> Vec<Unit<'a>> {
    let mut units = Vec::new();
    let mut stack = vec![Unit {
        path: root,
        module: Vec::new(),
        test_only: false,
    }];
    while let Some(unit) = stack.pop() {
        if units.iter().any(|u: &Unit| u.path == unit.path) {
            continue;
        }
        let file_name = unit.path.rsplit('/').next().unwrap_or_default();
        let is_dir_owner = unit.module.is_empty() || file_name == "mod.rs";
        let children = match is_dir_owner {
            true => parent(unit.path).to_string(),
            false => unit.path.trim_end_matches(".rs").to_string(),
        };
        let decls = ModDecls {
            file_dir: parent(unit.path),
            children: &children,
        };
        decls.collect(&sources[unit.path].items, &unit, &[], sources, &mut stack);
        units.push(unit);
    }
    units.sort_by(|a, b| a.path.cmp(b.path));
    units
}

/// Where a file's `mod x;` declarations find their files.
struct ModDecls<'d> {
    file_dir: &'d str,
    children: &'d str,
}

impl ModDecls<'_> {
    /// Pushes the file of every `mod x;` in `items` (inside the inline modules `inline`).
    fn collect<'a>(
        &self,
        items: &[syn::Item],
        unit: &Unit<'a>,
        inline: &[String],
        sources: &'a BTreeMap<String, syn::File>,
        out: &mut Vec<Unit<'a>>,
    ) {
        for item in items {
            let syn::Item::Mod(m) = item else { continue };
            let name = m.ident.to_string();
            let test_only = unit.test_only || is_test_only(&m.attrs);
            let mut module = unit.module.clone();
            module.extend(inline.iter().cloned());
            module.push(name.clone());
            if let Some((_, items)) = &m.content {
                let mut nested = inline.to_vec();
                nested.push(name);
                let inner = Unit {
                    path: unit.path,
                    module: unit.module.clone(),
                    test_only,
                };
                self.collect(items, &inner, &nested, sources, out);
                continue;
            }
            let dir = join(self.children, &inline.join("/"));
            let candidates = match path_attr(&m.attrs) {
                Some(p) if inline.is_empty() => vec![join(self.file_dir, &p)],
                Some(p) => vec![join(&dir, &p)],
                None => vec![
                    join(&dir, &format!("{name}.rs")),
                    join(&dir, &format!("{name}/mod.rs")),
                ],
            };
            if let Some((path, _)) = candidates.iter().find_map(|c| sources.get_key_value(c)) {
                out.push(Unit {
                    path: path.as_str(),
                    module,
                    test_only,
                });
            }
        }
    }
}

/// The value of a `#[path = "..."]` attribute.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Whether attributes make an item test-only: `#[cfg(test)]` or `#[cfg(all(test, ...))]`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if !a.path().is_ident("cfg") {
            return false;
        }
        match a.parse_args::<syn::Meta>() {
            Ok(syn::Meta::Path(p)) => p.is_ident("test"),
            Ok(syn::Meta::List(list)) if list.path.is_ident("all") => list
                .parse_args_with(
                    syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
                )
                .is_ok_and(|metas| metas.iter().any(|m| m.path().is_ident("test"))),
            _ => false,
        }
    })
}

/// The top-level modules of a crate and the names its root re-exports from them.
struct CrateNames {
    modules: BTreeSet<String>,
    reexports: BTreeMap<String, String>,
}

impl CrateNames {
    fn of(root: &syn::File) -> CrateNames {
        let mut names = CrateNames {
            modules: BTreeSet::new(),
            reexports: BTreeMap::new(),
        };
        for item in &root.items {
            if let syn::Item::Mod(m) = item {
                names.modules.insert(m.ident.to_string());
            }
        }
        for item in &root.items {
            let syn::Item::Use(u) = item else { continue };
            let mut leaves = Vec::new();
            use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
            for (path, alias, _) in leaves {
                let Some(first) = path.iter().find(|s| *s != "crate" && *s != "self") else {
                    continue;
                };
                if let (true, Some(alias)) = (names.modules.contains(first), alias) {
                    names.reexports.insert(alias, first.clone());
                }
            }
        }
        names
    }

    /// The top-level module a name at the crate root stands for.
    fn top(&self, name: &str) -> Option<&str> {
        match self.modules.get(name) {
            Some(module) => Some(module),
            None => self.reexports.get(name).map(String::as_str),
        }
    }
}

/// The paths a `use` tree imports, each with the name it binds (`None` for a glob) and a line.
fn use_leaves(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) {
    let line = tree.span().start().line;
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            path.push(n.ident.to_string());
            out.push((path, Some(n.ident.to_string()), line));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            path.push(r.ident.to_string());
            out.push((path, Some(r.rename.to_string()), line));
        }
        syn::UseTree::Glob(_) => out.push((prefix.clone(), None, line)),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_leaves(tree, prefix, out);
            }
        }
    }
}

/// The import graph between top-level modules: `(from, to)` and where it was first seen.
type Edges = BTreeMap<(String, String), String>;

/// Walks one file's code, noting each path that names another top-level module.
struct ImportVisitor<'a> {
    names: &'a CrateNames,
    path: &'a str,
    module: Vec<String>,
    edges: &'a mut Edges,
}

impl ImportVisitor<'_> {
    /// Notes the module a path (as segments) leads to, if it is another top-level one.
    fn note(&mut self, segments: &[String], line: usize) {
        let Some(from) = self.module.first() else {
            return;
        };
        let Some(target) = resolve(&self.module, segments) else {
            return;
        };
        let Some(to) = self.names.top(target) else {
            return;
        };
        if to != from {
            let key = (from.clone(), to.to_string());
            self.edges
                .entry(key)
                .or_insert_with(|| format!("{}:{line}", self.path));
        }
    }

    /// Notes the `crate::` and `super::` paths among a macro's tokens (`$crate::` too).
    fn note_tokens(&mut self, tokens: TokenStream) {
        let mut flat = Vec::new();
        flatten(tokens, &mut flat);
        let mut i = 0;
        while i < flat.len() {
            let mut segments = Vec::new();
            let line = flat[i].1;
            while let Some((Some(ident), _, _)) = flat.get(i) {
                segments.push(ident.clone());
                let is_path_separator = flat.get(i + 1).is_some_and(|t| t.0.is_none() && t.2);
                i += if is_path_separator { 2 } else { 1 };
                if !is_path_separator {
                    break;
                }
            }
            let rooted = segments
                .first()
                .is_some_and(|s| s == "crate" || s == "super");
            if rooted {
                self.note(&segments, line);
            }
            i += usize::from(segments.is_empty());
        }
    }
}

/// A macro's tokens in a row: `(Some(ident), line, _)` or `(None, line, is "::")`.
fn flatten(tokens: TokenStream, out: &mut Vec<(Option<String>, usize, bool)>) {
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        let line = token.span().start().line;
        match token {
            TokenTree::Ident(ident) => out.push((Some(ident.to_string()), line, false)),
            TokenTree::Group(group) => {
                out.push((None, line, false));
                flatten(group.stream(), out);
                out.push((None, line, false));
            }
            TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint => {
                let second =
                    matches!(tokens.peek(), Some(TokenTree::Punct(q)) if q.as_char() == ':');
                if second {
                    tokens.next();
                }
                out.push((None, line, second));
            }
            _ => out.push((None, line, false)),
        }
    }
}

/// The crate-root name a path leads to from `module` (not the root), if it leaves its
/// top-level module through the root: `crate::x`, or `super::x` climbing to the root. A bare
/// path or `self::` stays inside; `::x` is another crate.
fn resolve<'s>(module: &[String], segments: &'s [String]) -> Option<&'s str> {
    let at = match segments.first()?.as_str() {
        "crate" => 1,
        "super" => segments.iter().take_while(|s| *s == "super").count(),
        _ => return None,
    };
    let climbs_to_root = segments[0] == "crate" || at == module.len();
    climbs_to_root
        .then(|| segments.get(at).map(String::as_str))
        .flatten()
}

impl<'ast> Visit<'ast> for ImportVisitor<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if is_test_only(item_attrs(item)) {
            return;
        }
        match item {
            syn::Item::Mod(syn::ItemMod {
                ident,
                content: Some((_, items)),
                ..
            }) => {
                self.module.push(ident.to_string());
                items.iter().for_each(|item| self.visit_item(item));
                self.module.pop();
            }
            syn::Item::Use(u) => {
                let mut leaves = Vec::new();
                use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
                for (path, _, line) in leaves {
                    self.note(&path, line);
                }
            }
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs = match item {
            syn::ImplItem::Fn(f) => &f.attrs[..],
            syn::ImplItem::Const(c) => &c.attrs[..],
            syn::ImplItem::Type(t) => &t.attrs[..],
            _ => &[],
        };
        if !is_test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.note(&segments, path.span().start().line);
        }
        visit::visit_path(self, path);
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.note_tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// An item's attributes.
fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The import circles between the top-level modules of the crate rooted at `root`.
fn circles(root: &str, sources: &BTreeMap<String, syn::File>) -> Vec<Finding> {
    let names = CrateNames::of(&sources[root]);
    let mut edges = Edges::new();
    for unit in crate_files(root, sources) {
        if unit.test_only {
            continue;
        }
        let mut visitor = ImportVisitor {
            names: &names,
            path: unit.path,
            module: unit.module,
            edges: &mut edges,
        };
        visitor.visit_file(&sources[unit.path]);
    }
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().insert(to);
    }
    let cycles = elementary_cycles(&graph);
    assert!(
        cycles.len() <= CYCLES_MAX,
        "tidy: {root}: over {CYCLES_MAX} import circles between its top-level modules; \
         untangle them before listing them"
    );
    cycles
        .into_iter()
        .map(|cycle| {
            let evidence = cycle
                .windows(2)
                .map(|w| {
                    format!(
                        "{} -> {} at {}",
                        w[0],
                        w[1],
                        edges[&(w[0].clone(), w[1].clone())]
                    )
                })
                .collect();
            Finding::Cycle {
                root: root.to_string(),
                cycle,
                evidence,
            }
        })
        .collect()
}

/// Every elementary circle of a graph, each starting and ending at its smallest node, sorted.
fn elementary_cycles(graph: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<Vec<String>> {
    let mut cycles = Vec::new();
    for &start in graph.keys() {
        let mut path = vec![start];
        let mut next = vec![graph[start].iter()];
        while let Some(successors) = next.last_mut() {
            let Some(&node) = successors.next() else {
                next.pop();
                path.pop();
                continue;
            };
            if node == start {
                let mut cycle: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                cycle.push(start.to_string());
                cycles.push(cycle);
            } else if node > start && !path.contains(&node) && graph.contains_key(node) {
                path.push(node);
                next.push(graph[node].iter());
            }
            if cycles.len() > CYCLES_MAX {
                return cycles;
            }
        }
    }
    cycles.sort();
    cycles
}

// ---------------------------------------------------------------------------------------------
// The ratchet

/// A ratchet line: where it is, and a function's allowed length.
struct Entry {
    line: usize,
    lines: Option<usize>,
}

/// The ratchet's entries by key; malformed or repeated lines are problems.
fn parse_ratchet(text: &str, problems: &mut Vec<Problem>) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let words: Vec<&str> = raw.split_whitespace().collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let entry = match words.len() {
            2 if words[1] == "no-module-doc" => Some((words.join(" "), None)),
            3 => words[2]
                .parse()
                .ok()
                .map(|n| (format!("{} {}", words[0], words[1]), Some(n))),
            n if n >= 5 && words[1] == "cycle" => Some((words.join(" "), None)),
            _ => None,
        };
        let Some((key, lines)) = entry else {
            let message = format!(
                "{RATCHET}:{line}: not a ratchet line (`PATH FN LINES`, `PATH no-module-doc` or \
                 `ROOT cycle a -> b -> a`): fix it or rewrite the file with `{UPDATE}`"
            );
            problems.push((RATCHET.to_string(), line, message));
            continue;
        };
        if entries.insert(key.clone(), Entry { line, lines }).is_some() {
            let message = format!("{RATCHET}:{line}: `{key}` is listed twice: remove one");
            problems.push((RATCHET.to_string(), line, message));
        }
    }
    entries
}

/// What differs between the tree and the ratchet: new findings, grown functions, stale lines.
fn compare(report: &Report, ratchet: &BTreeMap<String, Entry>) -> Vec<Problem> {
    let found: BTreeSet<String> = report.findings.iter().map(Finding::key).collect();
    let stale: Vec<(&String, &Entry)> = ratchet
        .iter()
        .filter(|(key, _)| !found.contains(*key))
        .collect();
    let mut problems = Vec::new();
    for finding in &report.findings {
        let entry = ratchet.get(&finding.key());
        problems.extend(finding_problem(finding, entry, &stale));
    }
    for (key, entry) in stale {
        problems.push(stale_problem(key, entry, report));
    }
    problems
}

/// The problem with one finding, if the ratchet does not allow it as it is.
fn finding_problem(
    finding: &Finding,
    entry: Option<&Entry>,
    stale: &[(&String, &Entry)],
) -> Option<Problem> {
    let message = match (finding, entry) {
        (Finding::LongFn { .. }, _) => return long_fn_problem(finding, entry, stale),
        (Finding::NoDoc { .. }, Some(_)) => return None,
        (Finding::NoDoc { path, why }, None) => format!(
            "{path}:1: {why}: begin the file with `//!` lines saying what the module owns and \
             what it must never do"
        ),
        (
            Finding::Cycle {
                root,
                cycle,
                evidence,
            },
            _,
        ) => format!(
            "{root}: its top-level modules import each other in a circle, {} ({}): make the \
             imports run one way, moving what both need into a module of its own",
            cycle.join(" -> "),
            evidence.join(", ")
        ),
    };
    let (path, line) = match finding {
        Finding::NoDoc { path, .. } => (path, 1),
        Finding::Cycle { root, .. } | Finding::LongFn { path: root, .. } => (root, 0),
    };
    Some((path.clone(), line, message))
}

/// The problem with a function over the limit: new, grown, or shorter than its ratchet line.
fn long_fn_problem(
    finding: &Finding,
    entry: Option<&Entry>,
    stale: &[(&String, &Entry)],
) -> Option<Problem> {
    let Finding::LongFn {
        path,
        name,
        line,
        lines,
    } = finding
    else {
        return None;
    };
    let (line, lines) = (*line, *lines);
    let message = match entry {
        None => {
            let moved = stale.iter().find(|(key, e)| {
                e.lines.is_some() && key.split_once(' ').map(|k| k.1) == Some(name)
            });
            let hint = match moved {
                Some((key, _)) => format!(
                    "; the ratchet lists `{key}`: if only the file moved, rewrite the ratchet \
                     with `{UPDATE}`"
                ),
                None => String::new(),
            };
            format!(
                "{path}:{line}: fn {name} is {lines} lines, over the limit of {FN_LINES_MAX} \
                 (from its signature to its closing brace): split it into smaller functions{hint}"
            )
        }
        Some(e) if lines > e.lines.unwrap_or(0) => format!(
            "{path}:{line}: fn {name} grew to {lines} lines; {RATCHET}:{} allows it {}, and a \
             function over {FN_LINES_MAX} lines may only shrink: split it rather than grow it",
            e.line,
            e.lines.unwrap_or(0)
        ),
        Some(e) if lines < e.lines.unwrap_or(0) => format!(
            "{path}:{line}: fn {name} shrank to {lines} lines from {}: tighten the ratchet, set \
             {RATCHET}:{} to {lines} (or run `{UPDATE}`)",
            e.lines.unwrap_or(0),
            e.line
        ),
        Some(_) => return None,
    };
    Some((path.clone(), line, message))
}

/// The problem with a ratchet line that the tree no longer matches.
fn stale_problem(key: &str, entry: &Entry, report: &Report) -> Problem {
    let line = entry.line;
    let tighten = format!("remove {RATCHET}:{line} (or run `{UPDATE}`)");
    let (path, rest) = key.split_once(' ').unwrap_or((key, ""));
    if let Some(&(at, lines)) = report.fns.get(key) {
        let message = format!(
            "{path}:{at}: fn {rest} is {lines} lines now, within the limit of {FN_LINES_MAX}: \
             tighten the ratchet: {tighten}"
        );
        return (path.to_string(), at, message);
    }
    let message = if entry.lines.is_some() {
        format!(
            "{RATCHET}:{line}: {path} has no fn {rest} any more (removed, renamed or moved): \
             tighten the ratchet: {tighten}"
        )
    } else if rest == "no-module-doc" {
        format!("{RATCHET}:{line}: {path} starts with its module doc now: {tighten}")
    } else {
        format!("{RATCHET}:{line}: `{key}` is no longer a circle in {path}: {tighten}")
    };
    (RATCHET.to_string(), line, message)
}

/// The ratchet that allows exactly `findings`.
fn ratchet_text(findings: &[Finding]) -> String {
    // A circle is never allowed, so it is never written (the test fails on it instead).
    let lines: BTreeSet<String> = findings
        .iter()
        .filter(|f| !matches!(f, Finding::Cycle { .. }))
        .map(Finding::ratchet_line)
        .collect();
    let mut text = format!(
        "# What tests/tidy.rs allows today and nothing more; it may only shrink.\n\
         #   PATH FN LINES                 a function over {FN_LINES_MAX} lines, at most LINES\n\
         #   PATH no-module-doc            a file that does not start with its module doc\n\
         # Rewrite it from the tree with `{UPDATE}`.\n"
    );
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Counts of the findings, for the developer who rewrote the ratchet.
fn summary(findings: &[Finding]) -> String {
    let mut long = 0;
    let mut longest: Option<(usize, String)> = None;
    let (mut docs, mut cycles) = (0, 0);
    for finding in findings {
        match finding {
            Finding::LongFn {
                path, name, lines, ..
            } => {
                long += 1;
                if longest.as_ref().is_none_or(|(n, _)| lines > n) {
                    longest = Some((*lines, format!("{path} {name}")));
                }
            }
            Finding::NoDoc { .. } => docs += 1,
            Finding::Cycle { .. } => cycles += 1,
        }
    }
    let longest = longest.map_or(String::new(), |(n, f)| {
        format!(" (longest: {f}, {n} lines)")
    });
    format!("{long} long functions{longest}, {docs} files without a module doc, {cycles} circles")
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests, on sources in memory

/// Parses `(path, text)` pairs as a workspace with one crate folder, `x`.
fn in_memory(files: &[(&str, &str)]) -> Report {
    let sources = files
        .iter()
        .map(|(path, text)| (path.to_string(), syn::parse_file(text).expect("parse")))
        .collect();
    check(&["x".to_string()], &sources)
}

#[test]
fn lengths_count_from_signature_to_closing_brace() {
    let body = "    let _ = 1;\n".repeat(FN_LINES_MAX - 2);
    let long = format!("//! m\n/// doc\n#[inline]\npub fn long() {{\n{body}    let _ = 2;\n}}\n");
    let exact = format!("//! m\nimpl A {{\n    fn exact() {{\n{body}    }}\n}}\n");
    let report = in_memory(&[("x/src/a.rs", &long), ("x/src/b.rs", &exact)]);
    assert_eq!(report.fns["x/src/a.rs long"], (4, FN_LINES_MAX + 1));
    assert_eq!(report.fns["x/src/b.rs A::exact"], (3, FN_LINES_MAX));
    let keys: Vec<String> = report.findings.iter().map(Finding::ratchet_line).collect();
    assert_eq!(keys, [format!("x/src/a.rs long {}", FN_LINES_MAX + 1)]);
}

#[test]
fn names_nest_and_repeat() {
    let text = "//! m\nmod tests { fn t() { fn inner() {} } }\ntrait T { fn d() {} fn n(); }\n\
                impl std::fmt::Debug for S { fn fmt() {} }\n\
                impl std::fmt::Display for S { fn fmt() {} }\n";
    let names: Vec<String> = functions(&syn::parse_file(text).unwrap())
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(
        names,
        ["tests::t", "tests::t::inner", "T::d", "S::fmt", "S::fmt#2"]
    );
}

#[test]
fn module_doc_comes_first() {
    let report = in_memory(&[
        ("x/src/a.rs", "// licence\n//! owns a\nfn f() {}\n"),
        ("x/src/b.rs", "#![allow(dead_code)]\n//! owns b\n"),
        ("x/src/c.rs", "//!\nfn f() {}\n"),
        ("x/build.rs", "fn main() {}\n"),
    ]);
    let docs: Vec<String> = report.findings.iter().map(Finding::key).collect();
    assert_eq!(
        docs,
        [
            "x/build.rs no-module-doc",
            "x/src/b.rs no-module-doc",
            "x/src/c.rs no-module-doc"
        ]
    );
}

#[test]
fn circles_through_crate_super_reexports_and_macros() {
    let report = in_memory(&[
        (
            "x/src/lib.rs",
            "//! r\nmod a;\nmod b;\nmod c { fn f() { crate::a::f() } }\npub use b::B;\n",
        ),
        (
            "x/src/a.rs",
            "//! a\nuse crate::B;\n#[cfg(test)]\nmod tests { use crate::c::*; }\n",
        ),
        ("x/src/b/mod.rs", "//! b\nmod d;\n"),
        (
            "x/src/b/d.rs",
            "//! d\nfn g() { super::super::a::f(); println!(\"{}\", crate::c::X); }\n",
        ),
    ]);
    let cycles: Vec<String> = report.findings.iter().map(Finding::key).collect();
    assert_eq!(
        cycles,
        [
            "x/src/lib.rs cycle a -> b -> a",
            "x/src/lib.rs cycle a -> b -> c -> a"
        ]
    );
}

#[test]
fn the_ratchet_only_shrinks() {
    let report = in_memory(&[(
        "x/src/a.rs",
        &format!("//! a\nfn f() {{\n{}}}\n", "\n".repeat(80)),
    )]);
    assert_eq!(report.fns["x/src/a.rs f"], (2, 82));
    let outcome = |ratchet: &str| {
        let mut problems = Vec::new();
        let entries = parse_ratchet(ratchet, &mut problems);
        problems.extend(compare(&report, &entries));
        problems.into_iter().map(|(_, _, m)| m).collect::<Vec<_>>()
    };
    assert!(outcome("x/src/a.rs f 82\n").is_empty());
    assert!(outcome("")[0].contains("is 82 lines, over the limit"));
    assert!(outcome("x/src/a.rs f 81\n")[0].contains("grew to 82 lines"));
    assert!(outcome("x/src/a.rs f 90\n")[0].contains("shrank to 82 lines from 90"));
    let gone = outcome("x/src/a.rs f 82\nx/src/a.rs g 75\nx/src/a.rs no-module-doc\n");
    assert!(gone[0].contains("has no fn g any more"), "{gone:?}");
    assert!(
        gone[1].contains("starts with its module doc now"),
        "{gone:?}"
    );
    assert!(outcome("x/src/a.rs f\n")[0].contains("not a ratchet line"));
}
