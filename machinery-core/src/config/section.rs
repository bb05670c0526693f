//! Engine sections: the `redis:` (or `amqp:`, …) mapping an engine crate adds to the
//! configuration, with its own `MACHINERY_<ENGINE>_*` variables.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// A key of an engine section and what is wrong with its value: the result of
/// [`EngineSection::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The key inside the section, as in YAML: `fetch_batch`.
    pub field: &'static str,
    /// What is accepted and what was found: "expected … ; got `0`".
    pub reason: String,
}

/// The settings one engine reads, under its own YAML key (`redis:`) and environment
/// prefix (`MACHINERY_REDIS_`).
///
/// Implement it on a struct deriving `Deserialize` with `#[serde(default,
/// deny_unknown_fields)]` (its fields are the section's keys), then register it with
/// `inventory::submit! { machinery_core::config::Section::of::<MyConfig>() }` in the
/// crate that registers the engine's [`EngineFactory`](crate::engine::EngineFactory). Every
/// loaded [`Config`](crate::Config) then accepts the section: unknown keys and
/// variables are refused with a suggestion, values are deserialized and
/// [validated](EngineSection::validate) when the configuration is loaded, and errors
/// name the key as the user wrote it (`redis.block_ms` or `MACHINERY_REDIS_BLOCK_MS`).
/// The engine reads its settings with [`Config::section`](crate::Config::section).
///
/// Values from the environment arrive as strings: deserialize numbers and durations
/// with helpers that accept both (`machinery_core::config::serde_duration`,
/// `machinery_core::config::serde_whole`).
pub trait EngineSection:
    DeserializeOwned + Default + Clone + PartialEq + fmt::Debug + Send + Sync + 'static
{
    /// The YAML key of the section, lowercase ASCII: `redis`. Its environment variables
    /// are `MACHINERY_` + the name + `_` + the field, in upper case.
    const NAME: &'static str;

    /// Checks values beyond their types (ranges, characters).
    ///
    /// # Errors
    ///
    /// The first invalid field, with a reason starting with `expected`.
    fn validate(&self) -> Result<(), FieldError>;
}

/// Deserializes and validates one section; errors are `(field path, reason)`.
type LoadSection = fn(serde_json::Value) -> Result<Box<dyn AnySection>, (String, String)>;

/// The registration of an [`EngineSection`], collected with `inventory`.
pub struct Section {
    pub(crate) name: &'static str,
    pub(crate) fields: fn() -> &'static [&'static str],
    pub(crate) load: LoadSection,
}

impl Section {
    /// The registration of `T`, for `inventory::submit!`.
    pub const fn of<T: EngineSection>() -> Section {
        Section {
            name: T::NAME,
            fields: fields_of::<T>,
            load: load::<T>,
        }
    }
}

impl fmt::Debug for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Section").field("name", &self.name).finish()
    }
}

inventory::collect!(Section);

/// The registered sections, by name.
pub(crate) fn registered() -> impl Iterator<Item = &'static Section> {
    inventory::iter::<Section>.into_iter()
}

/// Deserializes and validates a section; errors are `(field path, reason)`.
fn load<T: EngineSection>(
    value: serde_json::Value,
) -> Result<Box<dyn AnySection>, (String, String)> {
    let section: T = serde_path_to_error::deserialize(value)
        .map_err(|e| (e.path().to_string(), e.inner().to_string()))?;
    section
        .validate()
        .map_err(|e| (e.field.to_owned(), e.reason))?;
    Ok(Box::new(section))
}

/// The field names of a struct deriving `Deserialize`, as serde sees them (renames
/// applied): the one list of keys, read from the derive itself.
pub(crate) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);

    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field names read")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

/// An [`EngineSection`] behind a pointer, so [`Config`](crate::Config) can hold the
/// sections of engines it does not know.
pub(crate) trait AnySection: Any + Send + Sync + fmt::Debug {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clone_box(&self) -> Box<dyn AnySection>;
    fn eq_dyn(&self, other: &dyn AnySection) -> bool;
    fn is_default(&self) -> bool;
    fn check(&self) -> Result<(), FieldError>;
}

impl<T: EngineSection> AnySection for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_box(&self) -> Box<dyn AnySection> {
        Box::new(self.clone())
    }
    fn eq_dyn(&self, other: &dyn AnySection) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn is_default(&self) -> bool {
        *self == T::default()
    }
    fn check(&self) -> Result<(), FieldError> {
        self.validate()
    }
}

/// The engine sections of one configuration, by name. A missing section equals its
/// defaults.
#[derive(Default)]
pub(crate) struct Sections(pub(crate) BTreeMap<&'static str, Box<dyn AnySection>>);

impl Clone for Sections {
    fn clone(&self) -> Self {
        Sections(
            self.0
                .iter()
                .map(|(name, section)| (*name, section.clone_box()))
                .collect(),
        )
    }
}

impl PartialEq for Sections {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Sections, b: &Sections| {
            a.0.iter().all(|(name, section)| match b.0.get(name) {
                Some(theirs) => section.eq_dyn(theirs.as_ref()),
                None => section.is_default(),
            })
        };
        same(self, other) && same(other, self)
    }
}

impl fmt::Debug for Sections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}
