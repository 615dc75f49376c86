//! Every schema the operations use, copied out of the document once, made readable for the
//! engine, and compiled once.
//!
//! 1. **Collect.** From each operation's schema, follow `$ref`s and copy each schema reached
//!    into a slot of its own in a new document, rewriting each `$ref` to the slot it names.
//!    Components nothing references are never looked at; a `$ref` to nowhere refuses the
//!    document, naming where it is. Each slot remembers its pointer in the vendor's document,
//!    and every problem is reported there.
//! 2. **Check.** Validate every slot against the 2020-12 meta-schema (after
//!    [`dialect::normalise`]). What is not valid JSON Schema is loosened away with a warning,
//!    never in a way that refuses more ([`remedy`]): a keyword is removed, a subschema in a
//!    list or map made `true`, and below `not`, `if` or a `oneOf` alternative the outermost of
//!    those goes instead. A schema that is `null` refuses the document. `pattern`s are
//!    [translated](super::pattern); one the engine still cannot compile goes the same way.
//! 3. **Compile.** [`dialect::restructure`], then one registry for the whole copy, and one
//!    validator per distinct schema however many operations share it.
//!
//! The vendor's document itself is never changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Registry};
use serde_json::{Map, Value, json};

use super::dialect::{self, Dialect};
use super::pattern;
use super::schema::{RequestSchema, SPEC_URI};
use super::shape::{Shape, Shapes};
use super::walk::{self, Holds, each_schema_mut, holds, push, tokens};
use super::{SpecError, SpecWarning};

/// How a request may treat `readOnly` properties, which only responses carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadOnly {
    /// A request need not send them (even where `required` lists them) and may.
    #[default]
    Allow,
    /// A request need not send them and may not.
    Refuse,
}

/// Which side of the exchange a set of schemas checks: a property only the other side sends
/// is never required of this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// Requests: `readOnly` properties are the server's.
    Request(ReadOnly),
    /// Responses: `writeOnly` properties are the client's.
    Response,
}

/// The request schemas of a document, compiled, and the shapes asked for.
#[derive(Default)]
pub(super) struct Compiled {
    /// By the pointer of each root.
    pub schemas: HashMap<String, Arc<RequestSchema>>,
    /// By the pointer of each root a shape was asked for.
    pub shapes: HashMap<String, Arc<Shape>>,
}

/// Compiles the schema at each pointer of `roots` (pointers into `doc`) as `view` sees them,
/// sharing one registry, with the shape of each root in `shaped` (see [`Shape`]). Problems
/// that only loosen enforcement are pushed onto `warnings`.
pub(super) fn compile(
    doc: &Value,
    roots: &[String],
    shaped: &[String],
    dialect: Dialect,
    view: View,
    file: &str,
    warnings: &mut Vec<SpecWarning>,
) -> Result<Compiled, SpecError> {
    let mut set = SchemaSet {
        file,
        slots: Vec::new(),
        origins: Vec::new(),
        slot_of: HashMap::new(),
        warnings: BTreeMap::new(),
        renamed: Vec::new(),
    };
    set.collect(doc, roots, dialect)?;
    set.check()?;
    set.translate_patterns();
    set.restructure();
    set.one_sided(view);
    warnings.extend(std::mem::take(&mut set.warnings).into_values());
    if roots.is_empty() {
        return Ok(Compiled::default());
    }
    let shapes = set.shapes(shaped);
    let slot_of = std::mem::take(&mut set.slot_of);
    let copy = json!({ "s": set.slots });
    let registry = Registry::new()
        .add(SPEC_URI, Draft::Draft202012.create_resource(copy))
        .and_then(|r| r.prepare())
        .map_err(|e| SpecError::new(file, "", format!("cannot index the schemas: {e}")))?;
    let mut distinct: Vec<&String> = roots.iter().collect();
    distinct.sort();
    distinct.dedup();
    let pointers: Vec<String> = distinct
        .iter()
        .map(|root| format!("/s/{}", slot_of[*root]))
        .collect();
    let schemas = RequestSchema::compile_all(&registry, &pointers).map_err(|(at, message)| {
        let root = distinct
            .iter()
            .zip(&pointers)
            .find(|(_, slot)| **slot == at)
            .map_or(String::new(), |(root, _)| (*root).clone());
        SpecError::new(file, root, message)
    })?;
    Ok(Compiled {
        schemas: distinct
            .into_iter()
            .cloned()
            .zip(schemas.into_iter().map(Arc::new))
            .collect(),
        shapes,
    })
}

struct SchemaSet<'a> {
    file: &'a str,
    /// The schemas in use, one per pointer reached, each a copy to be made readable.
    slots: Vec<Value>,
    /// Each slot's pointer in the vendor's document.
    origins: Vec<String>,
    slot_of: HashMap<String, usize>,
    /// By pointer, so a schema reached twice is reported once.
    warnings: BTreeMap<String, SpecWarning>,
    /// Each keyword [`dialect::normalise`] renamed: its pointer now, and in the document.
    renamed: Vec<(String, String)>,
}

