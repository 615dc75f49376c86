//! Documents split over several files: `$ref: "common.yaml#/components/schemas/Error"`.
//!
//! Before anything else reads the document, every `$ref` into another local file is resolved
//! relative to the file it is written in; each file reached is read once and placed, whole,
//! under [`BUNDLED`] at the root, and the reference is rewritten to point there
//! (`#/x-specgate-bundled/0/components/schemas/Error`), as are the references inside it. The
//! rest of the loader then sees one document. A problem found under [`BUNDLED`] is reported
//! against its own file and pointer ([`Bundle::locate`]).
//!
//! A reference that cannot be read (no such file, or one on the network: a gateway's contract
//! does not change because a server elsewhere did) is left as written. It refuses the document
//! only if the loader reaches it, with the reason it could not be read; in a component nothing
//! uses it costs nothing, like the rest of that component.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::walk::push;
use super::{SpecError, document};

/// Where the other files of a document are placed.
pub(super) const BUNDLED: &str = "x-specgate-bundled";

/// The files bundled into a document, by the index they are placed at.
#[derive(Debug, Default)]
pub(super) struct Bundle {
    files: Vec<String>,
    /// Why each reference left as written could not be read, by the file and pointer of its
    /// `$ref`.
    unread: HashMap<(String, String), String>,
}

impl Bundle {
    /// Resolves every reference of `doc` (read from `path`) into another file, in place.
    pub(super) fn resolve(doc: &mut Value, path: &Path) -> Result<Bundle, SpecError> {
        let root = path.display().to_string();
        let mut bundler = Bundler {
            root: path.canonicalize().ok(),
            placed: Vec::new(),
            index_of: HashMap::new(),
            unread: HashMap::new(),
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        bundler.rewrite(doc, &base, None, &root, None)?;
        // Each file placed may refer to more; `placed` grows as they are read.
        let mut i = 0;
        while i < bundler.placed.len() {
            let (file, mut contents) = (
                bundler.placed[i].0.clone(),
                std::mem::take(&mut bundler.placed[i].1),
            );
            let base = file.parent().unwrap_or(Path::new(".")).to_owned();
            let name = file.display().to_string();
            bundler.rewrite(&mut contents, &base, Some(i), &name, None)?;
            bundler.placed[i].1 = contents;
            i += 1;
        }
        let files = bundler
            .placed
            .iter()
            .map(|(file, _)| file.display().to_string())
            .collect();
        let placed: Vec<Value> = bundler.placed.into_iter().map(|(_, v)| v).collect();
        if let (Value::Object(map), false) = (&mut *doc, placed.is_empty()) {
            map.insert(BUNDLED.to_owned(), Value::Array(placed));
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
            let (index, inner) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(file) = index.parse::<usize>().ok().and_then(|i| self.files.get(i)) {
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

struct Bundler {
    /// The document itself: a reference back into it stays a local one.
    root: Option<PathBuf>,
    /// Each file read, with its contents (taken out while they are rewritten).
    placed: Vec<(PathBuf, Value)>,
    index_of: HashMap<PathBuf, usize>,
    unread: HashMap<(String, String), String>,
}

impl Bundler {
    /// Rewrites the references in `value`, which is in the file `name` (placed at `index`,
    /// or the root document), whose directory is `base`.
    fn rewrite(
        &mut self,
        value: &mut Value,
        base: &Path,
        index: Option<usize>,
        name: &str,
        at: Option<&At<'_>>,
    ) -> Result<(), SpecError> {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get_mut("$ref") {
                    match self.target(reference, base, index)? {
                        Target::Unchanged => {}
                        Target::At(rewritten) => *reference = rewritten,
                        Target::Unread(why) => {
                            let why = format!("$ref {reference:?} {why}");
                            let pointer = push(&At::pointer(at), "$ref");
                            self.unread.insert((name.to_owned(), pointer), why);
                        }
                    }
                }
                for (key, child) in map.iter_mut() {
                    // Examples are data: a `$ref` inside one is a property like any other.
                    if !matches!(key.as_str(), "example" | "examples" | "$ref") {
                        let here = At {
                            parent: at,
                            token: Token::Key(key),
                        };
                        self.rewrite(child, base, index, name, Some(&here))?;
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let here = At {
                        parent: at,
                        token: Token::Index(i),
                    };
                    self.rewrite(item, base, index, name, Some(&here))?;
                }
            }
            _ => {}
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
                Some(i) => Target::At(format!("#/{BUNDLED}/{i}{fragment}")),
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
        let placed = match self.index_of.get(&key) {
            Some(&i) => i,
            None => {
                let contents = document::read(&path, &path.display().to_string())?;
                self.placed.push((path, contents));
                self.index_of.insert(key, self.placed.len() - 1);
                self.placed.len() - 1
            }
        };
        Ok(Target::At(format!("#/{BUNDLED}/{placed}{fragment}")))
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
        assert_eq!(doc["a"]["$ref"], "#/x-specgate-bundled/0/Pet");
        assert_eq!(
            doc["b"]["$ref"], "#/x-specgate-bundled/0/Tag",
            "one file, placed once"
        );
        assert_eq!(doc["c"]["$ref"], "#/local");
        assert_eq!(
            doc["example"]["$ref"], "not/a/file.yaml",
            "examples are data"
        );
        let pet = &doc[BUNDLED][0]["Pet"]["properties"];
        assert_eq!(pet["owner"]["$ref"], "#/x-specgate-bundled/1/Owner");
        assert_eq!(pet["tag"]["$ref"], "#/x-specgate-bundled/0/Tag");
        assert_eq!(doc[BUNDLED][1]["Owner"], json!({"type": "string"}));
        assert_eq!(
            doc[BUNDLED][1]["Back"]["$ref"], "#/c",
            "back into the document itself"
        );

        let mut error = SpecError::new("api.yaml", "/x-specgate-bundled/1/Owner/type", "bad");
        bundle.locate(&mut error);
        assert!(error.file.ends_with("models/owner.json"), "{}", error.file);
        assert_eq!(error.pointer, "/Owner/type");
    }

    #[test]
    fn a_reference_that_cannot_be_read_is_left_with_the_reason_it_was_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = json!({
            "paths": {"/a": {"$ref": "missing.yaml#/A"}},
            "x": {"$ref": "https://example.com/s.json#/A"}
        });
        let bundle = Bundle::resolve(&mut doc, &dir.path().join("api.yaml")).unwrap();
        assert_eq!(
            doc["paths"]["/a"]["$ref"], "missing.yaml#/A",
            "left as written"
        );
        assert!(doc.get(BUNDLED).is_none());
        let mut reached = SpecError::new("api.yaml", "/paths/~1a/$ref", "$ref is not local");
        let file = dir.path().join("api.yaml").display().to_string();
        reached.file = file.clone();
        bundle.locate(&mut reached);
        assert!(
            reached.message.contains("missing.yaml") && reached.message.contains("does not exist"),
            "{reached}"
        );
        let mut reached = SpecError::new(&file, "/x/$ref", "$ref is not local");
        bundle.locate(&mut reached);
        assert!(reached.message.contains("on the network"), "{reached}");
    }
}
