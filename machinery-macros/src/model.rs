//! The task as the macro understands it: the parsed function, split into its context
//! parameter, its arguments and its result, plus the schema text and fingerprint.
//!
//! Building the model never fails: whatever does not fit is kept as written (or given a
//! placeholder) for `validate` to report.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::{ToTokens, format_ident};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, FnArg, GenericArgument, Ident, Pat, PatType, PathArguments, Receiver, ReturnType,
    Signature, Type, TypeParamBound, Visibility,
};

use crate::args::TaskArgs;

/// A function item, parsed only as far as its signature: the body is skipped as tokens,
/// so a syntax error inside it is rustc's to report, not ours. (The expansion re-emits the
/// item's original tokens, not this.)
pub(crate) struct TaskFn {
    pub vis: Visibility,
    pub sig: Signature,
}

impl Parse for TaskFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let is_fn = input.peek(syn::Token![fn])
            || input.peek(syn::Token![async])
            || input.peek(syn::Token![const])
            || input.peek(syn::Token![unsafe])
            || input.peek(syn::Token![extern]);
        if !is_fn {
            return Err(input.error("`#[task]` can only be applied to functions"));
        }
        let sig: Signature = input.parse()?;
        let body: TokenTree = input.parse()?;
        if !matches!(&body, TokenTree::Group(g) if g.delimiter() == Delimiter::Brace) {
            return Err(syn::Error::new_spanned(
                &body,
                "`#[task]` functions need a body",
            ));
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the function body"));
        }
        Ok(TaskFn { vis, sig })
    }
}

/// One argument that travels with the task.
pub(crate) struct Arg<'a> {
    /// The parameter as written.
    pub param: &'a PatType,
    /// The binding's name; a placeholder when the pattern is not a plain name (refused by
    /// `validate`).
    pub ident: Ident,
    pub ty: &'a Type,
}

/// The function's return type.
pub(crate) enum Return<'a> {
    /// No `->`.
    Missing,
    /// A type whose path does not end in `Result`.
    NotResult(&'a Type),
    /// `Result<T, E>`, `io::Result<T>`, ...: `ok` is `T` and `err` is `E` when they are
    /// written out. `boxed_err` when `E` is written `Box<dyn ...Error ...>`, which has no
    /// `Into<TaskError>` and is converted on its own path.
    Result {
        ty: &'a Type,
        ok: Option<&'a Type>,
        err: Option<&'a Type>,
        boxed_err: bool,
    },
}

/// The model of a `#[task]` function.
pub(crate) struct Task<'a> {
    pub func: &'a TaskFn,
    pub options: TaskArgs,
    /// A `self` parameter (refused by `validate`).
    pub receiver: Option<&'a Receiver>,
    /// The first parameter, when its type is `TaskContext`.
    pub context: Option<&'a PatType>,
    pub args: Vec<Arg<'a>>,
    pub ret: Return<'a>,
}