/// The `$ref` that names slot `i` of the copy.
fn slot_ref(i: usize) -> String {
    format!("#/s/{i}")
}

impl SchemaSet<'_> {
    fn warn(&mut self, pointer: String, message: String) {
        let pointer = self.in_document(&pointer);
        self.warnings
            .entry(pointer.clone())
            .or_insert_with(|| SpecWarning(SpecError::new(self.file, pointer, message)));
    }

    fn error(&self, pointer: &str, message: impl Into<String>) -> SpecError {
        SpecError::new(self.file, self.in_document(pointer), message)
    }

    /// Where `pointer` (into the normalised copy) is in the vendor's document: each renamed
    /// keyword on the way under its own name again, innermost first.
    fn in_document(&self, pointer: &str) -> String {
        let mut pointer = pointer.to_owned();
        // Only the part before a keyword already put back may still hold renamed ones.
        let mut before = pointer.len();
        loop {
            let under = |new: &str| {
                new.len() <= before && (pointer == new || pointer.starts_with(&format!("{new}/")))
            };
            let Some((new, old)) = self
                .renamed
                .iter()
                .filter(|(new, _)| under(new))
                .max_by_key(|(new, _)| new.len())
            else {
                return pointer;
            };
            pointer = format!("{old}{}", &pointer[new.len()..]);
            before = old.rfind('/').unwrap_or(0);
        }
    }

    /// The slot for the schema at `at` in the document, allocated (and queued) if new.
    fn slot(&mut self, at: &str, queue: &mut VecDeque<usize>) -> usize {
        if let Some(&slot) = self.slot_of.get(at) {
            return slot;
        }
        let slot = self.slots.len();
        self.slots.push(Value::Null);
        self.origins.push(at.to_owned());
        self.slot_of.insert(at.to_owned(), slot);
        queue.push_back(slot);
        slot
    }

    fn collect(
        &mut self,
        doc: &Value,
        roots: &[String],
        dialect: Dialect,
    ) -> Result<(), SpecError> {
        let mut queue = VecDeque::new();
        // Roots written the same way are one schema: Microsoft Graph repeats 2,189 distinct
        // parameter schemas 67,315 times. (Their `$ref`s are pointers into the one document,
        // so the same text means the same schema.) Problems are reported at the first.
        let mut by_text: HashMap<String, usize> = HashMap::new();
        for root in roots {
            if self.slot_of.contains_key(root) {
                continue;
            }
            let text = doc.pointer(root).map(Value::to_string);
            match text.as_ref().and_then(|t| by_text.get(t)) {
                Some(&slot) => {
                    self.slot_of.insert(root.clone(), slot);
                }
                None => {
                    let slot = self.slot(root, &mut queue);
                    if let Some(text) = text {
                        by_text.insert(text, slot);
                    }
                }
            }
        }
        while let Some(slot) = queue.pop_front() {
            let origin = self.origins[slot].clone();
            let mut schema = doc
                .pointer(&origin)
                .ok_or_else(|| {
                    SpecError::new(self.file, &origin, "no such location in the document")
                })?
                .clone();
            let mut failed = None;
            let mut targets = Vec::new();
            let mut unmapped = Vec::new();
            let mut renamed = Vec::new();
            each_schema_mut(&mut schema, &origin, &mut |node_at, node| {
                for (new, old) in dialect::normalise(node, dialect) {
                    renamed.push((push(node_at, new), push(node_at, old)));
                }
                if let Some(target) = node.get("$ref").and_then(Value::as_str) {
                    match check_ref(doc, target) {
                        Ok(fragment) => targets.push((node_at.to_owned(), None, fragment)),
                        Err(message) => {
                            failed.get_or_insert_with(|| (push(node_at, "$ref"), message));
                        }
                    }
                }
                let mapping = node
                    .pointer("/discriminator/mapping")
                    .and_then(Value::as_object);
                for (value, target) in mapping.into_iter().flatten() {
                    let reference = target.as_str().and_then(dialect::mapping_ref);
                    match reference.as_deref().map(|r| check_ref(doc, r)) {
                        Some(Ok(fragment)) => {
                            targets.push((node_at.to_owned(), Some(value.clone()), fragment));
                        }
                        _ => unmapped.push(push(
                            &push(&push(node_at, "discriminator"), "mapping"),
                            value,
                        )),
                    }
                }
                true
            });
            self.renamed.extend(renamed);
            if let Some((pointer, message)) = failed {
                return Err(self.error(&pointer, message));
            }
            for at in unmapped {
                self.warn(
                    at,
                    "discriminator mapping names no schema of this document; that value selects \
                     nothing"
                        .into(),
                );
            }
            // Point each `$ref` (and mapping) at the target's slot.
            for (node_at, mapping_value, target) in targets {
                let target_slot = self.slot(&target, &mut queue);
                let relative = &node_at[origin.len()..];
                let node = schema.pointer_mut(relative).expect("visited above");
                let field = match &mapping_value {
                    None => node.get_mut("$ref"),
                    Some(value) => node
                        .pointer_mut("/discriminator/mapping")
                        .and_then(|m| m.get_mut(value)),
                };
                if let Some(field) = field {
                    *field = Value::String(slot_ref(target_slot));
                }
            }
            self.slots[slot] = schema;
        }
        Ok(())
    }

    /// Checks each slot against the meta-schema, loosening what is not JSON Schema away.
    fn check(&mut self) -> Result<(), SpecError> {
        let meta = jsonschema::draft202012::meta::validator();
        for slot in 0..self.slots.len() {
            let origin = self.origins[slot].clone();
            for _round in 0..8 {
                let mut remedies = BTreeSet::new();
                for error in meta.iter_errors(&self.slots[slot]) {
                    // Formats are annotations here; patterns are checked by compiling them.
                    if matches!(error.kind(), ValidationErrorKind::Format { .. }) {
                        continue;
                    }
                    match remedy(&self.slots[slot], error.instance_path().as_str()) {
                        Remedy::Refuse(at) => {
                            return Err(self.error(
                                &format!("{origin}{at}"),
                                "a schema must be an object or a boolean, not null",
                            ));
                        }
                        fix => {
                            remedies.insert((fix, describe(error.kind())));
                        }
                    }
                }
                if remedies.is_empty() {
                    break;
                }
                for (remedy, why) in remedies {
                    if let Some(at) = apply(&mut self.slots[slot], &remedy) {
                        self.warn(
                            format!("{origin}{at}"),
                            format!("not valid JSON Schema ({why}); ignored"),
                        );
                    }
                }
            }
            if let Err(error) = meta.validate(&self.slots[slot]) {
                return Err(self.error(
                    &format!("{origin}{}", error.instance_path().as_str()),
                    format!("not valid JSON Schema ({})", describe(error.kind())),
                ));
            }
        }
        Ok(())
    }

    fn translate_patterns(&mut self) {
        let mut cache: HashMap<String, Result<Option<String>, String>> = HashMap::new();
        let mut readable = |raw: &str| -> Result<Option<String>, String> {
            cache
                .entry(raw.to_owned())
                .or_insert_with(|| match pattern::translate(raw) {
                    Err(pattern::Untranslatable(why)) => Err(why.to_owned()),
                    Ok(translated) if compiles(&translated) => {
                        Ok((translated != raw).then(|| translated.into_owned()))
                    }
                    Ok(_) => Err("the regex engine cannot compile it".to_owned()),
                })
                .clone()
        };
        let mut skipped = Vec::new();
        for (index, (slot, origin)) in self.slots.iter_mut().zip(&self.origins).enumerate() {
            each_schema_mut(slot, origin, &mut |at, node| {
                let Some(map) = node.as_object_mut() else {
                    return true;
                };
                let relative = at[origin.len()..].to_owned();
                if let Some(Value::String(raw)) = map.get("pattern") {
                    match readable(raw) {
                        Ok(Some(translated)) => {
                            map.insert("pattern".into(), Value::String(translated));
                        }
                        Ok(None) => {}
                        Err(why) => skipped.push((
                            index,
                            push(&relative, "pattern"),
                            format!("pattern {raw:?} skipped: {why}"),
                        )),
                    }
                }
                if let Some(Value::Object(by_pattern)) = map.get_mut("patternProperties") {
                    for (raw, schema) in std::mem::take(by_pattern) {
                        match readable(&raw) {
                            Ok(translated) => {
                                by_pattern.insert(translated.unwrap_or(raw), schema);
                            }
                            Err(why) => {
                                skipped.push((
                                    index,
                                    push(&push(&relative, "patternProperties"), &raw),
                                    format!("patternProperties key {raw:?} skipped: {why}"),
                                ));
                                by_pattern.insert(raw, schema);
                            }
                        }
                    }
                }
                true
            });
        }
        for (index, at, message) in skipped {
            let slot = &mut self.slots[index];
            let fix = match remedy(slot, &at) {
                // An unreadable key cannot stay, even with its schema made `true`.
                Remedy::Neutralise { parent, key } if parent.ends_with("/patternProperties") => {
                    Remedy::Drop { parent, key }
                }
                fix => fix,
            };
            if let Some(at) = apply(slot, &fix) {
                self.warn(format!("{}{at}", self.origins[index]), message);
            }
        }
    }

    /// Makes the set one side's view of the document (OAS 3.x): a `readOnly` property is one
    /// only the server sends, so no request is required to, and a `writeOnly` one only the
    /// client sends, so no response is. With [`ReadOnly::Refuse`] a request may not send a
    /// `readOnly` property either.
    ///
    /// A property counts as the other side's where it is flagged beside the `required` list or
    /// in a schema an `allOf` beside it combines (directly or by `$ref`), which is where
    /// vendors put the two.
    fn one_sided(&mut self, view: View) {
        let (keyword, refuse) = match view {
            View::Request(read_only) => ("readOnly", read_only == ReadOnly::Refuse),
            View::Response => ("writeOnly", false),
        };
        let is_read_only = |schema: &Value, slots: &[Value]| {
            let flagged = |s: &Value| s.get(keyword) == Some(&Value::Bool(true));
            flagged(schema) || ref_slot(schema).is_some_and(|i| slots.get(i).is_some_and(flagged))
        };
        // Which properties each slot declares read-only, before any slot changes.
        let declared: Vec<Vec<String>> = self
            .slots
            .iter()
            .map(|slot| read_only_properties(slot, &self.slots, &is_read_only))
            .collect();
        let slots_before = self.slots.clone();
        for slot in &mut self.slots {
            each_schema_mut(slot, "", &mut |_, node| {
                let Some(map) = node.as_object_mut() else {
                    return true;
                };
                let mut names = read_only_properties_of(map, &slots_before, &is_read_only);
                for branch in map
                    .get("allOf")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match ref_slot(branch) {
                        Some(i) => names.extend(declared.get(i).into_iter().flatten().cloned()),
                        None => {
                            names.extend(read_only_properties(branch, &slots_before, &is_read_only))
                        }
                    }
                }
                if names.is_empty() {
                    return true;
                }
                let unrequire = |map: &mut Map<String, Value>| {
                    if let Some(Value::Array(required)) = map.get_mut("required") {
                        required.retain(|name| !names.iter().any(|n| name == n.as_str()));
                    }
                };
                unrequire(map);
                if let Some(Value::Array(branches)) = map.get_mut("allOf") {
                    for branch in branches.iter_mut().filter_map(Value::as_object_mut) {
                        if !branch.contains_key("$ref") {
                            unrequire(branch);
                        }
                    }
                }
                if refuse && let Some(Value::Object(properties)) = map.get_mut("properties") {
                    for name in &names {
                        if let Some(property) = properties.get_mut(name) {
                            *property = Value::Bool(false);
                        }
                    }
                }
                true
            });
        }
    }

    /// The shape of each of `roots`, built from the slots as they will be compiled.
    fn shapes(&self, roots: &[String]) -> HashMap<String, Arc<Shape>> {
        let slots = &self.slots;
        let resolve = |reference: &str| slot_index(reference).and_then(|i| slots.get(i));
        let mut shapes = Shapes::new(&resolve);
        roots
            .iter()
            .filter_map(|root| {
                let slot = self.slot_of.get(root)?;
                Some((root.clone(), shapes.of(&self.slots[*slot])))
            })
            .collect()
    }

    fn restructure(&mut self) {
        let origins = &self.origins;
        // A slot's `$ref` back to its document pointer, whose last token names the schema.
        let origin = |reference: &str| origins.get(slot_index(reference)?).cloned();
        for slot in &mut self.slots {
            each_schema_mut(slot, "", &mut |_, node| {
                dialect::restructure(node, &origin);
                true
            });
        }
    }
}

