//! Every check on a task, reporting all problems at once (serde_derive's `Ctxt` style).

use std::fmt::Display;

use quote::ToTokens;
use syn::{GenericArgument, GenericParam, Pat, PathArguments, Safety, Type};

use crate::model::{Return, Task, is_context, type_text};

/// Collects errors so that the user sees all of them in one build.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt::default()
    }

    /// Records an error spanning `tokens`.
    pub(crate) fn error_spanned_by(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn syn_error(&mut self, err: syn::Error) {
        self.errors.push(err);
    }

    /// The recorded errors.
    pub(crate) fn into_errors(self) -> Vec<syn::Error> {
        self.errors
    }

    /// The recorded errors, if any.
    pub(crate) fn check(self) -> Result<(), Vec<syn::Error>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// The shape every task returns, repeated in several messages.
const RESULT_SHAPE: &str =
    "`#[task]` functions must return `Result<T, E>` where `E: Into<TaskError>`";

/// Checks everything the expansion relies on.
pub(crate) fn check(cx: &mut Ctxt, task: &Task) {
    check_signature(cx, task);
    check_params(cx, task);
    check_return(cx, task);
}

fn check_signature(cx: &mut Ctxt, task: &Task) {
    let sig = &task.func.sig;
    if let Safety::Unsafe(token) = &sig.safety {
        cx.error_spanned_by(
            token,
            "`#[task]` does not support `unsafe fn`: make the function safe and use `unsafe` blocks inside it",
        );
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(
            abi,
            "`#[task]` does not support `extern` functions: remove the ABI",
        );
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(variadic, "`#[task]` does not support variadic functions");
    }
    for param in &sig.generics.params {
        let message = match param {
            GenericParam::Lifetime(_) => {
                "`#[task]` does not support lifetime parameters: task arguments must be owned"
            }
            GenericParam::Type(_) => {
                "`#[task]` does not support generic functions: give every argument a concrete type"
            }
            GenericParam::Const(_) => {
                "`#[task]` does not support const generics: give every argument a concrete type"
            }
        };
        cx.error_spanned_by(param, message);
    }
    if let Some(where_clause) = &sig.generics.where_clause
        && sig.generics.params.is_empty()
    {
        cx.error_spanned_by(
            where_clause,
            "`#[task]` does not support `where` clauses: remove it",
        );
    }
}

fn check_params(cx: &mut Ctxt, task: &Task) {
    if let Some(receiver) = task.receiver {
        cx.error_spanned_by(
            receiver,
            "`#[task]` does not support methods: make it a free function without `self`",
        );
    }
    for arg in &task.args {
        check_pattern(cx, &arg.param.pat);
        if is_context(arg.ty) {
            cx.error_spanned_by(
                arg.ty,
                "`TaskContext` must be the first parameter of a `#[task]` function",
            );
        } else if let Some(elem) = context_reference(arg.ty) {
            cx.error_spanned_by(
                arg.ty,
                format!(
                    "take `TaskContext` by value: write `{}: {}`",
                    arg.ident,
                    type_text(elem)
                ),
            );
        } else {
            check_owned(cx, arg.ty, Role::Argument);
        }
    }
}

fn check_pattern(cx: &mut Ctxt, pat: &Pat) {
    match pat {
        Pat::Ident(p) if p.by_ref.is_some() => cx.error_spanned_by(
            pat,
            "`#[task]` arguments are taken by value: remove `ref`",
        ),
        Pat::Ident(p) if p.subpat.is_none() => {
            if p.ident.to_string().starts_with("__machinery_") {
                cx.error_spanned_by(
                    &p.ident,
                    "names starting with `__machinery_` are reserved for `#[task]`: rename the argument",
                );
            }
        }
        Pat::Wild(_) => cx.error_spanned_by(
            pat,
            "`#[task]` arguments need a name: write `_name: Type` for an unused argument",
        ),
        _ => cx.error_spanned_by(
            pat,
            "`#[task]` does not support destructuring patterns in arguments: bind the argument to a name and destructure it in the body",
        ),
    }
}

/// `&TaskContext`, `&mut TaskContext`: the referenced type.
fn context_reference(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Reference(r) if is_context(&r.elem) => Some(&r.elem),
        Type::Paren(p) => context_reference(&p.elem),
        Type::Group(g) => context_reference(&g.elem),
        _ => None,
    }
}

