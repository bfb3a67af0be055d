//! Templates: minijinja, sandboxed. No loader (no include, import or extends), no macros, only the
//! filters below, strict undefined values, a fuel budget that bounds both the work and the memory
//! of one render, and output written through a writer that stops at the Secret size bound.
//!
//! Errors name the template key and a line, never the template text or a value.

use crate::error::{Error, Result};
use base64::Engine as _;
use minijinja::value::{Serde, Value as JValue, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind, Output, State, UndefinedBehavior};
use serde_json::Value;
use std::cell::Cell;
use std::io;
use std::rc::Rc;

/// Work and memory budget of one template render (about 64 bytes of data per unit).
pub const TEMPLATE_FUEL: u64 = 200_000;
/// Longest template source accepted (also the CRD's `maxLength`).
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// Most templates in one ManagedSecret (also the CRD's `maxProperties`).
pub const MAX_TEMPLATES: usize = 32;

/// The filters a template may use.
pub const FILTERS: &[&str] = &[
    "urlencode",
    "base64",
    "b64encode",
    "b64decode",
    "tojson",
    "default",
    "lower",
    "upper",
    "trim",
];

/// The internal function legacy placeholders (`{{ .field }}`, `{{ my-key }}`) are rewritten to.
const FIELD_FN: &str = "__ms_field";
const TOO_LARGE: &str = "the result is larger than a Secret may hold";
const NULL_VALUE: &str = "a null value cannot be placed";
const BINARY: &str = "b64decode produced binary data; templates produce text";

/// The templates of one spec, compiled once per spec change.
pub struct Templates {
    /// Built only when there are templates (most ManagedSecrets have none; thousands of empty
    /// environments would be memory for nothing).
    /// (Boxed: an environment is several hundred bytes inline, and every ManagedSecret's
    /// compiled mapping holds this field.)
    env: Option<Box<Environment<'static>>>,
    /// (Secret key, template name in `env`).
    keys: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Templates[{}]", self.keys.join(", "))
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::empty();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(32);
    env.set_formatter(format_value);
    env.add_filter("urlencode", urlencode);
    env.add_filter("base64", b64encode);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("tojson", tojson);
    env.add_filter("default", default);
    env.add_filter("lower", |s: &State, v: JValue| {
        map_text(s, v, |t| t.to_lowercase())
    });
    env.add_filter("upper", |s: &State, v: JValue| {
        map_text(s, v, |t| t.to_uppercase())
    });
    env.add_filter("trim", |s: &State, v: JValue| {
        map_text(s, v, |t| t.trim().to_string())
    });
    env.add_function(FIELD_FN, field);
    env
}

impl Templates {
    /// Compiles the templates (key -> source). Errors name the key and a line, not the source.
    pub fn compile<'a>(templates: impl Iterator<Item = (&'a String, &'a String)>) -> Result<Self> {
        let mut env: Option<Box<Environment<'static>>> = None;
        let mut keys = vec![];
        for (key, src) in templates {
            if keys.len() >= MAX_TEMPLATES {
                return Err(Error::InvalidSpec(format!(
                    "spec.templates has more than {MAX_TEMPLATES} entries"
                )));
            }
            if src.len() > MAX_TEMPLATE_BYTES {
                return Err(Error::InvalidSpec(format!(
                    "template {key}: {} bytes, over the limit of {MAX_TEMPLATE_BYTES}",
                    src.len()
                )));
            }
            let prepared = rewrite_legacy(src).map_err(|line| {
                Error::InvalidSpec(format!(
                    "template {key}: unclosed tag or string at line {line}"
                ))
            })?;
            env.get_or_insert_with(|| Box::new(environment()))
                .add_template_owned(key.clone(), prepared)
                .map_err(|e| Error::InvalidSpec(describe(key, &e)))?;
            keys.push(key.clone());
        }
        Ok(Templates { env, keys })
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Renders every template against `root` into `out`, spending at most `budget` bytes in all.
    /// Returns the bytes left.
    pub fn render_into(
        &self,
        root: &Value,
        budget: usize,
        mut emit: impl FnMut(&str, Vec<u8>) -> Result<()>,
    ) -> Result<usize> {
        let Some(env) = &self.env else {
            return Ok(budget);
        };
        let ctx = JValue::from(Serde(root));
        let mut left = budget;
        for key in &self.keys {
            let tmpl = env
                .get_template(key)
                .map_err(|e| Error::InvalidSpec(describe(key, &e)))?;
            let over = Rc::new(Cell::new(false));
            let mut buf = Vec::new();
            let writer = Bounded {
                out: &mut buf,
                left,
                over: over.clone(),
            };
            match tmpl.render_captured_to(ctx.clone(), writer) {
                Ok(_) => {}
                Err(_) if over.get() => return Err(too_large(key)),
                Err(e) => return Err(map_render_error(key, &e)),
            }
            left -= buf.len();
            emit(key, buf)?;
        }
        Ok(left)
    }
}

