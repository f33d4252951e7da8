//! Chat templates (Hugging Face Jinja templates) rendered with `minijinja`
//! the way `transformers`' `apply_chat_template` renders them: blocks trimmed
//! (`trim_blocks`, `lstrip_blocks`), loop controls, the Python string and
//! dict methods, `raise_exception`, `strftime_now` and a `tojson` that writes
//! what Python's `json.dumps` writes.
//!
//! Templates come from GGUF metadata (`tokenizer.chat_template`) or from a
//! `tokenizer_config.json` (`chat_template`: a string, or a list of named
//! templates, `default` and `tool_use`).

use std::path::Path;

use ferrum_format::gguf::GgufFile;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Map;

use crate::tojson::tojson_filter;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template does not parse or fails while rendering (a
    /// `raise_exception`, a type error...). `line` is 1-based in the template.
    #[error("chat template{}: {message}{}", line.map(|l| format!(", line {l}")).unwrap_or_default(), source_line.as_ref().map(|s| format!("\n  | {s}")).unwrap_or_default())]
    Template {
        message: String,
        line: Option<usize>,
        source_line: Option<String>,
    },
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
}

/// Options of one rendering (the keyword arguments of `apply_chat_template`).
#[derive(Clone, Debug, Default)]
pub struct ChatOptions {
    pub add_generation_prompt: bool,
    /// Qwen3's `enable_thinking` (unset leaves the template's default).
    pub enable_thinking: Option<bool>,
    /// Tool definitions (JSON objects); absent means `tools` is `None`.
    pub tools: Option<Vec<serde_json::Value>>,
    pub bos_token: String,
    pub eos_token: String,
    /// Further template variables (`date_string`, `documents`, `builtin_tools`...).
    pub extra: Map<String, serde_json::Value>,
}

/// A parsed chat template with the special-token strings it is given.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Parses `source`; a syntax error names its line.
    pub fn new(source: impl Into<String>) -> Result<Self, ChatError> {
        let source = strip_generation_tags(&source.into());
        let mut env = environment();
        env.add_template_owned(NAME, source.clone())
            .map_err(|e| template_error(&e, &source))?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: String::new(),
            eos_token: String::new(),
        })
    }

    pub fn with_special_tokens(mut self, bos: impl Into<String>, eos: impl Into<String>) -> Self {
        self.bos_token = bos.into();
        self.eos_token = eos.into();
        self
    }

    /// The template text (after `{% generation %}` markers are removed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `tokenizer.chat_template` of a GGUF file, `None` when absent.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Self>, ChatError> {
        match file.get("tokenizer.chat_template") {
            None => Ok(None),
            Some(v) => {
                let s = v.as_str().ok_or_else(|| ChatError::Config {
                    path: "tokenizer.chat_template".into(),
                    reason: format!("expected a string, found {}", v.type_name()),
                })?;
                Ok(Some(Self::new(s)?))
            }
        }
    }

    /// `chat_template` of a `tokenizer_config.json` (`None` when absent),
    /// with its `bos_token` / `eos_token`. A list of named templates gives
    /// `tool_use` when `want_tools` and it exists, else `default`.
    pub fn from_tokenizer_config(path: &Path, want_tools: bool) -> Result<Option<Self>, ChatError> {
        let cfg_err = |reason: String| ChatError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| cfg_err(e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| cfg_err(format!("invalid JSON: {e}")))?;
        let source = match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => {
                // Newer checkpoints keep the template in a file beside the config.
                let jinja = path.with_file_name("chat_template.jinja");
                match std::fs::read_to_string(&jinja) {
                    Ok(s) => s,
                    Err(_) => return Ok(None),
                }
            }
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => pick_named(list, want_tools)
                .ok_or_else(|| cfg_err("chat_template list has no 'default' template".into()))?,
            Some(other) => {
                return Err(cfg_err(format!(
                    "chat_template must be a string or a list, found {other}"
                )))
            }
        };
        let token = |key: &str| -> String {
            match v.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(obj) => obj
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            }
        };
        Ok(Some(Self::new(source)?.with_special_tokens(
            token("bos_token"),
            token("eos_token"),
        )))
    }

    /// Renders `messages` (OpenAI-style JSON objects).
    pub fn render(
        &self,
        messages: &[serde_json::Value],
        opts: &ChatOptions,
    ) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| template_error(&e, &self.source))?;
        let mut ctx = Map::new();
        ctx.insert(
            "messages".into(),
            serde_json::Value::Array(messages.to_vec()),
        );
        // transformers passes `tools=None` and `documents=None` when absent.
        ctx.insert(
            "tools".into(),
            opts.tools
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::Array),
        );
        ctx.insert("documents".into(), serde_json::Value::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            opts.add_generation_prompt.into(),
        );
        let bos = if opts.bos_token.is_empty() {
            &self.bos_token
        } else {
            &opts.bos_token
        };
        let eos = if opts.eos_token.is_empty() {
            &self.eos_token
        } else {
            &opts.eos_token
        };
        ctx.insert("bos_token".into(), bos.clone().into());
        ctx.insert("eos_token".into(), eos.clone().into());
        if let Some(t) = opts.enable_thinking {
            ctx.insert("enable_thinking".into(), t.into());
        }
        for (k, v) in &opts.extra {
            ctx.insert(k.clone(), v.clone());
        }
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| template_error(&e, &self.source))
    }
}

