//! The layers: defaults, then a YAML document, then `MACHINERY_*` variables.
//!
//! Both sources are first gathered into one tree of values keyed as in YAML, checking
//! every key against the fields the serde derives declare (so a typo is named with a
//! suggestion, and a key that is set to nothing is still checked); the tree is then
//! deserialized once into [`Config`] and each engine section, and validated. Errors
//! name the key as the user spelled it: the YAML path, or the variable that supplied
//! the value.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::Config;
use super::section::{self, Section};
use crate::error::{Error, Result};

/// The prefix of every environment variable read.
pub(crate) const ENV_PREFIX: &str = "MACHINERY_";
/// Reserved for the examples' log filter; never an error, never read here.
pub(crate) const ENV_IGNORED: &str = "MACHINERY_LOG";

/// A YAML document and the name errors give it.
pub(crate) struct Yaml<'a> {
    pub(crate) text: &'a str,
    pub(crate) source: &'a str,
}

/// The values gathered from the sources, before deserialization.
#[derive(Default)]
struct Tree {
    core: Map<String, Value>,
    sections: BTreeMap<&'static str, Map<String, Value>>,
    /// The variable that set a YAML path, for errors.
    spelled: HashMap<String, String>,
}

/// The keys the sources may use.
struct Schema {
    core: &'static [&'static str],
    sections: Vec<&'static Section>,
}

impl Schema {
    fn new() -> Self {
        let mut sections: Vec<&'static Section> = section::registered().collect();
        sections.sort_by_key(|s| s.name);
        sections.dedup_by_key(|s| s.name);
        Schema {
            core: section::fields_of::<Config>(),
            sections,
        }
    }

    fn section(&self, name: &str) -> Option<&'static Section> {
        self.sections.iter().copied().find(|s| s.name == name)
    }

    /// Every valid variable, with the section and field it sets.
    fn variables(&self) -> Vec<(String, Option<&'static Section>, &'static str)> {
        let core = self.core.iter().map(|f| (env_name(None, f), None, *f));
        let sections = self.sections.iter().flat_map(|s| {
            (s.fields)()
                .iter()
                .map(|f| (env_name(Some(s.name), f), Some(*s), *f))
        });
        core.chain(sections).collect()
    }

    /// The valid top-level YAML keys: the core fields, then the section names.
    fn top_keys(&self) -> Vec<&'static str> {
        let mut keys = self.core.to_vec();
        keys.extend(self.sections.iter().map(|s| s.name));
        keys
    }
}

/// `MACHINERY_` + the section + the field, upper case: `MACHINERY_REDIS_BLOCK_MS`.
pub(crate) fn env_name(section: Option<&str>, field: &str) -> String {
    match section {
        Some(section) => format!("{ENV_PREFIX}{section}_{field}"),
        None => format!("{ENV_PREFIX}{field}"),
    }
    .to_ascii_uppercase()
}

/// Loads a configuration from the sources, validated.
pub(crate) fn load(yaml: Option<Yaml<'_>>, vars: Vec<(String, String)>) -> Result<Config> {
    let schema = Schema::new();
    let mut tree = Tree::default();
    if let Some(yaml) = yaml {
        read_yaml(&schema, &mut tree, &yaml)?;
    }
    read_vars(&schema, &mut tree, vars)?;
    let Tree {
        core,
        sections,
        spelled,
    } = tree;
    let spell = |key: String, reason: String| {
        let key = spelled.get(&key).cloned().unwrap_or(key);
        Error::Config { key, reason }
    };
    let mut config: Config = serde_path_to_error::deserialize(Value::Object(core))
        .map_err(|e| spell(e.path().to_string(), e.inner().to_string()))?;
    for (name, values) in sections {
        let Some(section) = schema.section(name) else {
            continue;
        };
        let loaded = (section.load)(Value::Object(values))
            .map_err(|(field, reason)| spell(format!("{name}.{field}"), reason))?;
        config.sections.0.insert(name, loaded);
    }
    config.validate().map_err(|e| match e {
        Error::Config { key, reason } => spell(key, reason),
        e => e,
    })?;
    Ok(config)
}