/// Turns a render error into the operator's error: no template text, no values.
fn too_large(key: &str) -> Error {
    Error::ValueTooLarge(format!(
        "with template {key} the Secret would hold more than {} bytes",
        super::MAX_SECRET_BYTES
    ))
}

fn map_render_error(key: &str, e: &minijinja::Error) -> Error {
    match (e.kind(), e.detail()) {
        (_, Some(TOO_LARGE)) => too_large(key),
        (_, Some(NULL_VALUE)) => Error::NullValue(format!("template {key}{}", at(e))),
        (ErrorKind::UndefinedError, _) => Error::KeyNotFound(format!(
            "template {key}{}: a field it reads is not in the AWS value",
            at(e)
        )),
        (ErrorKind::OutOfFuel, _) => Error::InvalidSpec(format!(
            "template {key}{}: the template does too much work (budget {TEMPLATE_FUEL})",
            at(e)
        )),
        _ => Error::InvalidSpec(describe(key, e)),
    }
}

fn at(e: &minijinja::Error) -> String {
    e.line().map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// "template KEY (line N): <kind>", with a hint for the kinds users meet.
fn describe(key: &str, e: &minijinja::Error) -> String {
    let hint = match e.kind() {
        ErrorKind::UnknownFilter => format!(" (filters: {})", FILTERS.join(", ")),
        ErrorKind::UnknownFunction | ErrorKind::UnknownTest | ErrorKind::UnknownMethod => {
            " (templates have no functions, tests or methods)".to_string()
        }
        ErrorKind::SyntaxError => {
            " (include, import, extends and macros are not available)".to_string()
        }
        _ => String::new(),
    };
    let kind = match e.kind() {
        ErrorKind::SyntaxError => "syntax error".to_string(),
        ErrorKind::UnknownFilter => "unknown filter".to_string(),
        ErrorKind::UnknownFunction => "unknown function".to_string(),
        ErrorKind::UnknownTest => "unknown test".to_string(),
        ErrorKind::UnknownMethod => "unknown method".to_string(),
        ErrorKind::InvalidOperation => match e.detail() {
            Some(BINARY) => BINARY.to_string(),
            _ => "invalid operation".to_string(),
        },
        ErrorKind::TooManyArguments => "too many arguments".to_string(),
        ErrorKind::MissingArgument => "missing argument".to_string(),
        ErrorKind::CannotUnpack => "cannot unpack".to_string(),
        ErrorKind::NonKey => "not a key type".to_string(),
        ErrorKind::NonPrimitive => "not a primitive".to_string(),
        _ => "cannot render".to_string(),
    };
    format!("template {key}{}: {kind}{hint}", at(e))
}

/// A writer that refuses to go past `left` bytes (and remembers that it did).
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
    over: Rc<Cell<bool>>,
}