impl<'a> Task<'a> {
    pub(crate) fn new(func: &'a TaskFn, options: TaskArgs) -> Self {
        let mut receiver = None;
        let mut context = None;
        let mut args = Vec::new();
        for (index, input) in func.sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(r) => receiver = Some(r),
                FnArg::Typed(param) if index == 0 && is_context(&param.ty) => {
                    context = Some(param);
                }
                FnArg::Typed(param) => args.push(Arg {
                    param,
                    ident: binding(&param.pat)
                        .unwrap_or_else(|| format_ident!("__machinery_arg{}", index)),
                    ty: &param.ty,
                }),
            }
        }
        let ret = match &func.sig.output {
            ReturnType::Default => Return::Missing,
            ReturnType::Type(_, ty) => match result_path(ty) {
                Some(arguments) => {
                    let err = type_argument(arguments, 1);
                    Return::Result {
                        ty,
                        ok: type_argument(arguments, 0),
                        err,
                        boxed_err: err.is_some_and(is_boxed_error),
                    }
                }
                None => Return::NotResult(ty),
            },
        };
        Task {
            func,
            options,
            receiver,
            context,
            args,
            ret,
        }
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.func.sig.ident
    }

    pub(crate) fn is_async(&self) -> bool {
        self.func.sig.asyncness.is_some()
    }

    /// The registered name: the `name` option, else the function's name.
    pub(crate) fn name(&self) -> String {
        match &self.options.name {
            Some(name) => name.clone(),
            None => self.ident().unraw().to_string(),
        }
    }

    /// `add(i64, i64) -> i64`: the function's name, the argument types and the `Ok` type
    /// as written (the whole return type when the `Ok` type is not spelled out).
    pub(crate) fn schema(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|a| type_text(a.ty)).collect();
        let ok = match &self.ret {
            Return::Result { ok: Some(ok), .. } => type_text(ok),
            Return::Result { ty, .. } | Return::NotResult(ty) => type_text(ty),
            Return::Missing => "()".to_owned(),
        };
        format!("{}({}) -> {ok}", self.ident().unraw(), args.join(", "))
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        fnv1a(self.schema().as_bytes())
    }
}

/// The name bound by a plain `name` or `mut name` pattern.
fn binding(pat: &Pat) -> Option<Ident> {
    match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(p.ident.clone()),
        _ => None,
    }
}

/// Whether `ty` names `TaskContext` (by its last path segment, so any import path works).
pub(crate) fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "TaskContext" && s.arguments.is_none()),
        Type::Paren(p) => is_context(&p.elem),
        Type::Group(g) => is_context(&g.elem),
        _ => false,
    }
}

/// The generic arguments of a path type ending in `Result`.
fn result_path(ty: &Type) -> Option<&PathArguments> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .filter(|s| s.ident == "Result")
            .map(|s| &s.arguments),
        Type::Paren(p) => result_path(&p.elem),
        Type::Group(g) => result_path(&g.elem),
        _ => None,
    }
}

/// Whether `ty` is written `Box<dyn Error>`: a `Box` (any path ending in `Box`) of a
/// trait object one of whose traits is a path whose last name ends in `Error` (`Error`,
/// `std::error::Error`, `StdError` as imported by `use std::error::Error as StdError`),
/// whatever other bounds it has (`+ Send + Sync + 'static`). Which trait it names is
/// rustc's to check: any other is refused at `E` by `BoxedTaskError`'s message.
pub(crate) fn is_boxed_error(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().is_some_and(|s| {
            s.ident == "Box" && type_argument(&s.arguments, 0).is_some_and(is_error_object)
        }),
        Type::Paren(p) => is_boxed_error(&p.elem),
        Type::Group(g) => is_boxed_error(&g.elem),
        _ => false,
    }
}

/// Whether `ty` is `dyn ...Error + ...`.
fn is_error_object(ty: &Type) -> bool {
    match ty {
        Type::TraitObject(t) => t.bounds.iter().any(|bound| {
            matches!(bound, TypeParamBound::Trait(t) if t.path.segments.last().is_some_and(
                |s| s.ident.to_string().ends_with("Error") && s.arguments.is_none()
            ))
        }),
        Type::Paren(p) => is_error_object(&p.elem),
        Type::Group(g) => is_error_object(&g.elem),
        _ => false,
    }
}

/// The `index`th type argument (lifetimes and constants skipped).
fn type_argument(arguments: &PathArguments, index: usize) -> Option<&Type> {
    match arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .nth(index),
        _ => None,
    }
}

/// A type's tokens as text with canonical spacing: `HashMap<String, Vec<u8>>`,
/// `[u8; 32]`, `&'static str`, `Box<dyn Fn(u8) -> u8 + Send>`.
pub(crate) fn type_text(ty: &Type) -> String {
    let mut out = String::new();
    write_tokens(&mut out, ty.to_token_stream(), &mut Prev::Start);
    out
}