/// The slot a `$ref` of the compiled set names (`#/s/7`).
fn slot_index(reference: &str) -> Option<usize> {
    reference.strip_prefix("#/s/")?.parse().ok()
}

/// The slot the `$ref` of `schema` names, if it has one.
fn ref_slot(schema: &Value) -> Option<usize> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(slot_index)
}

/// The names of the properties `schema` declares read-only.
fn read_only_properties(
    schema: &Value,
    slots: &[Value],
    is_read_only: &dyn Fn(&Value, &[Value]) -> bool,
) -> Vec<String> {
    schema
        .as_object()
        .map(|map| read_only_properties_of(map, slots, is_read_only))
        .unwrap_or_default()
}

fn read_only_properties_of(
    map: &Map<String, Value>,
    slots: &[Value],
    is_read_only: &dyn Fn(&Value, &[Value]) -> bool,
) -> Vec<String> {
    map.get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, property)| is_read_only(property, slots))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The pointer a `$ref` names, if it resolves inside `doc`.
fn check_ref(doc: &Value, target: &str) -> Result<String, String> {
    let Some(fragment) = walk::local_target(target) else {
        return Err(format!(
            "$ref {target:?} is not local: a reference into another file is read only when the \
             document is loaded from a file"
        ));
    };
    if doc.pointer(&fragment).is_none() {
        return Err(format!("$ref {target:?} points at nothing in the document"));
    }
    Ok(fragment)
}