impl io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.left.saturating_sub(self.out.len()) {
            self.over.set(true);
            return Err(io::Error::other(TOO_LARGE));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Charges the fuel for `n` bytes of work and refuses results over the Secret limit.
fn charge(state: &State, n: usize) -> Result<(), minijinja::Error> {
    if n > super::MAX_SECRET_BYTES {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            TOO_LARGE,
        ));
    }
    state.consume_fuel((n as u64) / 64 + 1)
}

/// The text a value places into the Secret: strings as they are, numbers and booleans as JSON
/// writes them, objects and lists as compact JSON, null refused.
fn text_of(v: &JValue) -> Result<String, minijinja::Error> {
    match v.kind() {
        ValueKind::String => Ok(v.as_str().unwrap_or_default().to_string()),
        ValueKind::Bytes => String::from_utf8(v.as_bytes().unwrap_or_default().to_vec())
            .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, BINARY)),
        ValueKind::None => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            NULL_VALUE,
        )),
        ValueKind::Undefined => Err(minijinja::Error::from(ErrorKind::UndefinedError)),
        _ => serde_json::to_string(v)
            .map_err(|_| minijinja::Error::new(ErrorKind::BadSerialization, "not JSON")),
    }
}

fn format_value(out: &mut Output, state: &mut State, v: &JValue) -> Result<(), minijinja::Error> {
    let t = text_of(v)?;
    charge(state, t.len())?;
    out.write_str(&t)
        .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, TOO_LARGE))
}

fn map_text(
    state: &State,
    v: JValue,
    f: impl Fn(&str) -> String,
) -> Result<String, minijinja::Error> {
    let t = text_of(&v)?;
    charge(state, t.len())?;
    let out = f(&t);
    charge(state, out.len())?;
    Ok(out)
}

/// Percent-encodes everything but ASCII letters and digits (safe in any part of a URL).
fn urlencode(state: &State, v: JValue) -> Result<String, minijinja::Error> {
    map_text(state, v, |t| {
        percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC).to_string()
    })
}

fn b64encode(state: &State, v: JValue) -> Result<String, minijinja::Error> {
    map_text(state, v, |t| {
        base64::engine::general_purpose::STANDARD.encode(t.as_bytes())
    })
}

fn b64decode(state: &State, v: JValue) -> Result<String, minijinja::Error> {
    let t = text_of(&v)?;
    charge(state, t.len())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(t.trim().as_bytes())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t.trim().as_bytes()))
        .map_err(|_| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "b64decode: the input is not base64",
            )
        })?;
    String::from_utf8(bytes).map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, BINARY))
}

fn tojson(state: &State, v: JValue) -> Result<String, minijinja::Error> {
    if v.is_undefined() {
        return Err(minijinja::Error::from(ErrorKind::UndefinedError));
    }
    let out = serde_json::to_string(&v)
        .map_err(|_| minijinja::Error::new(ErrorKind::BadSerialization, "not JSON"))?;
    charge(state, out.len())?;
    Ok(out)
}

/// `default(fallback, boolean=false)`: the fallback for an undefined or null value (and, with
/// `true`, for any false-ish value such as an empty string).
fn default(v: JValue, fallback: Option<JValue>, boolean: Option<bool>) -> JValue {
    let missing = v.is_undefined() || v.is_none() || (boolean.unwrap_or(false) && !v.is_true());
    if missing {
        fallback.unwrap_or_else(|| JValue::from(""))
    } else {
        v
    }
}

/// The legacy lookup: an exact top-level key first (keys may contain dots), then dots go into
/// nested objects.
fn field(state: &State, path: &str) -> Result<JValue, minijinja::Error> {
    if let Some(v) = state.lookup(path).filter(|v| !v.is_undefined()) {
        return Ok(v);
    }
    let mut segs = path.split('.');
    let first = segs.next().unwrap_or_default();
    let mut cur = state
        .lookup(first)
        .filter(|v| !v.is_undefined())
        .ok_or_else(|| minijinja::Error::from(ErrorKind::UndefinedError))?;
    for s in segs {
        cur = cur
            .get_attr(s)
            .ok()
            .filter(|v| !v.is_undefined())
            .ok_or_else(|| minijinja::Error::from(ErrorKind::UndefinedError))?;
    }
    Ok(cur)
}

