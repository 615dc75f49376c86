//! Vendor `pattern`s, read as JavaScript reads them, in terms the regex engine understands.
//!
//! OpenAPI documents are written for ECMA-262 regular expressions, and vendors test them in
//! JavaScript, which accepts much that the engine refuses. [`translate`] rewrites what has one
//! plain meaning:
//!
//! - an escaped letter with no meaning of its own is that letter (`\p` without `{`, `\i`);
//! - `\A` is the start and `\Z`/`\z` the end of the text (Java and Ruby; no one writes `\A` to
//!   mean `A`);
//! - `\p{XDigit}`, a Java POSIX class the engine lacks, is its ASCII ranges (the engine reads
//!   the others, `\p{Alpha}` and the like, as Unicode properties, as JavaScript does);
//! - in a class, `-` next to `\w`, `\d`, `\s` is a literal hyphen (`[\w-.+]`), `\b` is a
//!   backspace and `[` is a bracket;
//! - octal escapes (`\000-\037`) are the characters they name;
//! - UTF-16 surrogate halves, which is how JavaScript spells characters beyond the Basic
//!   Multilingual Plane, are those characters: a pair (`\uD83D\uDE00`), a class of high
//!   halves followed by one of low halves, halves among other characters of a class;
//! - `\u{1F600}` is one escape, as in JavaScript's `u` mode;
//! - `{` and `}` that do not make a quantifier are literal text (`{Name}`).
//!
//! What stays ambiguous (a malformed quantifier like `{1-20}`, a lone surrogate outside a
//! class) is [`Untranslatable`]: the caller skips such a pattern with a warning, which can only
//! make specgate more lenient.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A pattern with no single reading the engine could be given.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Untranslatable(pub &'static str);