/// Whether the engine compiles `pattern`.
fn compiles(pattern: &str) -> bool {
    jsonschema::options()
        .should_validate_formats(false)
        .build(&json!({ "pattern": pattern }))
        .is_ok()
}

/// The loosest change that takes a problem out of a slot's schema; pointers are relative to
/// the slot.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Remedy {
    /// Remove keyword `key` from the schema at `parent` (or the entry `key` of the map there).
    Drop { parent: String, key: String },
    /// Make the schema at `key` of the list or map at `parent` `true`.
    Neutralise { parent: String, key: String },
    /// The slot's schema itself is not a schema: make it `true`.
    Root,
    /// The schema at this pointer is `null`: the document is broken.
    Refuse(String),
}

/// Finds what to change for a problem at `instance_path` (a pointer into `schema`).
///
/// Removing a keyword, or making a subschema `true`, accepts more, except below `not`, `if`
/// or an alternative of `oneOf`, where accepting more inside can mean accepting less
/// outside: a problem there removes the outermost such keyword instead. A map entry or list
/// item is made `true` rather than removed: a property taken out of `properties` would fall to
/// `additionalProperties: false`, an alternative taken out of `anyOf` would narrow it.
fn remedy(schema: &Value, instance_path: &str) -> Remedy {
    let mut node = schema;
    let mut at = String::new();
    // Where `node` sits: the keyword, or the list or map and the key in it.
    let mut place: Option<(String, String, Holds)> = None;
    // The outermost keyword below which accepting more is not safe.
    let mut unsafe_below: Option<(String, String)> = None;
    let mut path = tokens(instance_path);
    let fix = loop {
        let Some(keyword) = path.next() else {
            if node.is_null() {
                return Remedy::Refuse(at);
            }
            break match place {
                Some((parent, key, Holds::One)) => Remedy::Drop { parent, key },
                Some((parent, key, _)) => Remedy::Neutralise { parent, key },
                None => Remedy::Root,
            };
        };
        let keyword = keyword.into_owned();
        let Some(value) = node.as_object().and_then(|m| m.get(&keyword)) else {
            break Remedy::Drop {
                parent: at,
                key: keyword,
            };
        };
        if matches!(keyword.as_str(), "not" | "if" | "oneOf") {
            unsafe_below.get_or_insert_with(|| (at.clone(), keyword.clone()));
        }
        let keyword_at = push(&at, &keyword);
        let (next, next_at, next_place) = match (holds(&keyword, value), value) {
            (Holds::One, value) => (value, keyword_at, (at, keyword, Holds::One)),
            (Holds::List, Value::Array(items)) => {
                let item = path.next().and_then(|i| {
                    let index = i.parse::<usize>().ok()?;
                    Some((items.get(index)?, i.into_owned()))
                });
                match item {
                    Some((item, index)) => (
                        item,
                        format!("{keyword_at}/{index}"),
                        (keyword_at, index, Holds::List),
                    ),
                    None => {
                        break Remedy::Drop {
                            parent: at,
                            key: keyword,
                        };
                    }
                }
            }
            (Holds::Map, Value::Object(entries)) => {
                let entry = path
                    .next()
                    .and_then(|name| Some((entries.get(&*name)?, name.into_owned())));
                match entry {
                    Some((entry, name)) => (
                        entry,
                        push(&keyword_at, &name),
                        (keyword_at, name, Holds::Map),
                    ),
                    None => {
                        break Remedy::Drop {
                            parent: at,
                            key: keyword,
                        };
                    }
                }
            }
            _ => {
                break Remedy::Drop {
                    parent: at,
                    key: keyword,
                };
            }
        };
        node = next;
        at = next_at;
        place = Some(next_place);
    };
    match (unsafe_below, &fix) {
        (_, Remedy::Refuse(_)) | (None, _) => fix,
        (Some((parent, key)), _) => Remedy::Drop { parent, key },
    }
}