/// What was written last, which decides whether the next token needs a space before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    Start,
    /// An identifier or literal: a following word needs a space (`dyn Trait`).
    Word,
    /// A keyword that is spaced from a following group too (`&mut [u8]`), unlike a
    /// name (`Fn(u8)`).
    Keyword,
    /// `<`, `::`, `&`, `'`, `(`...: nothing goes between it and the next token.
    Glue,
    /// `,`, `;`, `+`, `=`, `->`: the next token is spaced from it.
    Spaced,
    /// `>`, `)`, `]`.
    Close,
}

fn write_tokens(out: &mut String, tokens: TokenStream, prev: &mut Prev) {
    let mut iter = tokens.into_iter().peekable();
    while let Some(tt) = iter.next() {
        match tt {
            TokenTree::Ident(ident) => {
                if matches!(
                    *prev,
                    Prev::Word | Prev::Keyword | Prev::Spaced | Prev::Close
                ) {
                    out.push(' ');
                }
                let text = ident.to_string();
                *prev = if matches!(text.as_str(), "mut" | "dyn" | "impl" | "const" | "as") {
                    Prev::Keyword
                } else {
                    Prev::Word
                };
                out.push_str(&text);
            }
            TokenTree::Literal(lit) => {
                if matches!(
                    *prev,
                    Prev::Word | Prev::Keyword | Prev::Spaced | Prev::Close
                ) {
                    out.push(' ');
                }
                out.push_str(&lit.to_string());
                *prev = Prev::Word;
            }
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                if group.delimiter() == Delimiter::None {
                    write_tokens(out, group.stream(), prev);
                    continue;
                }
                if matches!(*prev, Prev::Spaced | Prev::Keyword) {
                    out.push(' ');
                }
                out.push_str(open);
                *prev = Prev::Glue;
                write_tokens(out, group.stream(), prev);
                out.push_str(close);
                *prev = Prev::Close;
            }
            TokenTree::Punct(punct) => {
                // Joint punctuation forms one operator: `::`, `->`. A lifetime's `'` is
                // joint with the identifier after it, not with punctuation.
                let mut op = String::from(punct.as_char());
                let mut spacing = punct.spacing();
                while spacing == Spacing::Joint && op != "'" {
                    match iter.peek() {
                        Some(TokenTree::Punct(next)) => {
                            op.push(next.as_char());
                            spacing = next.spacing();
                            iter.next();
                        }
                        _ => break,
                    }
                }
                match op.as_str() {
                    "," | ";" => {
                        out.push_str(&op);
                        *prev = Prev::Spaced;
                    }
                    ":" => {
                        out.push(':');
                        *prev = Prev::Spaced;
                    }
                    "->" | "+" | "=" | "=>" => {
                        if *prev != Prev::Start {
                            out.push(' ');
                        }
                        out.push_str(&op);
                        *prev = Prev::Spaced;
                    }
                    ">" | ">>" => {
                        out.push_str(&op);
                        *prev = Prev::Close;
                    }
                    "!" => {
                        if matches!(*prev, Prev::Spaced) {
                            out.push(' ');
                        }
                        out.push('!');
                        *prev = Prev::Word;
                    }
                    _ => {
                        // Prefixes and path punctuation: `::`, `<`, `&`, `*`, `'`, `?`, `-`.
                        if matches!(*prev, Prev::Spaced)
                            || (matches!(*prev, Prev::Word | Prev::Keyword) && op == "&")
                        {
                            out.push(' ');
                        }
                        out.push_str(&op);
                        *prev = Prev::Glue;
                    }
                }
            }
        }
    }
}