/// Rewrites the placeholders of the original template syntax that are not Jinja expressions
/// (`{{ .field }}`, `{{ my-key }}`, `{{ .a.b | urlencode }}`) into calls of the legacy lookup, and
/// leaves everything else to minijinja. Lines stay where they were. Err(line) for an unclosed tag.
pub fn rewrite_legacy(src: &str) -> std::result::Result<String, usize> {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    let line_of = |rest: &str| src[..src.len() - rest.len()].matches('\n').count() + 1;
    loop {
        let Some(start) = rest.find('{') else {
            out.push_str(rest);
            return Ok(out);
        };
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let close = match rest.as_bytes().get(1) {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => "#}",
            _ => {
                out.push('{');
                rest = &rest[1..];
                continue;
            }
        };
        let end = if close == "#}" {
            rest[2..].find(close).map(|i| i + 2)
        } else {
            find_outside_strings(&rest[2..], close).map(|i| i + 2)
        }
        .ok_or_else(|| line_of(rest))?;
        let tag = &rest[..end + 2];
        if close == "%}" && tag[2..end].trim_matches(['-', '+', ' ', '\t']).trim() == "raw" {
            // {% raw %} ... {% endraw %}: copied untouched.
            let body = &rest[end + 2..];
            let stop = find_endraw(body).ok_or_else(|| line_of(rest))?;
            out.push_str(&rest[..end + 2 + stop]);
            rest = &rest[end + 2 + stop..];
            continue;
        }
        if close == "}}" {
            out.push_str(&legacy_placeholder(tag).unwrap_or_else(|| tag.to_string()));
        } else {
            out.push_str(tag);
        }
        rest = &rest[end + 2..];
    }
}

/// The byte offset after `{% endraw %}` in `body`.
fn find_endraw(body: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = body[from..].find("{%") {
        let s = from + i;
        let e = body[s + 2..].find("%}")? + s + 2;
        if body[s + 2..e].trim_matches(['-', '+', ' ', '\t']).trim() == "endraw" {
            return Some(e + 2);
        }
        from = e + 2;
    }
    None
}