/// Rewrites `pattern` as described in the module docs; unchanged patterns are borrowed.
pub(super) fn translate(pattern: &str) -> Result<Cow<'_, str>, Untranslatable> {
    if !pattern.contains(['\\', '[', '{', '}']) {
        return Ok(Cow::Borrowed(pattern));
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i = escape_outside(&chars, i, &mut out)?,
            '[' => i = class(&chars, i, &mut out)?,
            '{' => match quantifier(&chars, i) {
                Brace::Quantifier(end) => {
                    out.extend(&chars[i..end]);
                    i = end;
                }
                Brace::Malformed => {
                    return Err(Untranslatable("a malformed quantifier such as {1-20}"));
                }
                Brace::Literal => {
                    out.push_str("\\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str("\\}");
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    if out == pattern {
        Ok(Cow::Borrowed(pattern))
    } else {
        Ok(Cow::Owned(out))
    }
}

enum Brace {
    /// `{n}`, `{n,}` or `{n,m}`, ending before this index.
    Quantifier(usize),
    /// Digits, commas and hyphens that were surely meant as one (`{1-20}`, `{,2}`).
    Malformed,
    Literal,
}

fn quantifier(chars: &[char], open: usize) -> Brace {
    let Some(close) = chars[open..].iter().position(|&c| c == '}') else {
        return Brace::Literal;
    };
    let inside: String = chars[open + 1..open + close].iter().collect();
    let (min, max) = match inside.split_once(',') {
        Some((min, max)) => (min, Some(max)),
        None => (inside.as_str(), None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(min) && max.is_none_or(|m| m.is_empty() || digits(m)) {
        return Brace::Quantifier(open + close + 1);
    }
    if !inside.is_empty()
        && inside
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ',' | '-' | ' '))
    {
        return Brace::Malformed;
    }
    Brace::Literal
}

/// The ranges, for use inside `[...]`, of a class name the engine cannot read but Java's
/// POSIX classes (which vendors copy into their documents) define. The engine reads the
/// others (`\p{Alpha}`, `\p{Lower}`, ...) as Unicode properties, as JavaScript does.
fn posix_ranges(name: &str) -> Option<&'static str> {
    match name {
        "XDigit" => Some("0-9A-Fa-f"),
        _ => None,
    }
}

/// `{Name}` after `\p` at `at`: the name and the index after `}`.
fn braced_name(chars: &[char], at: usize) -> Option<(String, usize)> {
    if chars.get(at) != Some(&'{') {
        return None;
    }
    let close = chars[at..].iter().position(|&c| c == '}')?;
    Some((chars[at + 1..at + close].iter().collect(), at + close + 1))
}

/// Letters an escape gives a meaning to in JavaScript; any other escaped letter is itself.
fn is_meaningful_escape(c: char) -> bool {
    matches!(
        c,
        'd' | 'D'
            | 'w'
            | 'W'
            | 's'
            | 'S'
            | 'b'
            | 'B'
            | 'f'
            | 'n'
            | 'r'
            | 't'
            | 'v'
            | 'c'
            | 'x'
            | 'u'
            | 'k'
    )
}

/// An octal escape (`\0`, `\037`) at `at` (the backslash): the character and the index after.
fn octal(chars: &[char], at: usize) -> Option<(u32, usize)> {
    let first = *chars.get(at + 1)?;
    if !('0'..='3').contains(&first) {
        return None;
    }
    let mut end = at + 2;
    while end < at + 4 && chars.get(end).is_some_and(|c| ('0'..='7').contains(c)) {
        end += 1;
    }
    // `\1`..`\3` alone are back-references; only `\0...` and three-digit forms are octal.
    if first != '0' && end - at < 4 {
        return None;
    }
    let digits: String = chars[at + 1..end].iter().collect();
    Some((u32::from_str_radix(&digits, 8).ok()?, end))
}

/// `\u{HEX}` or `\x{HEX}` at `at` (the backslash): the code point, its text as the engine
/// reads it, and the index after. (JavaScript reads `\u{...}` so with the `u` flag; the
/// engine reads both.)
fn braced_code(chars: &[char], at: usize) -> Option<(u32, String, usize)> {
    if !matches!(chars.get(at + 1), Some('u' | 'x')) || chars.get(at + 2) != Some(&'{') {
        return None;
    }
    let close = at + 3 + chars.get(at + 3..)?.iter().position(|&c| c == '}')?;
    let hex: String = chars[at + 3..close].iter().collect();
    if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let code = u32::from_str_radix(&hex, 16).ok()?;
    Some((code, format!("\\x{{{hex}}}"), close + 1))
}

/// `\uXXXX` at `at` (the backslash): the code unit and the index after.
fn utf16_unit(chars: &[char], at: usize) -> Option<(u32, usize)> {
    if chars.get(at + 1) != Some(&'u') {
        return None;
    }
    let hex: String = chars.get(at + 2..at + 6)?.iter().collect();
    if hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u32::from_str_radix(&hex, 16).ok()?, at + 6))
}

fn is_surrogate(unit: u32) -> bool {
    (0xD800..=0xDFFF).contains(&unit)
}

/// An escape outside a class, starting at the backslash at `at`; returns the index after it.
fn escape_outside(chars: &[char], at: usize, out: &mut String) -> Result<usize, Untranslatable> {
    let Some(&c) = chars.get(at + 1) else {
        out.push_str("\\\\");
        return Ok(at + 1);
    };
    if let Some((code, end)) = octal(chars, at) {
        let _ = write!(out, "\\x{{{code:X}}}");
        return Ok(end);
    }
    if let Some((code, text, end)) = braced_code(chars, at) {
        if is_surrogate(code) {
            return Err(Untranslatable("a lone UTF-16 surrogate"));
        }
        out.push_str(&text);
        return Ok(end);
    }
    if let Some((unit, end)) = utf16_unit(chars, at) {
        if !is_surrogate(unit) {
            out.extend(&chars[at..end]);
            return Ok(end);
        }
        // A pair is one character beyond the BMP; a lone half is nothing text can hold.
        return match utf16_unit(chars, end) {
            Some((low, after))
                if (0xD800..0xDC00).contains(&unit) && (0xDC00..=0xDFFF).contains(&low) =>
            {
                let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                let _ = write!(out, "\\x{{{code:X}}}");
                Ok(after)
            }
            _ => Err(Untranslatable("a lone UTF-16 surrogate")),
        };
    }
    match c {
        'A' => out.push('^'),
        'Z' | 'z' => out.push('$'),
        'p' | 'P' => match braced_name(chars, at + 2) {
            Some((name, end)) => {
                match posix_ranges(&name) {
                    Some(ranges) => {
                        let negate = if c == 'P' { "^" } else { "" };
                        let _ = write!(out, "[{negate}{ranges}]");
                    }
                    None => out.extend(&chars[at..end]),
                }
                return Ok(end);
            }
            None => out.push(c),
        },
        c if c.is_ascii_alphabetic() && !is_meaningful_escape(c) => out.push(c),
        c => {
            out.push('\\');
            out.push(c);
        }
    }
    Ok(at + 2)
}

