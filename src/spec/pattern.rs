//! Vendor `pattern`s, read as JavaScript reads them, in terms the regex engine understands.
//!
//! OpenAPI documents are written for ECMA-262 regular expressions, and vendors test them in
//! JavaScript, which accepts much that the engine refuses. [`translate`] rewrites what has one
//! plain meaning:
//!
//! - an escaped letter with no meaning of its own is that letter (`\p` without `{`, `\i`);
//! - `\A` is the start and `\Z`/`\z` the end of the text (Java and Ruby; no one writes `\A` to
//!   mean `A`);
//! - Java's POSIX classes (`\p{XDigit}`, `\p{Alpha}`, ...) are their ASCII ranges;
//! - in a class, `-` next to `\w`, `\d`, `\s` is a literal hyphen (`[\w-.+]`), `\b` is a
//!   backspace and `[` is a bracket;
//! - octal escapes (`\000-\037`) are the characters they name;
//! - UTF-16 surrogate halves in a class (`\uD800-\uDFFF`), which JavaScript uses to admit
//!   characters beyond the Basic Multilingual Plane, admit those characters;
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

/// The ASCII ranges of a Java POSIX class name, for use inside `[...]`.
fn posix_ranges(name: &str) -> Option<&'static str> {
    Some(match name {
        "Lower" => "a-z",
        "Upper" => "A-Z",
        "ASCII" => "\\x00-\\x7F",
        "Alpha" => "A-Za-z",
        "Digit" => "0-9",
        "Alnum" => "0-9A-Za-z",
        "Punct" => "!-/:-@\\[-`{-~",
        "Graph" => "!-~",
        "Print" => " -~",
        "Blank" => " \\t",
        "Cntrl" => "\\x00-\\x1F\\x7F",
        "XDigit" => "0-9A-Fa-f",
        "Space" => " \\t\\n\\x0B\\f\\r",
        _ => return None,
    })
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

/// A class from the `[` at `open`; returns the index after its `]`.
fn class(chars: &[char], open: usize, out: &mut String) -> Result<usize, Untranslatable> {
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
    out.push('[');
    if negated {
        out.push('^');
    }
    let mut surrogates = false;
    let mut k = 0;
    while k < items.len() {
        let range_here = hyphens.contains(&(k + 1)) && k + 2 < items.len();
        match (&items[k], range_here.then(|| &items[k + 2])) {
            (
                Item::Char {
                    code: lo,
                    text: lo_text,
                },
                Some(Item::Char {
                    code: hi,
                    text: hi_text,
                }),
            ) => {
                let (lo, hi) = (*lo, *hi);
                if lo > hi {
                    return Err(Untranslatable("a class range out of order"));
                }
                if hi < 0xD800 || lo > 0xDFFF {
                    let _ = write!(out, "{lo_text}-{hi_text}");
                } else {
                    surrogates = true;
                    if lo < 0xD800 {
                        let _ = write!(out, "{lo_text}-\\x{{D7FF}}");
                    }
                    if hi > 0xDFFF {
                        let _ = write!(out, "\\x{{E000}}-{hi_text}");
                    }
                }
                k += 3;
                continue;
            }
            (Item::Char { code, .. }, _) if is_surrogate(*code) => surrogates = true,
            (Item::Char { code, .. }, _) if *code == '-' as u32 && k > 0 && k + 1 < items.len() => {
                // Beside `\w` and the like a hyphen cannot make a range: it is itself.
                out.push_str("\\-");
            }
            (Item::Char { text, .. } | Item::Set(text), _) => out.push_str(text),
        }
        k += 1;
    }
    if surrogates {
        out.push_str("\\x{10000}-\\x{10FFFF}");
    }
    out.push(']');
    Ok(i + 1)
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
        assert_eq!(t(r"\P{Digit}"), "[^0-9]");
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