/// Where `close` first appears in `s` outside '...' and "..." literals.
fn find_outside_strings(s: &str, close: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match quote {
            Some(q) => {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == q {
                    quote = None;
                }
            }
            None => {
                if b[i] == b'\'' || b[i] == b'"' {
                    quote = Some(b[i]);
                } else if b[i..].starts_with(close.as_bytes()) {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// `{{ .a.b-c | f }}` -> `{{ __ms_field("a.b-c") | f }}` when the expression is a bare legacy path
/// that Jinja would read differently (a leading dot or a '-').
fn legacy_placeholder(tag: &str) -> Option<String> {
    let inner = &tag[2..tag.len() - 2];
    let (lead, inner) = match inner.strip_prefix(['-', '+']) {
        Some(r) => (&tag[2..3], r),
        None => ("", inner),
    };
    let (inner, trail) = match inner.strip_suffix(['-', '+']) {
        Some(r) => (r, &inner[inner.len() - 1..]),
        None => (inner, ""),
    };
    let (path, filter) = match inner.split_once('|') {
        Some((p, f)) => (p.trim(), Some(f.trim())),
        None => (inner.trim(), None),
    };
    let legacy_chars = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if !legacy_chars(path) || !(path.starts_with('.') || path.contains('-')) {
        return None;
    }
    if let Some(f) = filter {
        if !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || f.is_empty() {
            return None;
        }
    }
    let path = path.strip_prefix('.').unwrap_or(path);
    if path.is_empty() {
        return None;
    }
    Some(match filter {
        Some(f) => format!("{{{{{lead} {FIELD_FN}(\"{path}\") | {f} {trail}}}}}"),
        None => format!("{{{{{lead} {FIELD_FN}(\"{path}\") {trail}}}}}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn render_one(src: &str, v: &Value) -> Result<String> {
        let m = BTreeMap::from([("K".to_string(), src.to_string())]);
        let t = Templates::compile(m.iter())?;
        let mut got = String::new();
        t.render_into(v, crate::render::MAX_SECRET_BYTES, |_, b| {
            got = String::from_utf8(b).unwrap();
            Ok(())
        })?;
        Ok(got)
    }

    fn creds() -> Value {
        json!({"username": "dbadmin", "password": "p@ss/w:rd", "host": "db.local", "port": 5432,
               "tls": true, "nested": {"a": {"b": "deep"}}, "my-key": "hyphen", "a.b": "dotted", "none": null,
               "list": ["x", "y"]})
    }

    #[test]
    fn the_original_placeholders_keep_working() {
        let v = creds();
        assert_eq!(
            render_one(
                "postgres://{{ username }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ .nested.a.b }}",
                &v
            )
            .unwrap(),
            "postgres://dbadmin:p%40ss%2Fw%3Ard@db.local:5432/deep"
        );
        assert_eq!(render_one("{{ my-key }}", &v).unwrap(), "hyphen");
        assert_eq!(render_one("{{ .a.b }}", &v).unwrap(), "dotted");
        assert_eq!(
            render_one("{{ .my-key | base64 }}", &v).unwrap(),
            "aHlwaGVu"
        );
        assert_eq!(render_one("{{- .username -}} ", &v).unwrap(), "dbadmin");
        assert_eq!(
            render_one("{{ tls }} {{ nested.a }}", &v).unwrap(),
            r#"true {"b":"deep"}"#
        );
    }

    #[test]
    fn the_filters_users_of_other_operators_rely_on() {
        let v = creds();
        assert_eq!(
            render_one("{{ username | b64encode }}", &v).unwrap(),
            "ZGJhZG1pbg=="
        );
        assert_eq!(
            render_one("{{ 'ZGJhZG1pbg==' | b64decode }}", &v).unwrap(),
            "dbadmin"
        );
        assert_eq!(
            render_one("{{ list | tojson }}", &v).unwrap(),
            r#"["x","y"]"#
        );
        assert_eq!(
            render_one("{{ password | tojson }}", &v).unwrap(),
            r#""p@ss/w:rd""#
        );
        assert_eq!(
            render_one("{{ missing | default('fallback') }}", &v).unwrap(),
            "fallback"
        );
        assert_eq!(render_one("{{ none | default('n') }}", &v).unwrap(), "n");
        assert_eq!(
            render_one("{{ '' | default('e', true) }}", &v).unwrap(),
            "e"
        );
        assert_eq!(render_one("{{ username | upper }}", &v).unwrap(), "DBADMIN");
        assert_eq!(render_one("{{ 'ABC' | lower }}", &v).unwrap(), "abc");
        assert_eq!(render_one("{{ '  x ' | trim }}", &v).unwrap(), "x");
        // The .dockerconfigjson users build from a username and a password.
        let docker = r#"{"auths":{"{{ host }}":{"username":{{ username | tojson }},"password":{{ password | tojson }},"auth":"{{ (username ~ ':' ~ password) | b64encode }}"}}}"#;
        let out: Value = serde_json::from_str(&render_one(docker, &v).unwrap()).unwrap();
        assert_eq!(out["auths"]["db.local"]["auth"], "ZGJhZG1pbjpwQHNzL3c6cmQ=");
        assert_eq!(out["auths"]["db.local"]["password"], "p@ss/w:rd");
    }

    #[test]
    fn statements_work_but_include_import_and_macros_do_not_exist() {
        let v = creds();
        assert_eq!(
            render_one("{% for x in list %}{{ x }},{% endfor %}", &v).unwrap(),
            "x,y,"
        );
        assert_eq!(
            render_one("{% if tls %}on{% else %}off{% endif %}", &v).unwrap(),
            "on"
        );
        assert_eq!(
            render_one("{% raw %}{{ .x }}{% endraw %}", &v).unwrap(),
            "{{ .x }}"
        );
        for bad in [
            "{% include 'x' %}",
            "{% import 'x' as y %}",
            "{% extends 'x' %}",
            "{% macro m() %}{% endmacro %}",
        ] {
            let e = render_one(bad, &v).unwrap_err();
            assert_eq!(e.reason(), "InvalidSpec", "{bad}");
            assert!(!e.to_string().contains(bad), "{e}");
        }
        assert_eq!(
            render_one("{{ range(3) }}", &v).unwrap_err().reason(),
            "InvalidSpec"
        );
    }

    #[test]
    fn errors_give_a_position_never_the_template_or_a_value() {
        let v = creds();
        let e = render_one("secret-literal {{ missing_field }}", &v).unwrap_err();
        assert_eq!(e.reason(), "KeyNotFound");
        assert_eq!(
            e.to_string(),
            "KeyNotFound: template K (line 1): a field it reads is not in the AWS value"
        );
        let e = render_one("line1\n{{ password | nosuch }}", &v).unwrap_err();
        assert_eq!(e.reason(), "InvalidSpec");
        let msg = e.to_string();
        assert!(msg.starts_with("invalid spec: template K (line 2"), "{msg}");
        assert!(
            msg.contains("unknown filter") && !msg.contains("nosuch"),
            "{msg}"
        );
        let e = render_one("{{ password ", &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid spec: template K: unclosed tag or string at line 1"
        );
        let e = render_one("{{ none }}", &v).unwrap_err();
        assert_eq!(e.reason(), "NullValue");
        let e = render_one("{{ username | b64decode }}", &v).unwrap_err();
        assert!(!e.to_string().contains("dbadmin"), "{e}");
    }

    #[test]
    fn multibyte_text_next_to_tags_is_not_split() {
        // Found by make fuzz: a scan for '}}' that indexed into the middle of a character.
        let v = creds();
        for src in [
            "{{{{{{{HHHH7\n\n\n\u{708}{6~7",
            "{{ 'ä' }}ö{{ username }}",
            "é{% if tls %}ü{% endif %}",
        ] {
            let _ = render_one(src, &v);
        }
        assert_eq!(
            render_one("ä{{ 'ö' }}ü{{ username }}", &v).unwrap(),
            "äöüdbadmin"
        );
    }

    #[test]
    fn output_and_work_are_bounded() {
        let v = json!({"x": "y".repeat(60_000)});
        // ~300k placeholders would be 18 GB of output: the writer stops at the Secret limit.
        let many = "{{ x }}".repeat(2_000);
        assert_eq!(render_one(&many, &v).unwrap_err().reason(), "ValueTooLarge");
        // Doubling a string runs out of fuel (which also bounds memory) long before memory does.
        let bomb = format!(
            "{{% set a = x %}}{}{{{{ a }}}}",
            "{% set a = a ~ a %}".repeat(40)
        );
        let e = render_one(&bomb, &v).unwrap_err();
        assert_eq!(e.reason(), "InvalidSpec");
        assert!(e.to_string().contains("does too much work"), "{e}");
        // So do nested loops over a long list.
        let loop_bomb = "{% for a in list %}{% for b in list %}{{ x }}{% endfor %}{% endfor %}";
        let big_list = json!({"x": "y", "list": (0..5000).collect::<Vec<_>>()});
        let e = render_one(loop_bomb, &big_list).unwrap_err();
        assert!(e.to_string().contains("does too much work"), "{e}");
        let e = render_one(&"a".repeat(MAX_TEMPLATE_BYTES + 1), &v).unwrap_err();
        assert_eq!(e.reason(), "InvalidSpec");
    }
}
