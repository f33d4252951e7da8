//! The `tojson` filter as Hugging Face chat templates see it: Python's
//! `json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`,
//! byte for byte (key order kept, `", "` / `": "` separators, Python float
//! spelling, no HTML escaping — minijinja's own `tojson` escapes `<` and `'`).

use std::fmt::Write;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Formatting options of one `json.dumps` call.
struct Style {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// Nesting limit: templates never nest deeper; a cycle cannot recurse forever.
const MAX_DEPTH: usize = 128;

/// `value | tojson(indent=None, separators=None, sort_keys=False, ensure_ascii=False)`.
pub fn tojson_filter(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                let n = v
                    .as_i64()
                    .ok_or_else(|| bad("tojson: indent must be an integer or a string"))?;
                Some(" ".repeat(n.clamp(0, 64) as usize))
            }
        },
    };
    // Python's defaults: (", ", ": ") without indent, (",", ": ") with one.
    let (mut item_sep, mut key_sep) = match indent {
        None => (", ".to_string(), ": ".to_string()),
        Some(_) => (",".to_string(), ": ".to_string()),
    };
    if let Some(seps) = separators.filter(|v| !v.is_none() && !v.is_undefined()) {
        let parts: Vec<Value> = seps.try_iter()?.collect();
        match parts.as_slice() {
            [a, b] => {
                item_sep = a
                    .as_str()
                    .ok_or_else(|| bad("tojson: separators must be strings"))?
                    .to_string();
                key_sep = b
                    .as_str()
                    .ok_or_else(|| bad("tojson: separators must be strings"))?
                    .to_string();
            }
            _ => return Err(bad("tojson: separators must be a pair of strings")),
        }
    }
    let style = Style {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_value(&mut out, &value, &style, 0)?;
    Ok(Value::from(out))
}

/// The JSON text of `value` as Python writes it with default arguments.
#[cfg(test)]
fn to_python_json(value: &Value) -> Result<String, Error> {
    let style = Style {
        indent: None,
        item_sep: ", ".into(),
        key_sep: ": ".into(),
        sort_keys: false,
        ensure_ascii: false,
    };
    let mut out = String::new();
    write_value(&mut out, value, &style, 0)?;
    Ok(out)
}

fn bad(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.to_string())
}

fn newline(out: &mut String, style: &Style, depth: usize) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(ind);
        }
    }
}

fn write_value(out: &mut String, v: &Value, style: &Style, depth: usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(bad("tojson: value nested too deeply"));
    }
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Undefined => return Err(bad("tojson: cannot serialize an undefined value")),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, v)?,
        ValueKind::String => write_string(out, v.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, depth + 1);
                write_value(out, item, style, depth + 1)?;
            }
            newline(out, style, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, style, depth + 1);
                write_key(out, k, style)?;
                out.push_str(&style.key_sep);
                write_value(out, &v.get_item(k)?, style, depth + 1)?;
            }
            newline(out, style, depth);
            out.push('}');
        }
        _ => write_string(out, &v.to_string(), style.ensure_ascii),
    }
    Ok(())
}

/// Python converts non-string keys: ints and floats to their text, bools to
/// `true`/`false`, None to `null`.
fn write_key(out: &mut String, k: &Value, style: &Style) -> Result<(), Error> {
    match k.kind() {
        ValueKind::String => write_string(out, k.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::None => out.push_str("\"null\""),
        ValueKind::Bool => out.push_str(if k.is_true() { "\"true\"" } else { "\"false\"" }),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, k)?;
            write_string(out, &s, style.ensure_ascii);
        }
        _ => return Err(bad("tojson: keys must be str, int, float, bool or None")),
    }
    Ok(())
}

fn write_number(out: &mut String, v: &Value) -> Result<(), Error> {
    if v.is_integer() {
        if let Some(i) = v.as_i64() {
            let _ = write!(out, "{i}");
            return Ok(());
        }
        // Beyond i64 (u64 / i128 values): their decimal text is the JSON.
        out.push_str(&v.to_string());
        return Ok(());
    }
    let f = f64::try_from(v.clone()).map_err(|_| bad("tojson: unsupported number"))?;
    out.push_str(&python_float(f));
    Ok(())
}

/// Python's `repr(float)`: the shortest round-trip digits, in positional
/// notation when the decimal exponent is in [-4, 16), else `d.ddde+XX`.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let s = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..(exp + 1) as usize],
                &digits[(exp + 1) as usize..]
            )
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.1), "0.1");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(123456.789), "123456.789");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(1.5e16), "1.5e+16");
        assert_eq!(python_float(1e15), "1000000000000000.0");
        assert_eq!(python_float(-2.5), "-2.5");
        assert_eq!(python_float(1.23e-7), "1.23e-07");
    }

    #[test]
    fn dumps_like_python() {
        let v = Value::from_serialize(
            serde_json::json!({"b": [1, 2.5, "x<'y>\n"], "a": {}, "c": null, "d": true, "é": []}),
        );
        assert_eq!(
            to_python_json(&v).unwrap(),
            r#"{"b": [1, 2.5, "x<'y>\n"], "a": {}, "c": null, "d": true, "é": []}"#
        );
    }
}
