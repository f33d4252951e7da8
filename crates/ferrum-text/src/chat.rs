//! Chat templates (Hugging Face Jinja templates) rendered with `minijinja`,
//! with the Python-compatible string methods and the helper functions HF
//! templates call.

use minijinja::{Environment, Error, ErrorKind, Value};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template: {0}")]
    Template(String),
}

fn template_error(e: Error) -> ChatError {
    let mut msg = e.to_string();
    if let Some(line) = e.line() {
        msg = format!("line {line}: {msg}");
    }
    ChatError::Template(msg)
}

/// Options of one rendering.
#[derive(Clone, Debug, Default)]
pub struct ChatOptions {
    pub add_generation_prompt: bool,
    /// Qwen3's `enable_thinking` (unset leaves the template's default).
    pub enable_thinking: Option<bool>,
    /// Tool definitions (JSON objects) for templates that support them.
    pub tools: Option<Vec<serde_json::Value>>,
    pub bos_token: String,
    pub eos_token: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> Result<Value, Error> {
        Ok(Value::from(format_now(&fmt)))
    });
    env
}

/// Today's date in the few `strftime` forms chat templates use.
fn format_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    fmt.replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", MONTHS[(m - 1) as usize % 12])
        .replace("%b", &MONTHS[(m - 1) as usize % 12][..3])
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

/// Render `template` over `messages` (OpenAI-style JSON objects).
pub fn render_with(template: &str, messages: &[serde_json::Value], opts: &ChatOptions) -> Result<String, ChatError> {
    let mut env = environment();
    env.add_template("chat", template).map_err(template_error)?;
    let tmpl = env.get_template("chat").map_err(template_error)?;
    let mut ctx = serde_json::json!({
        "messages": messages,
        "add_generation_prompt": opts.add_generation_prompt,
        "bos_token": opts.bos_token,
        "eos_token": opts.eos_token,
    });
    if let Some(t) = opts.enable_thinking {
        ctx["enable_thinking"] = serde_json::Value::Bool(t);
    }
    if let Some(tools) = &opts.tools {
        ctx["tools"] = serde_json::Value::Array(tools.clone());
    }
    tmpl.render(Value::from_serialize(&ctx)).map_err(template_error)
}

/// Render with just a generation-prompt flag.
pub fn render(template: &str, messages: &[serde_json::Value], add_generation_prompt: bool) -> Result<String, ChatError> {
    render_with(template, messages, &ChatOptions { add_generation_prompt, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn renders_and_reports_errors() {
        let t = "{% for m in messages %}<{{ m.role }}>{{ m.content.strip() }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}";
        let out = render(t, &[serde_json::json!({"role":"user","content":" hi "})], true).unwrap();
        assert_eq!(out, "<user>hi<a>");
        let err = render("{{ raise_exception('no') }}", &[], false).unwrap_err();
        assert!(err.to_string().contains("no"));
    }
}