/// 64-bit FNV-1a.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn task_fn(tokens: TokenStream) -> TaskFn {
        syn::parse2(tokens).expect("a function")
    }

    fn ty(tokens: TokenStream) -> String {
        type_text(&syn::parse2::<Type>(tokens).expect("a type"))
    }

    #[test]
    fn type_text_is_canonical() {
        assert_eq!(ty(quote!(i64)), "i64");
        assert_eq!(ty(quote!(Vec<String>)), "Vec<String>");
        assert_eq!(
            ty(quote!(std::collections::HashMap<String, Vec<Option<u8>>>)),
            "std::collections::HashMap<String, Vec<Option<u8>>>"
        );
        assert_eq!(ty(quote!(::std::string::String)), "::std::string::String");
        assert_eq!(
            ty(quote!((i64, ::std::string::String))),
            "(i64, ::std::string::String)"
        );
        assert_eq!(ty(quote!(())), "()");
        assert_eq!(ty(quote!([u8; 32])), "[u8; 32]");
        assert_eq!(ty(quote!(&'static str)), "&'static str");
        assert_eq!(ty(quote!(&mut [u8])), "&mut [u8]");
        assert_eq!(ty(quote!(Cow<'static, str>)), "Cow<'static, str>");
        assert_eq!(
            ty(quote!(Box<dyn Fn(u8, u16) -> u8 + Send>)),
            "Box<dyn Fn(u8, u16) -> u8 + Send>"
        );
        assert_eq!(ty(quote!(fn(u8) -> (u8, u8))), "fn(u8) -> (u8, u8)");
        assert_eq!(ty(quote!(<T as Iterator>::Item)), "<T as Iterator>::Item");
        assert_eq!(
            ty(quote!(Box<dyn Iterator<Item = u8>>)),
            "Box<dyn Iterator<Item = u8>>"
        );
        assert_eq!(ty(quote!(*const u8)), "*const u8");
        assert_eq!(ty(quote!(*const [u8])), "*const [u8]");
        assert_eq!(ty(quote!(&dyn Fn())), "&dyn Fn()");
        assert_eq!(ty(quote!(Option<[u8; 4]>)), "Option<[u8; 4]>");
    }

    #[test]
    fn type_text_ignores_source_spacing() {
        let spaced: Type = syn::parse_str("Vec  <\n  ( i64 ,String ) >").expect("a type");
        assert_eq!(type_text(&spaced), "Vec<(i64, String)>");
    }

    #[test]
    fn schema_of_a_plain_task() {
        let f = task_fn(quote! {
            pub async fn add(ctx: TaskContext, a: i64, b: i64) -> Result<i64, MyError> { Ok(a + b) }
        });
        let task = Task::new(&f, TaskArgs::default());
        assert!(task.context.is_some());
        assert_eq!(task.args.len(), 2);
        assert_eq!(task.schema(), "add(i64, i64) -> i64");
        assert_eq!(task.name(), "add");
    }

    #[test]
    fn schema_uses_the_fn_name_not_the_registered_name() {
        let f = task_fn(quote! {
            fn r#move(points: Vec<(i32, i32)>, map: HashMap<String, u8>) -> io::Result<()> {}
        });
        let options = TaskArgs {
            name: Some("geo.move".into()),
            ..TaskArgs::default()
        };
        let task = Task::new(&f, options);
        assert!(task.context.is_none());
        assert_eq!(
            task.schema(),
            "move(Vec<(i32, i32)>, HashMap<String, u8>) -> ()"
        );
        assert_eq!(task.name(), "geo.move");
        assert!(!task.is_async());
    }

    #[test]
    fn default_name_drops_raw_prefix() {
        let f = task_fn(quote!(
            fn r#type() -> Result<(), E> {}
        ));
        assert_eq!(Task::new(&f, TaskArgs::default()).name(), "type");
    }

    #[test]
    fn schema_without_ok_type_uses_the_return_type() {
        let f = task_fn(quote!(
            fn f(x: u8) -> Result {}
        ));
        assert_eq!(
            Task::new(&f, TaskArgs::default()).schema(),
            "f(u8) -> Result"
        );
    }

    #[test]
    fn context_only_counts_first() {
        let f = task_fn(quote!(
            fn f(x: u8, ctx: TaskContext) -> Result<(), E> {}
        ));
        let task = Task::new(&f, TaskArgs::default());
        assert!(task.context.is_none());
        assert_eq!(task.args.len(), 2);
    }

    #[test]
    fn context_by_path() {
        let f = task_fn(quote!(
            fn f(c: machinery_core::TaskContext) -> Result<(), E> {}
        ));
        assert!(Task::new(&f, TaskArgs::default()).context.is_some());
    }

    #[test]
    fn non_ident_patterns_get_placeholders() {
        let f = task_fn(quote!(
            fn f((a, b): (u8, u8), mut c: u8) -> Result<(), E> {}
        ));
        let task = Task::new(&f, TaskArgs::default());
        assert_eq!(task.args[0].ident, "__machinery_arg0");
        assert_eq!(task.args[1].ident, "c");
    }

    #[test]
    fn return_kinds() {
        let f = task_fn(quote!(
            fn f() {}
        ));
        assert!(matches!(
            Task::new(&f, TaskArgs::default()).ret,
            Return::Missing
        ));
        let f = task_fn(quote!(
            fn f() -> Option<u8> {}
        ));
        assert!(matches!(
            Task::new(&f, TaskArgs::default()).ret,
            Return::NotResult(_)
        ));
        let f = task_fn(quote!(
            fn f() -> std::result::Result<u8, E> {}
        ));
        let task = Task::new(&f, TaskArgs::default());
        let Return::Result {
            ok: Some(ok),
            err: Some(err),
            ..
        } = task.ret
        else {
            panic!("both type arguments");
        };
        assert_eq!((type_text(ok), type_text(err)), ("u8".into(), "E".into()));
        let f = task_fn(quote!(
            fn f() -> io::Result<'static, u8> {}
        ));
        assert!(matches!(
            Task::new(&f, TaskArgs::default()).ret,
            Return::Result {
                ok: Some(_),
                err: None,
                ..
            }
        ));
    }

    #[test]
    fn boxed_errors_are_recognised_by_their_spelling() {
        fn boxed(tokens: TokenStream) -> bool {
            is_boxed_error(&syn::parse2::<Type>(tokens).expect("a type"))
        }
        for yes in [
            quote!(Box<dyn Error>),
            quote!(Box<dyn std::error::Error>),
            quote!(Box<dyn ::core::error::Error + 'static>),
            quote!(Box<dyn Error + Send>),
            quote!(Box<dyn std::error::Error + Send + Sync>),
            quote!(std::boxed::Box<dyn Error + Sync + Send + 'static>),
            quote!(Box<(dyn Error + Send + Sync)>),
            quote!(Box<dyn Send + Error>),
            quote!(Box<dyn StdError + Send + Sync>),
        ] {
            assert!(boxed(yes.clone()), "{yes}");
        }
        for no in [
            quote!(Error),
            quote!(MyError),
            quote!(Box<MyError>),
            quote!(Box<dyn Display>),
            quote!(Box<dyn Error<u8>>),
            quote!(Box<dyn MyErrorExt>),
            quote!(Box<dyn Fn() -> Error>),
            quote!(Arc<dyn Error>),
            quote!(BoxError),
        ] {
            assert!(!boxed(no.clone()), "{no}");
        }
        let f = task_fn(quote!(
            fn f() -> Result<u8, Box<dyn Error + Send + Sync>> {}
        ));
        assert!(matches!(
            Task::new(&f, TaskArgs::default()).ret,
            Return::Result {
                boxed_err: true,
                ..
            }
        ));
        let f = task_fn(quote!(
            fn f() -> Result<u8, TaskError> {}
        ));
        assert!(matches!(
            Task::new(&f, TaskArgs::default()).ret,
            Return::Result {
                boxed_err: false,
                ..
            }
        ));
    }

    #[test]
    fn not_a_function() {
        let err = syn::parse2::<TaskFn>(quote!(
            pub struct S;
        ))
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("`#[task]` can only be applied to functions")
        );
    }

    #[test]
    fn fnv1a_known_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