fn pick_named(list: &[serde_json::Value], want_tools: bool) -> Option<String> {
    let named = |name: &str| {
        list.iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
            .and_then(|t| t.get("template").and_then(|s| s.as_str()))
            .map(str::to_string)
    };
    if want_tools {
        if let Some(t) = named("tool_use") {
            return Some(t);
        }
    }
    named("default")
}

/// transformers' `{% generation %}` extension only marks assistant spans for
/// training masks; its content renders unchanged, so the markers are dropped.
fn strip_generation_tags(source: &str) -> String {
    let mut out = source.to_string();
    for tag in ["generation", "endgeneration"] {
        for (open, close) in [("{%", "%}"), ("{%-", "%}"), ("{%", "-%}"), ("{%-", "-%}")] {
            for pad in [" ", ""] {
                out = out.replace(&format!("{open}{pad}{tag}{pad}{close}"), "");
            }
        }
    }
    out
}

fn template_error(e: &Error, source: &str) -> ChatError {
    let mut message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let mut inner = std::error::Error::source(e);
    while let Some(s) = inner {
        message.push_str(&format!(": {s}"));
        inner = s.source();
    }
    let line = e.line();
    let source_line = line
        .and_then(|l| source.lines().nth(l.saturating_sub(1)))
        .map(|s| s.trim().chars().take(160).collect());
    ChatError::Template {
        message,
        line,
        source_line,
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // transformers: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson_filter);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> Result<Value, Error> {
        Ok(Value::from(format_now(&fmt)))
    });
    env
}

/// Today's date (UTC) in the `strftime` forms chat templates use.
fn format_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(fmt, secs)
}

/// `strftime` for `%Y %m %d %e %B %b %H %M %S %A %a %j %y %%`; other
/// directives are kept as written.
fn strftime(fmt: &str, secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS[(m as usize).saturating_sub(1) % 12];
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let tod = secs % 86_400;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Render `template` over `messages` (OpenAI-style JSON objects).
pub fn render_with(
    template: &str,
    messages: &[serde_json::Value],
    opts: &ChatOptions,
) -> Result<String, ChatError> {
    ChatTemplate::new(template)?.render(messages, opts)
}

/// Render with just a generation-prompt flag.
pub fn render(
    template: &str,
    messages: &[serde_json::Value],
    add_generation_prompt: bool,
) -> Result<String, ChatError> {
    render_with(
        template,
        messages,
        &ChatOptions {
            add_generation_prompt,
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        // 2024-07-26 00:00:00 UTC is a Friday, day 208 of the year.
        let t = days_from_civil(2024, 7, 26) as u64 * 86_400 + 3661;
        assert_eq!(
            strftime("%d %b %Y|%A %j %H:%M:%S %%", t),
            "26 Jul 2024|Friday 208 01:01:01 %"
        );
    }

    #[test]
    fn renders_and_reports_errors() {
        let t = "{% for m in messages %}<{{ m.role }}>{{ m.content.strip() }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}";
        let out = render(
            t,
            &[serde_json::json!({"role":"user","content":" hi "})],
            true,
        )
        .unwrap();
        assert_eq!(out, "<user>hi<a>");
        let err = render("x\n{{ raise_exception('no') }}", &[], false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no") && msg.contains("line 2"), "{msg}");
        let err = ChatTemplate::new("a\nb\n{% if %}").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("{% if %}"), "{err}");
    }

    #[test]
    fn blocks_are_trimmed_and_loops_controlled() {
        let t = "{% for m in messages %}\n  {% if m == 2 %}{% continue %}{% endif %}\n{{ m }}{% if m == 3 %}{% break %}{% endif %}\n{% endfor %}";
        let msgs: Vec<serde_json::Value> = (1..6).map(serde_json::Value::from).collect();
        // Jinja2 (trim_blocks, lstrip_blocks) gives the same.
        assert_eq!(render(t, &msgs, false).unwrap(), "13");
    }

    #[test]
    fn generation_markers_are_dropped() {
        let t = "{% for m in messages %}{% generation %}{{ m }}{% endgeneration %}{% endfor %}";
        assert_eq!(render(t, &[serde_json::json!("a")], false).unwrap(), "a");
    }
}