fn read_yaml(schema: &Schema, tree: &mut Tree, yaml: &Yaml<'_>) -> Result<()> {
    let file_error = |reason: String| Error::ConfigFile {
        path: yaml.source.to_owned(),
        reason,
    };
    let document: Value = serde_saphyr::from_str(yaml.text).map_err(|e| {
        // Without snippets: a snippet would quote the text, passwords included.
        file_error(e.render_with_options(serde_saphyr::render_options! {
            formatter: &serde_saphyr::UserMessageFormatter,
            snippets: serde_saphyr::SnippetMode::Off,
        }))
    })?;
    let entries = match document {
        Value::Null => return Ok(()),
        Value::Object(entries) => entries,
        other => {
            return Err(file_error(format!(
                "expected a mapping of settings (`broker: memory://`, …); got {}",
                describe(&other)
            )));
        }
    };
    for (key, value) in entries {
        if schema.core.contains(&key.as_str()) {
            // `key:` with no value, or `key: ~`: unset, as an empty variable is.
            if !value.is_null() {
                tree.core.insert(key, value);
            }
            continue;
        }
        let Some(section) = schema.section(&key) else {
            return Err(unknown_yaml(schema, &key));
        };
        let fields = (section.fields)();
        let values = match value {
            Value::Null => continue,
            Value::Object(values) => values,
            other => {
                return Err(Error::config(
                    key,
                    format!(
                        "expected a mapping of `{}` settings ({}); got {}",
                        section.name,
                        fields.join(", "),
                        describe(&other)
                    ),
                ));
            }
        };
        let target = tree.sections.entry(section.name).or_default();
        for (field, value) in values {
            if !fields.contains(&field.as_str()) {
                return Err(Error::config(
                    format!("{key}.{field}"),
                    format!(
                        "unknown key{}; valid keys in `{key}` are {}",
                        did_you_mean(&field, fields.iter().copied()),
                        fields.join(", ")
                    ),
                ));
            }
            if !value.is_null() {
                target.insert(field, value);
            }
        }
    }
    Ok(())
}

fn read_vars(schema: &Schema, tree: &mut Tree, vars: Vec<(String, String)>) -> Result<()> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, value)| {
            name.starts_with(ENV_PREFIX) && name != ENV_IGNORED && !value.is_empty()
        })
        .collect();
    // Stable: a repeated name keeps its order, so its last value wins; errors come in
    // name order whatever the order of the environment.
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let valid = schema.variables();
    for (name, value) in vars {
        let Some((_, section, field)) = valid.iter().find(|(env, _, _)| *env == name) else {
            return Err(unknown_env(&valid, &name));
        };
        let (target, path) = match section {
            Some(section) => (
                tree.sections.entry(section.name).or_default(),
                format!("{}.{field}", section.name),
            ),
            None => (&mut tree.core, (*field).to_owned()),
        };
        target.insert((*field).to_owned(), Value::String(value));
        tree.spelled.insert(path, name);
    }
    Ok(())
}

/// The process's `MACHINERY_*` variables.
pub(crate) fn process_vars() -> Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if !name.starts_with(ENV_PREFIX) || name == ENV_IGNORED {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| Error::config(&name, "expected UTF-8 text"))?;
        vars.push((name, value));
    }
    Ok(vars)
}

fn unknown_env(valid: &[(String, Option<&'static Section>, &'static str)], name: &str) -> Error {
    let names: Vec<&str> = valid.iter().map(|(env, _, _)| env.as_str()).collect();
    Error::config(
        name,
        format!(
            "unknown variable{}; valid variables are {} (`{ENV_IGNORED}` is reserved and \
             ignored)",
            did_you_mean(name, names.iter().copied()),
            names.join(", ")
        ),
    )
}

fn unknown_yaml(schema: &Schema, key: &str) -> Error {
    // `redis.block_ms: 5` or `redis_block_ms: 5` at the top level.
    for section in &schema.sections {
        let leaf = key
            .strip_prefix(section.name)
            .and_then(|rest| rest.strip_prefix('.').or_else(|| rest.strip_prefix('_')));
        if let Some(leaf) = leaf.filter(|leaf| (section.fields)().contains(leaf)) {
            return Error::config(
                key,
                format!(
                    "unknown key; `{name}` settings go in the `{name}` mapping: \
                     `{name}: {{ {leaf}: … }}`",
                    name = section.name
                ),
            );
        }
    }
    let valid = schema.top_keys();
    Error::config(
        key,
        format!(
            "unknown key{}; valid keys are {}",
            did_you_mean(key, valid.iter().copied()),
            valid.join(", ")
        ),
    )
}

/// ` (did you mean `x`?)` for the closest candidate within a few edits, else nothing.
pub(crate) fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let name = name.to_ascii_lowercase();
    candidates
        .map(|candidate| {
            let distance = strsim::levenshtein(&name, &candidate.to_ascii_lowercase());
            (distance, candidate)
        })
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default()
}

/// How an error shows a value of the wrong kind.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("`{}`", s.escape_debug()),
        Value::Array(_) => "a sequence".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}
