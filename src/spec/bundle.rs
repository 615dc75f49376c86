//! Documents split over several files: `$ref: "common.yaml#/components/schemas/Error"`.
//!
//! Before anything else reads the document, every `$ref` (and `discriminator` mapping) into
//! another local file is resolved relative to the file it is written in; each file reached is
//! read once and placed, whole, under [`BUNDLED`] at the root, keyed by its name without the
//! extension, and the reference is rewritten to point there
//! (`#/x-specgate-bundled/common/components/schemas/Error`), as are the references inside it.
//! The rest of the loader then sees one document. A problem found under [`BUNDLED`] is
//! reported against its own file and pointer ([`Bundle::locate`]).
//!
//! Only files in the document's directory, or below it, are read: a document must not be
//! able to make specgate read (and quote in a warning) any file the process can. A reference
//! that cannot be read (outside that directory, not there, or on the network: a gateway's
//! contract does not change because a server elsewhere did) is left as written. It refuses the
//! document only if the loader reaches it, with the reason; in a component nothing uses it
//! costs nothing, like the rest of that component.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::walk::push;
use super::{SpecError, document};

/// Where the other files of a document are placed.
pub(super) const BUNDLED: &str = "x-specgate-bundled";

/// Keys whose values are maps of names (`properties`, `components/schemas`, a media type's
/// `content`): a key inside one is a name, never a keyword, so a property called `example` is
/// read like any other.
const NAME_MAPS: [&str; 20] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "schemas",
    "responses",
    "parameters",
    "requestBodies",
    "headers",
    "securitySchemes",
    "links",
    "callbacks",
    "pathItems",
    "paths",
    "content",
    "encoding",
    "variables",
    "mapping",
    "scopes",
];

/// The files bundled into a document.
#[derive(Debug, Default)]
pub(super) struct Bundle {
    /// Each placed file's name, by the key it is placed under.
    files: HashMap<String, String>,
    /// Why each reference left as written could not be read, by the file and pointer of its
    /// `$ref`.
    unread: HashMap<(String, String), String>,
}

impl Bundle {
    /// Resolves every reference of `doc` (read from `path`) into another file, in place.
    pub(super) fn resolve(doc: &mut Value, path: &Path) -> Result<Bundle, SpecError> {
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        let mut bundler = Bundler {
            root: path.canonicalize().ok(),
            allowed: base.canonicalize().ok(),
            placed: Vec::new(),
            index_of: HashMap::new(),
            unread: HashMap::new(),
        };
        let root = path.display().to_string();
        bundler.rewrite(doc, &base, None, &root, None, false)?;
        // Each file placed may refer to more; `placed` grows as they are read.
        let mut i = 0;
        while i < bundler.placed.len() {
            let mut contents = std::mem::take(&mut bundler.placed[i].contents);
            let file = bundler.placed[i].file.clone();
            let base = file.parent().unwrap_or(Path::new(".")).to_owned();
            let name = file.display().to_string();
            bundler.rewrite(&mut contents, &base, Some(i), &name, None, false)?;
            bundler.placed[i].contents = contents;
            i += 1;
        }
        let mut files = HashMap::new();
        let mut placed = Map::new();
        for file in bundler.placed {
            files.insert(file.key.clone(), file.file.display().to_string());
            placed.insert(file.key, file.contents);
        }
        if let (Value::Object(map), false) = (&mut *doc, placed.is_empty()) {
            map.insert(BUNDLED.to_owned(), Value::Object(placed));
        }
        Ok(Bundle {
            files,
            unread: bundler.unread,
        })
    }

    /// The file and pointer a problem at `pointer` of the bundled document is really at; for
    /// a reference that could not be read, why.
    pub(super) fn locate(&self, error: &mut SpecError) {
        if let Some(rest) = error.pointer.strip_prefix(&format!("/{BUNDLED}/")) {
            let (key, inner) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(file) = self.files.get(key) {
                error.file = file.clone();
                error.pointer = if inner.is_empty() {
                    String::new()
                } else {
                    format!("/{inner}")
                };
            }
        }
        if let Some(why) = self
            .unread
            .get(&(error.file.clone(), error.pointer.clone()))
        {
            error.message = why.clone();
        }
    }
}