/// One item of a class, as it will be written.
enum Item {
    /// A single character (with its code, to form ranges), written as `text`.
    Char { code: u32, text: String },
    /// `\w`, `\d`, `\s`, a Unicode property or POSIX ranges: never one end of a range.
    Set(String),
}

/// A class, read: single characters, sets (`\w`) and ranges, as they will be written.
struct Class {
    negated: bool,
    parts: Vec<Part>,
}

enum Part {
    One(Item),
    Range {
        lo: u32,
        lo_text: String,
        hi: u32,
        hi_text: String,
    },
}

/// Which half of a UTF-16 surrogate pair a class holds, if it holds nothing else.
#[derive(PartialEq, Eq)]
enum Half {
    High,
    Low,
}

impl Class {
    fn half(&self) -> Option<Half> {
        let bounds = |part: &Part| match part {
            Part::One(Item::Char { code, .. }) => Some((*code, *code)),
            Part::Range { lo, hi, .. } => Some((*lo, *hi)),
            Part::One(Item::Set(_)) => None,
        };
        let mut all = self.parts.iter().map(bounds);
        let within = |lo, hi| {
            self.parts
                .iter()
                .map(bounds)
                .all(|b| b.is_some_and(|(l, h)| lo <= l && h <= hi))
        };
        if self.negated || all.next().is_none() {
            return None;
        }
        if within(0xD800, 0xDBFF) {
            Some(Half::High)
        } else if within(0xDC00, 0xDFFF) {
            Some(Half::Low)
        } else {
            None
        }
    }

    /// Writes the class for the engine. Surrogate halves among other characters (XML's
    /// `[\u0020-\uD7FF\uE000-\uFFFD\uD800-\uDFFF]`) stand for the characters beyond the
    /// Basic Multilingual Plane that JavaScript sees as pairs of them.
    fn write(&self, out: &mut String) -> Result<(), Untranslatable> {
        out.push('[');
        if self.negated {
            out.push('^');
        }
        let mut surrogates = false;
        for part in &self.parts {
            match part {
                Part::Range {
                    lo,
                    lo_text,
                    hi,
                    hi_text,
                } => {
                    if lo > hi {
                        return Err(Untranslatable("a class range out of order"));
                    }
                    if *hi < 0xD800 || *lo > 0xDFFF {
                        let _ = write!(out, "{lo_text}-{hi_text}");
                    } else {
                        surrogates = true;
                        if *lo < 0xD800 {
                            let _ = write!(out, "{lo_text}-\\x{{D7FF}}");
                        }
                        if *hi > 0xDFFF {
                            let _ = write!(out, "\\x{{E000}}-{hi_text}");
                        }
                    }
                }
                Part::One(Item::Char { code, .. }) if is_surrogate(*code) => surrogates = true,
                Part::One(Item::Char { text, .. } | Item::Set(text)) => out.push_str(text),
            }
        }
        if surrogates {
            out.push_str("\\x{10000}-\\x{10FFFF}");
        }
        out.push(']');
        Ok(())
    }
}

/// Writes the class from the `[` at `open`; returns the index after its `]`. A class of high
/// surrogate halves followed by one of low halves (`[\uD800-\uDBFF][\uDC00-\uDFFF]`, how
/// JavaScript spells "a character beyond the BMP") is that one character; either half alone
/// is nothing text can hold.
fn class(chars: &[char], open: usize, out: &mut String) -> Result<usize, Untranslatable> {
    let (first, end) = read_class(chars, open)?;
    match first.half() {
        None => {
            first.write(out)?;
            Ok(end)
        }
        Some(Half::High) if chars.get(end) == Some(&'[') => {
            let (second, after) = read_class(chars, end)?;
            if second.half() != Some(Half::Low) {
                return Err(Untranslatable("a class of lone UTF-16 surrogate halves"));
            }
            out.push_str("[\\x{10000}-\\x{10FFFF}]");
            Ok(after)
        }
        Some(_) => Err(Untranslatable("a class of lone UTF-16 surrogate halves")),
    }
}