/// Applies a remedy to a slot's schema; the pointer (relative to the slot) of what it
/// changed, or `None` if nothing was there to change.
///
/// Without `properties` or `patternProperties` (or one of their entries), a property would
/// become an additional one: `additionalProperties` and `unevaluatedProperties` beside them go
/// too. Likewise `unevaluatedItems` beside `items` and `prefixItems`.
fn apply(schema: &mut Value, remedy: &Remedy) -> Option<String> {
    let (parent, key) = match remedy {
        Remedy::Drop { parent, key } | Remedy::Neutralise { parent, key } => (parent, key),
        Remedy::Root => {
            *schema = Value::Bool(true);
            return Some(String::new());
        }
        Remedy::Refuse(_) => return None,
    };
    let owner = parent.strip_suffix("/patternProperties");
    let changed = match (schema.pointer_mut(parent)?, remedy) {
        (Value::Array(items), _) => {
            *items.get_mut(key.parse::<usize>().ok()?)? = Value::Bool(true);
            true
        }
        (Value::Object(map), Remedy::Neutralise { .. }) => {
            *map.get_mut(key)? = Value::Bool(true);
            true
        }
        (Value::Object(map), _) => {
            let removed = map.remove(key).is_some();
            let siblings: &[&str] = match key.as_str() {
                "properties" | "patternProperties" => {
                    &["additionalProperties", "unevaluatedProperties"]
                }
                "items" | "prefixItems" => &["unevaluatedItems"],
                _ => &[],
            };
            for sibling in siblings {
                map.remove(*sibling);
            }
            removed
        }
        _ => false,
    };
    if changed && let Some(Value::Object(map)) = owner.and_then(|owner| schema.pointer_mut(owner)) {
        map.remove("additionalProperties");
        map.remove("unevaluatedProperties");
    }
    changed.then(|| push(parent, key))
}