/// A file read into the bundle.
struct Placed {
    file: PathBuf,
    /// What it is placed under: its name without the extension, made safe for a pointer and
    /// unique.
    key: String,
    /// Taken out while its references are rewritten.
    contents: Value,
}

struct Bundler {
    /// The document itself: a reference back into it stays a local one.
    root: Option<PathBuf>,
    /// The directory files may be read from (and below).
    allowed: Option<PathBuf>,
    placed: Vec<Placed>,
    index_of: HashMap<PathBuf, usize>,
    unread: HashMap<(String, String), String>,
}

impl Bundler {
    /// Rewrites the references in `value`, which is in the file `name` (placed at `index`, or
    /// the root document), whose directory is `base`. `names`: `value` is a map of names.
    fn rewrite(
        &mut self,
        value: &mut Value,
        base: &Path,
        index: Option<usize>,
        name: &str,
        at: Option<&At<'_>>,
        names: bool,
    ) -> Result<(), SpecError> {
        match value {
            Value::Object(map) => {
                if !names {
                    if let Some(Value::String(reference)) = map.get_mut("$ref") {
                        self.rewrite_one(reference, base, index, name, at, "$ref")?;
                    }
                    if let Some(Value::Object(mapping)) = map
                        .get_mut("discriminator")
                        .and_then(|d| d.get_mut("mapping"))
                    {
                        // A mapping names a schema or, like a `$ref`, a location in a file.
                        for (value, target) in mapping.iter_mut() {
                            if let Value::String(target) = target
                                && (target.starts_with('#') || target.contains(['/', '.']))
                            {
                                let step = At {
                                    parent: at,
                                    token: Token::Key("discriminator"),
                                };
                                let step = At {
                                    parent: Some(&step),
                                    token: Token::Key("mapping"),
                                };
                                self.rewrite_one(target, base, index, name, Some(&step), value)?;
                            }
                        }
                    }
                }
                for (key, child) in map.iter_mut() {
                    if !names && matches!(key.as_str(), "$ref" | "discriminator") {
                        continue;
                    }
                    // Examples, defaults and enums are data: a `$ref` in one is a value.
                    let data = matches!(key.as_str(), "example" | "default" | "enum" | "const")
                        || (key == "examples" && child.is_array());
                    if !names && data {
                        continue;
                    }
                    let here = At {
                        parent: at,
                        token: Token::Key(key),
                    };
                    if !names && key == "examples" {
                        // A map of Example Objects: each may be a `$ref`; its `value` is data.
                        for (example, object) in child.as_object_mut().into_iter().flatten() {
                            if let Some(Value::String(reference)) = object.get_mut("$ref") {
                                let step = At {
                                    parent: Some(&here),
                                    token: Token::Key(example),
                                };
                                self.rewrite_one(
                                    reference,
                                    base,
                                    index,
                                    name,
                                    Some(&step),
                                    "$ref",
                                )?;
                            }
                        }
                        continue;
                    }
                    let child_names = !names && NAME_MAPS.contains(&key.as_str());
                    self.rewrite(child, base, index, name, Some(&here), child_names)?;
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let here = At {
                        parent: at,
                        token: Token::Index(i),
                    };
                    self.rewrite(item, base, index, name, Some(&here), false)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Rewrites one reference (`field` of the object at `at`) in place.
    fn rewrite_one(
        &mut self,
        reference: &mut String,
        base: &Path,
        index: Option<usize>,
        name: &str,
        at: Option<&At<'_>>,
        field: &str,
    ) -> Result<(), SpecError> {
        match self.target(reference, base, index)? {
            Target::Unchanged => {}
            Target::At(rewritten) => *reference = rewritten,
            Target::Unread(why) => {
                let why = format!("$ref {reference:?} {why}");
                let pointer = push(&At::pointer(at), field);
                self.unread.insert((name.to_owned(), pointer), why);
            }
        }
        Ok(())
    }

    /// What `reference` becomes.
    fn target(
        &mut self,
        reference: &str,
        base: &Path,
        index: Option<usize>,
    ) -> Result<Target, SpecError> {
        let (file, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        if file.is_empty() {
            // Local to the file it is in: inside a placed file, that file's place.
            return Ok(match index {
                Some(i) => Target::At(format!("#/{BUNDLED}/{}{fragment}", self.placed[i].key)),
                None => Target::Unchanged,
            });
        }
        if file.contains("://") {
            return Ok(Target::Unread(
                "is on the network; specgate reads only local files (save it beside the \
                 document, or bundle the document first)"
                    .to_owned(),
            ));
        }
        let path = base.join(
            percent_encoding::percent_decode_str(file)
                .decode_utf8_lossy()
                .as_ref(),
        );
        let Ok(key) = path.canonicalize() else {
            return Ok(Target::Unread(format!(
                "names {}, which does not exist",
                path.display()
            )));
        };
        if self.root.as_ref() == Some(&key) {
            return Ok(Target::At(format!("#{fragment}")));
        }
        if !self
            .allowed
            .as_ref()
            .is_some_and(|dir| key.starts_with(dir))
        {
            return Ok(Target::Unread(format!(
                "names {}, outside the document's directory; specgate reads only files in it \
                 or below it",
                path.display()
            )));
        }
        let placed = match self.index_of.get(&key) {
            Some(&i) => i,
            None => {
                let contents = document::read(&path, &path.display().to_string())?;
                let key_name = self.key_for(&path);
                self.placed.push(Placed {
                    file: path,
                    key: key_name,
                    contents,
                });
                self.index_of.insert(key, self.placed.len() - 1);
                self.placed.len() - 1
            }
        };
        Ok(Target::At(format!(
            "#/{BUNDLED}/{}{fragment}",
            self.placed[placed].key
        )))
    }

    /// The key a file is placed under: its name without the extension (`Pet` for
    /// `models/Pet.yaml`, the name a `discriminator` gives a whole-file schema), with anything
    /// but letters, digits, `_`, `-` and `.` made `_`, and a number added if taken.
    fn key_for(&self, path: &Path) -> String {
        let stem: String = path
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let taken = |key: &str| self.placed.iter().any(|p| p.key == key);
        if !taken(&stem) {
            return stem;
        }
        (2..)
            .map(|n| format!("{stem}-{n}"))
            .find(|key| !taken(key))
            .expect("some number is free")
    }
}

/// Where a value is, as a chain of borrowed steps: the walk costs nothing for the pointers it
/// never needs.
struct At<'a> {
    parent: Option<&'a At<'a>>,
    token: Token<'a>,
}

enum Token<'a> {
    Key(&'a str),
    Index(usize),
}

impl At<'_> {
    fn pointer(at: Option<&At<'_>>) -> String {
        let mut steps = Vec::new();
        let mut next = at;
        while let Some(step) = next {
            steps.push(step);
            next = step.parent;
        }
        steps
            .iter()
            .rev()
            .fold(String::new(), |pointer, step| match step.token {
                Token::Key(key) => push(&pointer, key),
                Token::Index(i) => format!("{pointer}/{i}"),
            })
    }
}

/// What a `$ref` becomes.
enum Target {
    Unchanged,
    At(String),
    /// Left as written, for this reason.
    Unread(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_into_other_files_are_placed_once_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        std::fs::write(
            dir.path().join("models/pet.yaml"),
            "Pet: {type: object, properties: {owner: {$ref: 'owner.json#/Owner'}, tag: {$ref: '#/Tag'}}}\nTag: {type: string}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("models/owner.json"),
            r#"{"Owner": {"type": "string"}, "Back": {"$ref": "../api.yaml#/c"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("api.yaml"), "{}").unwrap();
        let mut doc = json!({
            "a": {"$ref": "models/pet.yaml#/Pet"},
            "b": {"$ref": "./models/pet.yaml#/Tag"},
            "c": {"$ref": "#/local"},
            "example": {"$ref": "not/a/file.yaml"}
        });
        let bundle = Bundle::resolve(&mut doc, &dir.path().join("api.yaml")).unwrap();
        assert_eq!(doc["a"]["$ref"], "#/x-specgate-bundled/pet/Pet");
        assert_eq!(
            doc["b"]["$ref"], "#/x-specgate-bundled/pet/Tag",
            "one file, placed once"
        );
        assert_eq!(doc["c"]["$ref"], "#/local");
        assert_eq!(
            doc["example"]["$ref"], "not/a/file.yaml",
            "examples are data"
        );
        let pet = &doc[BUNDLED]["pet"]["Pet"]["properties"];
        assert_eq!(pet["owner"]["$ref"], "#/x-specgate-bundled/owner/Owner");
        assert_eq!(pet["tag"]["$ref"], "#/x-specgate-bundled/pet/Tag");
        assert_eq!(doc[BUNDLED]["owner"]["Owner"], json!({"type": "string"}));
        assert_eq!(
            doc[BUNDLED]["owner"]["Back"]["$ref"], "#/c",
            "back into the document itself"
        );

        let mut error = SpecError::new("api.yaml", "/x-specgate-bundled/owner/Owner/type", "bad");
        bundle.locate(&mut error);
        assert!(error.file.ends_with("models/owner.json"), "{}", error.file);
        assert_eq!(error.pointer, "/Owner/type");
    }

    #[test]
    fn names_are_names_and_mappings_are_references_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cat.yaml"), "{type: object}").unwrap();
        std::fs::write(dir.path().join("x.yaml"), "X: {type: string}").unwrap();
        let mut doc = json!({
            "s": {"properties": {"examples": {"$ref": "x.yaml#/X"}, "example": {"$ref": "x.yaml#/X"}},
                  "oneOf": [{"$ref": "Cat.yaml"}],
                  "discriminator": {"propertyName": "kind", "mapping": {"cat": "Cat.yaml", "dog": "Dog"}}},
            "content": {"application/json": {"examples": {"one": {"$ref": "x.yaml#/X", "value": {"$ref": "y"}}}}}
        });
        Bundle::resolve(&mut doc, &dir.path().join("api.yaml")).unwrap();
        assert_eq!(
            doc["s"]["properties"]["examples"]["$ref"],
            "#/x-specgate-bundled/x/X"
        );
        assert_eq!(
            doc["s"]["properties"]["example"]["$ref"],
            "#/x-specgate-bundled/x/X"
        );
        assert_eq!(doc["s"]["oneOf"][0]["$ref"], "#/x-specgate-bundled/Cat");
        let mapping = &doc["s"]["discriminator"]["mapping"];
        assert_eq!(mapping["cat"], "#/x-specgate-bundled/Cat");
        assert_eq!(mapping["dog"], "Dog", "a schema name, not a file");
        let example = &doc["content"]["application/json"]["examples"]["one"];
        assert_eq!(example["$ref"], "#/x-specgate-bundled/x/X");
        assert_eq!(example["value"]["$ref"], "y", "an example's value is data");
    }

    #[test]
    fn a_reference_that_cannot_be_read_is_left_with_the_reason_it_was_not() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("spec");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(dir.path().join("token"), "s3cr3t").unwrap();
        let mut doc = json!({
            "paths": {"/a": {"$ref": "missing.yaml#/A"}},
            "x": {"$ref": "https://example.com/s.json#/A"},
            "y": {"$ref": "../token"}
        });
        let api = inner.join("api.yaml");
        let bundle = Bundle::resolve(&mut doc, &api).unwrap();
        assert_eq!(
            doc["paths"]["/a"]["$ref"], "missing.yaml#/A",
            "left as written"
        );
        assert!(doc.get(BUNDLED).is_none(), "nothing was read");
        let file = api.display().to_string();
        let reason = |pointer: &str| {
            let mut reached = SpecError::new(&file, pointer, "$ref is not local");
            bundle.locate(&mut reached);
            reached.message
        };
        assert!(reason("/paths/~1a/$ref").contains("which does not exist"));
        assert!(reason("/x/$ref").contains("on the network"));
        assert!(reason("/y/$ref").contains("outside the document's directory"));
    }
}