fn check_return(cx: &mut Ctxt, task: &Task) {
    match &task.ret {
        Return::Missing => {
            let sig = &task.func.sig;
            // Span `fn name(...)`, where the return type is missing.
            let mut tokens = sig.fn_token.to_token_stream();
            sig.ident.to_tokens(&mut tokens);
            sig.paren_token
                .surround(&mut tokens, |tokens| sig.inputs.to_tokens(tokens));
            cx.error_spanned_by(
                tokens,
                format!("{RESULT_SHAPE}: add a return type such as `-> Result<(), TaskError>`"),
            );
        }
        // A path may be an alias of `Result`, which the macro cannot see through.
        Return::NotResult(ty) if is_path(ty) => cx.error_spanned_by(
            ty,
            format!(
                "{RESULT_SHAPE}: write `Result<T, E>`, or name a type alias of it `Result` (like `io::Result<T>`); `#[task]` cannot see through an alias of another name"
            ),
        ),
        Return::NotResult(ty) => cx.error_spanned_by(ty, RESULT_SHAPE),
        Return::Result { ok, .. } => {
            if let Some(ok) = ok {
                check_owned(cx, ok, Role::Result);
            }
        }
    }
}

fn is_path(ty: &Type) -> bool {
    match ty {
        Type::Path(_) => true,
        Type::Paren(p) => is_path(&p.elem),
        Type::Group(g) => is_path(&g.elem),
        _ => false,
    }
}

#[derive(Clone, Copy)]
enum Role {
    Argument,
    Result,
}

impl Role {
    fn owned(self) -> &'static str {
        match self {
            Role::Argument => "task arguments must be owned",
            Role::Result => "task results must be owned",
        }
    }
}