/// A meta-schema error in words that never quote the schema's value: a document can point a
/// `$ref` at anything, and what it points at does not belong in a log.
fn describe(kind: &ValidationErrorKind) -> String {
    match kind {
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                jsonschema::error::TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("should be {expected}")
        }
        ValidationErrorKind::Enum { .. } => {
            "is none of the values JSON Schema allows here".to_owned()
        }
        other => format!("fails the meta-schema's '{}'", other.keyword()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Source;

    fn compile_one(
        doc: Value,
        dialect: Dialect,
    ) -> (Result<Arc<RequestSchema>, SpecError>, Vec<SpecWarning>) {
        let mut warnings = Vec::new();
        let roots = ["/s".to_owned()];
        let result = compile(
            &doc,
            &roots,
            &[],
            dialect,
            View::Request(ReadOnly::Allow),
            "t.json",
            &mut warnings,
        )
        .map(|mut all| all.schemas.remove("/s").unwrap());
        (result, warnings)
    }

    fn pointers(warnings: &[SpecWarning]) -> Vec<&str> {
        warnings.iter().map(|w| w.0.pointer.as_str()).collect()
    }

    #[test]
    fn only_what_is_referenced_is_looked_at() {
        let doc = json!({
            "s": {"$ref": "#/components/schemas/Used"},
            "components": {"schemas": {
                "Used": {"type": "object", "required": ["a"]},
                "Unused": {"type": 12, "pattern": "[", "x": {"$ref": "#/nowhere"}}
            }}
        });
        let (schema, warnings) = compile_one(doc, Dialect::Oas31);
        let schema = schema.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(schema.is_valid(&json!({"a": 1})) && !schema.is_valid(&json!({})));
    }

    #[test]
    fn a_ref_to_nowhere_and_a_null_schema_refuse_with_their_pointers() {
        let doc = json!({"s": {"properties": {"x": {"$ref": "#/components/schemas/Nope"}}}});
        let e = compile_one(doc, Dialect::Oas31).0.unwrap_err();
        assert_eq!(e.pointer, "/s/properties/x/$ref");
        assert!(e.message.contains("points at nothing"), "{e}");
        let doc = json!({"s": {"properties": {"x": null}}});
        let e = compile_one(doc, Dialect::Oas31).0.unwrap_err();
        assert_eq!(e.pointer, "/s/properties/x");
    }

    #[test]
    fn keywords_that_are_not_json_schema_are_dropped_with_a_warning() {
        let doc = json!({"s": {"type": "object", "required": true, "properties": {
            "a": {"type": "strin"}, "b": {"type": "string", "pattern": 0, "maxLength": "9"},
            "c": "string"
        }}});
        let (schema, warnings) = compile_one(doc, Dialect::Oas31);
        let schema = schema.unwrap();
        assert_eq!(
            pointers(&warnings),
            [
                "/s/properties/a/type",
                "/s/properties/b/maxLength",
                "/s/properties/b/pattern",
                "/s/properties/c",
                "/s/required"
            ]
        );
        assert!(
            warnings[0]
                .to_string()
                .starts_with("t.json at /s/properties/a/type: not valid JSON Schema")
        );
        assert!(schema.is_valid(&json!({"a": 5, "b": "anything at all", "c": []})));
        assert!(!schema.is_valid(&json!({"b": 5})));
    }

    #[test]
    fn what_is_not_json_schema_is_loosened_away_never_tightened() {
        // Each schema, as a document would write it, accepts the body beside it; the keyword
        // at fault must not make specgate refuse it.
        let cases = [
            // An entry made `true`, not removed: `c` stays a declared property.
            (
                json!({"properties": {"c": "string"}, "additionalProperties": false}),
                json!({"c": 5}),
            ),
            // Accepting more inside `not` would accept less outside: the `not` goes.
            (json!({"not": {"type": "strin"}}), json!("anything")),
            (json!({"not": {"pattern": "[a-z]{1-20}"}}), json!("abc")),
            // `oneOf` must match exactly one: a `true` alternative would break that.
            (
                json!({"oneOf": [{"type": "string"}, "integer"]}),
                json!("s"),
            ),
            (json!({"if": {"type": "strin"}, "then": false}), json!(1)),
            // Without its pattern, a property would be an additional one.
            (
                json!({"patternProperties": {"^x-[a-z]{1-3}$": {}}, "additionalProperties": false}),
                json!({"x-ab": 1}),
            ),
            (
                json!({"properties": [], "additionalProperties": false}),
                json!({"a": 1}),
            ),
        ];
        for (schema, body) in cases {
            let (compiled, warnings) = compile_one(json!({"s": schema.clone()}), Dialect::Oas31);
            assert!(!warnings.is_empty(), "{schema}");
            assert!(compiled.unwrap().is_valid(&body), "{schema} refuses {body}");
        }
    }

    #[test]
    fn a_warning_never_quotes_the_value_at_fault() {
        let doc = json!({"s": {"properties": {"a": {"type": {"secret": "hunter2"}}}}});
        let (_, warnings) = compile_one(doc, Dialect::Oas31);
        assert_eq!(warnings.len(), 1);
        assert!(
            !warnings[0].to_string().contains("hunter2"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn vendor_patterns_are_read_as_javascript_reads_them_or_skipped() {
        let doc = json!({"s": {"properties": {
            "hex": {"type": "string", "pattern": "^\\p{XDigit}{4}$"},
            "domain": {"type": "string", "pattern": "\\A[a-z.]+\\Z"},
            "vague": {"type": "string", "pattern": "[a-z]{1-20}"}
        }, "patternProperties": {"^x-[\\w-.]+$": {"type": "string"}}}});
        let (schema, warnings) = compile_one(doc, Dialect::Oas31);
        let schema = schema.unwrap();
        assert_eq!(pointers(&warnings), ["/s/properties/vague/pattern"]);
        assert!(
            warnings[0].0.message.contains("malformed quantifier"),
            "{}",
            warnings[0]
        );
        assert!(schema.is_valid(&json!({"hex": "0aF9", "domain": "a.example", "vague": "!!"})));
        assert!(!schema.is_valid(&json!({"hex": "0aG9"})));
        assert!(!schema.is_valid(&json!({"domain": "A.example"})));
        assert!(!schema.is_valid(&json!({"x-a.b": 1})));
        assert!(schema.is_valid(&json!({"x-a.b": "s"})));
    }

    #[test]
    fn openapi_30_reads_as_draft4_with_its_own_changes() {
        let doc = json!({
            "s": {"type": "object", "properties": {
                "n": {"type": "number", "minimum": 0, "exclusiveMinimum": true},
                "note": {"type": "string", "nullable": true},
                "thing": {"$ref": "#/components/schemas/Thing", "type": "integer", "nullable": true}
            }},
            "components": {"schemas": {"Thing": {"type": "object"}}}
        });
        let (schema, warnings) = compile_one(doc, Dialect::Oas30);
        let schema = schema.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(schema.is_valid(&json!({"n": 0.5, "note": null, "thing": null})));
        assert!(
            schema.is_valid(&json!({"thing": {}})),
            "the sibling type is ignored"
        );
        assert!(!schema.is_valid(&json!({"n": 0})));
        assert!(!schema.is_valid(&json!({"thing": 1})));
    }

    #[test]
    fn a_discriminator_checks_the_one_alternative_it_names() {
        let doc = json!({
            "s": {"oneOf": [{"$ref": "#/components/schemas/Cat"}, {"$ref": "#/components/schemas/Dog"}],
                  "discriminator": {"propertyName": "kind"}},
            "components": {"schemas": {
                // Overlapping alternatives: a plain oneOf refuses every cat.
                "Cat": {"type": "object", "properties": {"kind": {"type": "string"}, "claws": {"type": "boolean"}}},
                "Dog": {"type": "object", "properties": {"kind": {"type": "string"}, "bark": {"type": "string"}}}
            }}
        });
        let (schema, _) = compile_one(doc, Dialect::Oas30);
        let schema = schema.unwrap();
        assert!(schema.is_valid(&json!({"kind": "Cat", "claws": true})));
        assert!(!schema.is_valid(&json!({"kind": "Cat", "claws": "sharp"})));
        let v = schema.violations(&json!({"kind": "Cat", "claws": "sharp"}));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].source, Source::body("/claws"));
        let v = schema.violations(&json!({"kind": "Cow"}));
        assert_eq!(v[0].source, Source::body("/kind"));
        assert_eq!(v[0].code, "enum");
    }

    fn compile_read_only(doc: &Value, read_only: ReadOnly) -> Arc<RequestSchema> {
        compile_as(doc, View::Request(read_only))
    }

    fn compile_as(doc: &Value, view: View) -> Arc<RequestSchema> {
        let roots = ["/s".to_owned()];
        let mut compiled =
            compile(doc, &roots, &[], Dialect::Oas30, view, "t", &mut Vec::new()).unwrap();
        compiled.schemas.remove("/s").unwrap()
    }

    #[test]
    fn read_only_properties_are_not_demanded_of_requests() {
        let doc = json!({
            "s": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"required": ["id", "name"]}]},
            "components": {"schemas": {
                "Base": {"type": "object", "required": ["id", "created"],
                         "properties": {"id": {"type": "string", "readOnly": true},
                                        "created": {"$ref": "#/components/schemas/Stamp"},
                                        "name": {"type": "string"}}},
                "Stamp": {"type": "string", "readOnly": true}
            }}
        });
        let schema = compile_read_only(&doc, ReadOnly::Allow);
        assert!(schema.is_valid(&json!({"name": "n"})));
        assert!(schema.is_valid(&json!({"name": "n", "id": "sent anyway"})));
        let v = schema.violations(&json!({}));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].source, Source::body("/name"));

        let refusing = compile_read_only(&doc, ReadOnly::Refuse);
        assert!(refusing.is_valid(&json!({"name": "n"})));
        let v = refusing.violations(&json!({"name": "n", "id": "x"}));
        assert_eq!(v[0].source, Source::body("/id"));
    }

    #[test]
    fn write_only_properties_are_not_demanded_of_responses() {
        let doc = json!({
            "s": {"allOf": [{"$ref": "#/components/schemas/User"}, {"required": ["name"]}]},
            "components": {"schemas": {
                "User": {"type": "object", "required": ["id", "password"],
                         "properties": {"id": {"type": "integer", "readOnly": true},
                                        "password": {"type": "string", "writeOnly": true},
                                        "name": {"type": "string"}}}
            }}
        });
        let response = compile_as(&doc, View::Response);
        assert!(response.is_valid(&json!({"id": 1, "name": "n"})));
        let v = response.violations(&json!({"name": "n"}));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].source, Source::body("/id"));
        // The request side of the same document is the mirror image.
        let request = compile_read_only(&doc, ReadOnly::Allow);
        assert!(request.is_valid(&json!({"password": "p", "name": "n"})));
        assert!(!request.is_valid(&json!({"id": 1, "name": "n"})));
    }

    #[test]
    fn shapes_are_built_for_the_roots_that_ask() {
        let doc = json!({"s": {"properties": {"amount": {"type": "integer"}}}});
        let roots = ["/s".to_owned()];
        let compiled = compile(
            &doc,
            &roots,
            &roots,
            Dialect::Oas30,
            View::Request(ReadOnly::Allow),
            "t",
            &mut Vec::new(),
        )
        .unwrap();
        let shape = &compiled.shapes["/s"];
        assert_eq!(shape.property("amount").unwrap().read("7"), json!(7));
    }

    #[test]
    fn a_discriminator_with_an_inline_alternative_is_left_to_the_document() {
        let doc = json!({
            "s": {"oneOf": [{"$ref": "#/components/schemas/Cat"},
                            {"properties": {"kind": {"const": "fish"}}, "required": ["kind"]}],
                  "discriminator": {"propertyName": "kind"}},
            "components": {"schemas": {
                "Cat": {"type": "object", "properties": {"kind": {"const": "Cat"}}, "required": ["kind"]}
            }}
        });
        let schema = compile_one(doc, Dialect::Oas30).0.unwrap();
        assert!(schema.is_valid(&json!({"kind": "fish"})));
        assert!(schema.is_valid(&json!({"kind": "Cat"})));
        assert!(!schema.is_valid(&json!({"kind": "dog"})));
    }

    #[test]
    fn problems_under_renamed_keywords_are_reported_where_the_document_has_them() {
        let doc = json!({"s": {"items": [{"type": "strin"}], "additionalItems": {"type": "strin"},
                               "dependencies": {"a": {"type": "strin"}}}});
        let (_, warnings) = compile_one(doc, Dialect::Oas30);
        assert_eq!(
            pointers(&warnings),
            [
                "/s/additionalItems/type",
                "/s/dependencies/a/type",
                "/s/items/0/type"
            ]
        );
        let doc = json!({"s": {"items": [{"$ref": "#/nowhere"}]}});
        let e = compile_one(doc, Dialect::Oas30).0.unwrap_err();
        assert_eq!(e.pointer, "/s/items/0/$ref");
    }

    #[test]
    fn shared_schemas_compile_once() {
        let doc = json!({
            "a": {"$ref": "#/components/schemas/T"},
            "components": {"schemas": {"T": {"type": "object"}}}
        });
        let roots = [
            "/components/schemas/T".to_owned(),
            "/components/schemas/T".to_owned(),
            "/a".to_owned(),
        ];
        let compiled = compile(
            &doc,
            &roots,
            &[],
            Dialect::Oas31,
            View::Request(ReadOnly::Allow),
            "t",
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(compiled.schemas.len(), 2);
    }
}