/// Reads the class from the `[` at `open`; returns it and the index after its `]`.
fn read_class(chars: &[char], open: usize) -> Result<(Class, usize), Untranslatable> {
    let mut i = open + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        // `[]` matches nothing and `[^]` anything in JavaScript; the engine has neither.
        return Err(Untranslatable("an empty class"));
    }
    let mut items = Vec::new();
    let mut hyphens = Vec::new(); // indexes into `items` of unescaped `-`
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(Untranslatable("a class without its closing ]"));
        };
        match c {
            ']' => break,
            '\\' => {
                let (item, end) = class_escape(chars, i)?;
                items.push(item);
                i = end;
            }
            '-' => {
                hyphens.push(items.len());
                items.push(Item::Char {
                    code: '-' as u32,
                    text: "-".into(),
                });
                i += 1;
            }
            c => {
                let text = match c {
                    // Set operations and nesting in the engine, plain characters in JavaScript.
                    '[' | '&' | '~' => format!("\\{c}"),
                    c => c.to_string(),
                };
                items.push(Item::Char {
                    code: c as u32,
                    text,
                });
                i += 1;
            }
        }
    }
    let count = items.len();
    let mut parts = Vec::new();
    let mut items = items.into_iter().enumerate().peekable();
    while let Some((k, item)) = items.next() {
        let ranged = hyphens.contains(&(k + 1)) && k + 2 < count;
        match item {
            Item::Char {
                code: lo,
                text: lo_text,
            } if ranged => {
                items.next(); // the hyphen
                match items.next() {
                    Some((
                        _,
                        Item::Char {
                            code: hi,
                            text: hi_text,
                        },
                    )) => {
                        parts.push(Part::Range {
                            lo,
                            lo_text,
                            hi,
                            hi_text,
                        });
                    }
                    // Beside `\w` and the like a hyphen cannot make a range: it is itself.
                    Some((_, set)) => {
                        parts.push(Part::One(Item::Char {
                            code: lo,
                            text: lo_text,
                        }));
                        parts.push(Part::One(literal_hyphen()));
                        parts.push(Part::One(set));
                    }
                    None => unreachable!("counted"),
                }
            }
            Item::Char { .. } if hyphens.contains(&k) && k > 0 && k + 1 < count => {
                parts.push(Part::One(literal_hyphen()));
            }
            item => parts.push(Part::One(item)),
        }
    }
    Ok((Class { negated, parts }, i + 1))
}

/// A `-` that makes no range, written so the engine does not read one either.
fn literal_hyphen() -> Item {
    Item::Char {
        code: '-' as u32,
        text: "\\-".into(),
    }
}