/// Refuses borrowed data, raw pointers and `impl Trait` anywhere inside `ty`.
fn check_owned(cx: &mut Ctxt, ty: &Type, role: Role) {
    match ty {
        Type::Reference(r) => {
            let owned = owned_equivalent(&r.elem);
            cx.error_spanned_by(
                ty,
                format!("{}: use `{owned}` instead of `{}`", role.owned(), type_text(ty)),
            );
        }
        Type::Ptr(_) => cx.error_spanned_by(
            ty,
            format!("{}: raw pointers cannot be sent", role.owned()),
        ),
        Type::ImplTrait(_) => cx.error_spanned_by(
            ty,
            match role {
                Role::Argument => "`#[task]` does not support `impl Trait` arguments: give the argument a concrete type",
                Role::Result => "`#[task]` does not support `impl Trait` results: name a concrete type",
            },
        ),
        Type::Infer(_) => cx.error_spanned_by(ty, "`#[task]` needs the types written out: replace `_`"),
        Type::Array(a) => check_owned(cx, &a.elem, role),
        Type::Slice(s) => check_owned(cx, &s.elem, role),
        Type::Paren(p) => check_owned(cx, &p.elem, role),
        Type::Group(g) => check_owned(cx, &g.elem, role),
        Type::Tuple(t) => {
            for elem in &t.elems {
                check_owned(cx, elem, role);
            }
        }
        Type::Path(p) => {
            if let Some(qself) = &p.qself {
                check_owned(cx, &qself.ty, role);
            }
            for segment in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Type(ty) => check_owned(cx, ty, role),
                            GenericArgument::AssocType(assoc) => check_owned(cx, &assoc.ty, role),
                            GenericArgument::Lifetime(lt) if lt.ident != "static" => {
                                cx.error_spanned_by(
                                    lt,
                                    format!(
                                        "{}: replace the lifetime `{lt}` with `'static` or use an owned type",
                                        role.owned()
                                    ),
                                );
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The owned type to suggest in place of a borrow of `elem`.
fn owned_equivalent(elem: &Type) -> String {
    match elem {
        Type::Slice(s) => format!("Vec<{}>", type_text(&s.elem)),
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last().map(|s| s.ident.to_string());
            match last.as_deref() {
                Some("str") => "String".to_owned(),
                Some("Path") => "PathBuf".to_owned(),
                Some("OsStr") => "OsString".to_owned(),
                Some("CStr") => "CString".to_owned(),
                _ => type_text(elem),
            }
        }
        Type::Paren(p) => owned_equivalent(&p.elem),
        _ => type_text(elem),
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::*;
    use crate::args::TaskArgs;
    use crate::model::TaskFn;

    fn errors(tokens: TokenStream) -> Vec<String> {
        let func: TaskFn = syn::parse2(tokens).expect("a function");
        let task = Task::new(&func, TaskArgs::default());
        let mut cx = Ctxt::new();
        check(&mut cx, &task);
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn valid_tasks() {
        assert!(
            errors(quote!(
                async fn f(ctx: TaskContext, mut a: i64) -> Result<i64, E> {}
            ))
            .is_empty()
        );
        assert!(
            errors(quote!(
                pub(crate) fn f() -> io::Result<()> {}
            ))
            .is_empty()
        );
        assert!(
            errors(quote!(
                fn f(x: Cow<'static, str>) -> Result<Vec<[u8; 4]>, E> {}
            ))
            .is_empty()
        );
        assert!(
            errors(quote!(
                const fn f(x: Option<u8>) -> Result<(), E> {}
            ))
            .is_empty()
        );
    }

    #[test]
    fn generics() {
        assert_eq!(
            errors(quote!(
                fn f<T, 'a, const N: usize>(x: T) -> Result<(), E> {}
            )),
            [
                "`#[task]` does not support generic functions: give every argument a concrete type",
                "`#[task]` does not support lifetime parameters: task arguments must be owned",
                "`#[task]` does not support const generics: give every argument a concrete type",
            ]
        );
        assert_eq!(
            errors(quote!(
                fn f() -> Result<(), E>
                where
                    u8: Copy,
                {
                }
            )),
            ["`#[task]` does not support `where` clauses: remove it"]
        );
    }

    #[test]
    fn unsupported_signatures() {
        assert_eq!(
            errors(quote!(
                unsafe extern "C" fn f() -> Result<(), E> {}
            )),
            [
                "`#[task]` does not support `unsafe fn`: make the function safe and use `unsafe` blocks inside it",
                "`#[task]` does not support `extern` functions: remove the ABI",
            ]
        );
        assert_eq!(
            errors(quote!(
                fn f(&self) -> Result<(), E> {}
            )),
            ["`#[task]` does not support methods: make it a free function without `self`"]
        );
    }

    #[test]
    fn patterns() {
        assert_eq!(
            errors(quote!(
                fn f((a, b): (u8, u8), _: u8, ref c: u8) -> Result<(), E> {}
            )),
            [
                "`#[task]` does not support destructuring patterns in arguments: bind the argument to a name and destructure it in the body",
                "`#[task]` arguments need a name: write `_name: Type` for an unused argument",
                "`#[task]` arguments are taken by value: remove `ref`",
            ]
        );
        assert_eq!(
            errors(quote!(
                fn f(__machinery_ctx: u8) -> Result<(), E> {}
            )),
            ["names starting with `__machinery_` are reserved for `#[task]`: rename the argument"]
        );
    }

    #[test]
    fn returns() {
        assert_eq!(
            errors(quote!(
                async fn f(a: u8) {}
            )),
            [
                "`#[task]` functions must return `Result<T, E>` where `E: Into<TaskError>`: add a return type such as `-> Result<(), TaskError>`"
            ]
        );
        let alias = "`#[task]` functions must return `Result<T, E>` where `E: Into<TaskError>`: write `Result<T, E>`, or name a type alias of it `Result` (like `io::Result<T>`); `#[task]` cannot see through an alias of another name";
        assert_eq!(
            errors(quote!(
                fn f() -> Option<u8> {}
            )),
            [alias]
        );
        assert_eq!(
            errors(quote!(
                fn f() -> R<i64> {}
            )),
            [alias]
        );
        assert_eq!(
            errors(quote!(
                fn f() -> (u8, u8) {}
            )),
            ["`#[task]` functions must return `Result<T, E>` where `E: Into<TaskError>`"]
        );
        assert_eq!(
            errors(quote!(
                fn f() -> Result<&'static str, E> {}
            )),
            ["task results must be owned: use `String` instead of `&'static str`"]
        );
    }

    #[test]
    fn context() {
        assert_eq!(
            errors(quote!(
                fn f(ctx: &TaskContext) -> Result<(), E> {}
            )),
            ["take `TaskContext` by value: write `ctx: TaskContext`"]
        );
        assert_eq!(
            errors(quote!(
                fn f(a: u8, ctx: TaskContext) -> Result<(), E> {}
            )),
            ["`TaskContext` must be the first parameter of a `#[task]` function"]
        );
    }

    #[test]
    fn borrowed_and_opaque_arguments() {
        assert_eq!(
            errors(quote!(
                fn f(
                    a: &str,
                    b: &[u8],
                    c: Vec<&mut Foo>,
                    d: impl Into<u8>,
                    e: Cow<'a, str>,
                    p: *const u8,
                ) -> Result<(), E> {
                }
            )),
            [
                "task arguments must be owned: use `String` instead of `&str`",
                "task arguments must be owned: use `Vec<u8>` instead of `&[u8]`",
                "task arguments must be owned: use `Foo` instead of `&mut Foo`",
                "`#[task]` does not support `impl Trait` arguments: give the argument a concrete type",
                "task arguments must be owned: replace the lifetime `'a` with `'static` or use an owned type",
                "task arguments must be owned: raw pointers cannot be sent",
            ]
        );
    }
}