/// An escape inside a class, at the backslash at `at`.
fn class_escape(chars: &[char], at: usize) -> Result<(Item, usize), Untranslatable> {
    let Some(&c) = chars.get(at + 1) else {
        return Err(Untranslatable("a class without its closing ]"));
    };
    if let Some((code, end)) = octal(chars, at) {
        return Ok((
            Item::Char {
                code,
                text: format!("\\x{{{code:X}}}"),
            },
            end,
        ));
    }
    if let Some((code, text, end)) = braced_code(chars, at) {
        return Ok((Item::Char { code, text }, end));
    }
    if let Some((unit, end)) = utf16_unit(chars, at) {
        let text = chars[at..end].iter().collect();
        return Ok((Item::Char { code: unit, text }, end));
    }
    let plain = |code: char, text: String| {
        Ok((
            Item::Char {
                code: code as u32,
                text,
            },
            at + 2,
        ))
    };
    match c {
        'd' | 'D' | 'w' | 'W' | 's' | 'S' => Ok((Item::Set(format!("\\{c}")), at + 2)),
        'b' => plain('\u{8}', "\\x08".into()),
        'p' | 'P' => match braced_name(chars, at + 2) {
            Some((name, end)) => match (posix_ranges(&name), c) {
                (Some(ranges), 'p') => Ok((Item::Set(ranges.into()), end)),
                (Some(_), _) => Err(Untranslatable("a negated POSIX class inside a class")),
                (None, _) => Ok((Item::Set(chars[at..end].iter().collect()), end)),
            },
            None => plain(c, c.to_string()),
        },
        c if c.is_ascii_alphabetic() && !is_meaningful_escape(c) => plain(c, c.to_string()),
        c => plain(c, format!("\\{c}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pattern: &str) -> String {
        translate(pattern).unwrap().into_owned()
    }

    #[test]
    fn what_the_engine_reads_already_is_left_alone() {
        for pattern in [
            "^[a-z0-9-]+$",
            r"^\d{3}\.\w+$",
            r"^[\w\-]{1,63}$",
            "a{2,}",
            r"\p{L}+",
        ] {
            assert!(
                matches!(translate(pattern), Ok(Cow::Borrowed(_))),
                "{pattern}"
            );
        }
    }

    #[test]
    fn java_and_ruby_idioms_vendors_use() {
        assert_eq!(t(r"\A[a-z]+\Z"), "^[a-z]+$");
        assert_eq!(t(r"\p{XDigit}{8}"), "[0-9A-Fa-f]{8}");
        assert_eq!(t(r"^[\p{XDigit}:]*"), "^[0-9A-Fa-f:]*");
        // The engine reads these as Unicode properties, as JavaScript does: left alone.
        for pattern in [r"\p{Alpha}+", r"[\p{Lower}\p{Digit}]", r"\P{Punct}"] {
            assert!(
                matches!(translate(pattern), Ok(Cow::Borrowed(_))),
                "{pattern}"
            );
        }
    }

    #[test]
    fn braced_code_points_are_one_escape() {
        assert_eq!(t(r"\u{1F600}+"), r"\x{1F600}+");
        assert_eq!(t(r"[\u{1F600}-\u{1F64F}]"), r"[\x{1F600}-\x{1F64F}]");
        assert_eq!(t(r"\x{41}"), r"\x{41}");
    }

    #[test]
    fn javascript_readings_of_classes() {
        assert_eq!(t(r"^[\w-.+]+@[\w-.+]+$"), r"^[\w\-.+]+@[\w\-.+]+$");
        assert_eq!(t(r"[a-zA-Z\d-_/]"), r"[a-zA-Z\d\-_/]");
        assert_eq!(t(r"[\s-_()]"), r"[\s\-_()]");
        assert_eq!(t(r"[^/:|\000-\037]+"), r"[^/:|\x{0}-\x{1F}]+");
        assert_eq!(t(r"[\b]"), r"[\x08]");
        assert_eq!(t("[a[b]"), r"[a\[b]");
    }

    #[test]
    fn identity_escapes_are_the_letter() {
        assert_eq!(t(r"[^\p\{C\}]*\+"), r"[^p\{C\}]*\+");
        assert_eq!(t(r"\i\e"), "ie");
        assert_eq!(t(r"\.\-\/"), r"\.\-\/");
    }

    #[test]
    fn surrogate_halves_admit_characters_beyond_the_bmp() {
        assert_eq!(
            t(r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDBFF-\uDC00\uDFFF\t]*"),
            r"[\u0020-\uD7FF\uE000-\uFFFD\t\x{10000}-\x{10FFFF}]*"
        );
        assert_eq!(t(r"\uD83D\uDE00"), r"\x{1F600}");
        assert!(translate(r"a\uD800").is_err());
        // JavaScript's way to say one character beyond the BMP: one class of them here.
        assert_eq!(
            t(r"^(?:[\uD800-\uDBFF][\uDC00-\uDFFF])+$"),
            r"^(?:[\x{10000}-\x{10FFFF}])+$"
        );
        assert!(translate(r"[\uD800-\uDBFF]").is_err(), "a half alone");
        assert!(translate(r"[\uDC00-\uDFFF]x").is_err());
    }

    #[test]
    fn braces_that_are_not_quantifiers_are_text() {
        assert_eq!(t("who's {Name}?"), r"who's \{Name\}?");
        assert_eq!(t("{0-9]{1,15}"), r"\{0-9]{1,15}");
        assert!(translate("[a-z]{1-20}").is_err());
        assert!(translate("x{,2}").is_err());
        assert!(translate("[]").is_err());
    }
}
