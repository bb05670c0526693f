//! Code generation. Everything here was decided by `model` and `validate`; this only
//! writes it out.
//!
//! The generated module has two layers. The outer one (named after the function) holds
//! the public items and names nothing of the user's. The inner one, `__machinery`, holds
//! everything that mentions the user's types and glob-imports the function's module, so
//! those types resolve exactly as in the function's signature: a user type named like a
//! generated item (`Output`, `NAME`) is not shadowed there.
//!
//! Each type requirement is asserted by a `const` calling `assert_arg`/`assert_output`/
//! `assert_return`/`assert_error` with the user's type as explicit generic argument,
//! where rustc points the error: the error type's conversion into `TaskError` is asserted
//! at `E` itself, not at the whole `Result<T, E>`. A body that needs the same bound first repeats that assertion, then names
//! the type as the explicit generic argument of the call that needs it: the repeated
//! assertion's diagnostic is identical to the const's (rustc prints it once), and the
//! call's failure sits at the same span and is implied by it (rustc suppresses it). So a
//! mistake is one error at the user's type instead of a cascade from the handler and the
//! encoders. That is why the arguments and the `Ok` value travel in structs with
//! hand-written serde impls, one element call per argument, rather than in a tuple, whose
//! bound rustc would check once for all elements at one span. The wire form is the same
//! positional array; no arguments encode as an empty array (which workflow steps can
//! append to), not as `()`'s nil.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::LitInt;
use syn::spanned::Spanned;

use crate::args;
use crate::model::{Return, Task, TaskFn};
use crate::validate::{self, Ctxt};

/// `#[task]`: the user's function unchanged, then the generated module and the errors.
///
/// A wrong option leaves the function a valid task: the module is generated with that
/// option's default beside the error, so every use of `add::` elsewhere still resolves
/// and the user sees that one error (tokio's macros do the same). A signature that
/// cannot be a task leaves nothing to generate: the function and the errors alone, so
/// that the user sees those and no cascade.
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut option_cx = Ctxt::new();
    let options = args::parse(attr, &mut option_cx);
    let mut errors = option_cx.into_errors();
    let func = match syn::parse2::<TaskFn>(item.clone()) {
        Ok(func) => func,
        Err(err) => {
            errors.push(err);
            return with_errors(item, errors);
        }
    };
    let task = Task::new(&func, options);
    let mut cx = Ctxt::new();
    validate::check(&mut cx, &task);
    match cx.check() {
        Ok(()) => {
            let generated = generate(&task);
            let errors = errors.into_iter().map(syn::Error::into_compile_error);
            quote!(#item #generated #(#errors)*)
        }
        Err(signature_errors) => {
            errors.extend(signature_errors);
            with_errors(item, errors)
        }
    }
}

fn with_errors(item: TokenStream, errors: Vec<syn::Error>) -> TokenStream {
    let errors = errors.into_iter().map(syn::Error::into_compile_error);
    quote!(#item #(#errors)*)
}

fn generate(task: &Task) -> TokenStream {
    let Return::Result {
        ty: ret,
        ok,
        err,
        boxed_err,
    } = &task.ret
    else {
        // Refused by `validate`; nothing to generate.
        return TokenStream::new();
    };
    let ident = task.ident();
    let vis = &task.func.vis;
    let name = task.name();
    let schema = task.schema();
    let fingerprint = LitInt::new(&format!("0x{:016x}", task.fingerprint()), Span::call_site());
    let options = options(task);

    let arg_idents: Vec<_> = task.args.iter().map(|a| &a.ident).collect();
    let arg_tys: Vec<_> = task.args.iter().map(|a| a.ty).collect();
    let arg_count = task.args.len();

    // The `Ok` type as written, else projected out of the return type.
    let (ok_ty, ok_span) = match ok {
        Some(ok) => (quote!(#ok), ok.span()),
        None => (
            quote_spanned!(ret.span()=> <#ret as ::machinery_core::__private::TaskReturn>::Ok),
            ret.span(),
        ),
    };
    // The error type as written, else projected out of the return type (`io::Result<T>`).
    let (err_ty, err_span) = match err {
        Some(err) => (quote!(#err), err.span()),
        None => (
            quote_spanned!(ret.span()=> <#ret as ::machinery_core::__private::TaskReturn>::Err),
            ret.span(),
        ),
    };
    let assert_args: Vec<_> = arg_tys
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> ::machinery_core::__private::assert_arg::<#ty>();))
        .collect();
    let assert_output =
        quote_spanned!(ok_span=> ::machinery_core::__private::assert_output::<#ok_ty>(););
    let assert_return =
        quote_spanned!(ret.span()=> ::machinery_core::__private::assert_return::<#ret>(););
    // A boxed error has no `Into<TaskError>` (see `TaskError::boxed`): it is asserted and
    // converted through its own trait.
    let conversion = if *boxed_err {
        Conversion {
            assert: quote!(assert_boxed_error),
            bound: quote!(BoxedTaskError),
            convert: quote!(boxed_into_task_result),
        }
    } else {
        Conversion {
            assert: quote!(assert_error),
            bound: quote!(TaskFailure),
            convert: quote!(into_task_result),
        }
    };
    let assert_fn = &conversion.assert;
    let assert_error =
        quote_spanned!(err_span=> ::machinery_core::__private::#assert_fn::<#err_ty>(););

    let args_struct = args_struct(task, &arg_tys, &assert_args);
    let output_struct = output_struct(&ok_ty, ok_span, &assert_output);
    let handler = handler(
        task,
        ret,
        &err_ty,
        &conversion,
        &[&assert_return, &assert_error],
    );

    let call = format!(
        "`{}({})`",
        ident,
        comma_list(arg_idents.iter().map(ToString::to_string))
    );
    let args_doc = if arg_count == 0 {
        String::new()
    } else {
        let listed = comma_list(
            task.args
                .iter()
                .map(|a| format!("`{}: {}`", a.ident, crate::model::type_text(a.ty))),
        );
        format!(" Arguments: {listed}.")
    };
    let mod_doc = format!("Typed senders and registration of the `{ident}` task (`{schema}`).");
    let s_doc = format!("Builds the signature of a call {call}, to configure and send.{args_doc}");
    let send_doc = format!(
        "Sends a call {call} on the process-wide server (see `Server::install`).{args_doc}\n\n\
         # Errors\n\nWhen no server is installed, and when publishing fails."
    );
    let result_doc = format!(
        "The typed handle to the result of the `{ident}` task with the given UUID, on the \
         process-wide server, found in whatever queue the task was sent to (see \
         `Server::result`).\n\n# Errors\n\nWhen no server is installed."
    );
    let result_with_doc = format!(
        "The typed handle to the result of the `{ident}` task with the given UUID, on `server`, \
         found in whatever queue the task was sent to (see `Server::result`)."
    );
    let name_doc = format!("The name the task is registered under: `\"{name}\"`.");
    let schema_doc = format!("The task's argument schema as written: `{schema}`.");

    let workflow_fns = workflow_fns(&arg_idents, &arg_tys);
    let workflow_exports = if arg_count > 0 {
        quote!(
            pub use self::__machinery::{errback, partial};
        )
    } else {
        TokenStream::new()
    };

    quote! {
        #[doc = #mod_doc]
        #[allow(non_snake_case)]
        #vis mod #ident {
            #[doc = #name_doc]
            pub const NAME: &::core::primitive::str = #name;
            #[doc = #schema_doc]
            pub const SCHEMA: &::core::primitive::str = #schema;
            /// 64-bit FNV-1a hash of [`SCHEMA`], which workers compare with the sender's.
            pub const FINGERPRINT: ::core::primitive::u64 = #fingerprint;
            /// The task's result type: the `T` of its `Result<T, E>`.
            pub type Output = self::__machinery::__machinery_Output;
            /// The task's registration, for `Worker::task`.
            pub const ENTRY: ::machinery_core::__private::TaskEntry =
                ::machinery_core::__private::TaskEntry {
                    name: NAME,
                    schema: SCHEMA,
                    fingerprint: FINGERPRINT,
                    location: ::core::module_path!(),
                    handler: self::__machinery::__machinery_handler,
                    options: #options,
                };
            #[doc(inline)]
            pub use self::__machinery::{result, result_with, s, send, si};
            #[doc(inline)]
            #workflow_exports

            ::machinery_core::__private::inventory::submit! { ENTRY }

            #[allow(unused_imports, non_camel_case_types, deprecated, clippy::all)]
            mod __machinery {
                use super::super::*;

                pub type __machinery_Output = #ok_ty;

                #( const _: () = #assert_args )*
                const _: () = #assert_output
                const _: () = #assert_return
                const _: () = #assert_error

                #args_struct
                #output_struct
                #handler

                #[doc = #s_doc]
                pub fn s(#(#arg_idents: #arg_tys),*)
                    -> ::machinery_core::__private::Signature<__machinery_Output>
                {
                    ::machinery_core::__private::signature(
                        &super::ENTRY,
                        &__machinery_Args(#(#arg_idents),*),
                    )
                }

                /// Like `s`, but as a workflow step or callback the signature ignores
                /// the previous step's result (it is immutable).
                pub fn si(#(#arg_idents: #arg_tys),*)
                    -> ::machinery_core::__private::Signature<__machinery_Output>
                {
                    self::s(#(#arg_idents),*).immutable()
                }

                #workflow_fns

                #[doc = #send_doc]
                pub async fn send(#(#arg_idents: #arg_tys),*) -> ::core::result::Result<
                    ::machinery_core::__private::AsyncResult<__machinery_Output>,
                    ::machinery_core::__private::Error,
                > {
                    self::s(#(#arg_idents),*).send().await
                }

                #[doc = #result_doc]
                pub fn result(
                    __machinery_uuid: ::machinery_core::__private::Uuid,
                ) -> ::core::result::Result<
                    ::machinery_core::__private::AsyncResult<__machinery_Output>,
                    ::machinery_core::__private::Error,
                > {
                    ::machinery_core::__private::result(&super::ENTRY, __machinery_uuid)
                }

                #[doc = #result_with_doc]
                pub fn result_with(
                    __machinery_server: &::machinery_core::__private::Server,
                    __machinery_uuid: ::machinery_core::__private::Uuid,
                ) -> ::machinery_core::__private::AsyncResult<__machinery_Output> {
                    ::machinery_core::__private::result_with(
                        __machinery_server,
                        &super::ENTRY,
                        __machinery_uuid,
                    )
                }
            }
        }
    }
}

/// `partial` (all arguments but the last, for workflow steps) and `errback` (all but
/// the first, for error callbacks), for tasks with at least one argument.
fn workflow_fns(idents: &[&syn::Ident], tys: &[&syn::Type]) -> TokenStream {
    let (Some(last_ty), Some(first_ty)) = (tys.last(), tys.first()) else {
        return TokenStream::new();
    };
    let n = idents.len();
    let (init_idents, init_tys) = (&idents[..n - 1], &tys[..n - 1]);
    let (tail_idents, tail_tys) = (&idents[1..], &tys[1..]);
    // One `encode_arg` per argument at its type's span, after repeating its assertion,
    // so a type that cannot be an argument is reported once (see the module docs).
    let encode = |ids: &[&syn::Ident], tys: &[&syn::Type]| {
        let parts = ids.iter().zip(tys).map(|(id, ty)| {
            quote_spanned!(ty.span()=> {
                ::machinery_core::__private::assert_arg::<#ty>();
                ::machinery_core::__private::encode_arg::<#ty>(&#id)
            })
        });
        quote!(::machinery_core::__private::encode_args(
            ::std::vec![#(#parts),*]
        ))
    };
    let init = encode(init_idents, init_tys);
    let tail = encode(tail_idents, tail_tys);
    quote! {
        /// A workflow step missing its last argument, which the previous step's result
        /// supplies: `previous.then(this_task::partial(..))`.
        pub fn partial(#(#init_idents: #init_tys),*)
            -> ::machinery_core::__private::Partial<#last_ty, __machinery_Output>
        {
            ::machinery_core::__private::partial(&super::ENTRY, #init)
        }

        /// An error callback missing its first argument, which receives the failed
        /// task's error text: `sig.on_error(this_task::errback(..))`.
        pub fn errback(#(#tail_idents: #tail_tys),*)
            -> ::machinery_core::__private::ErrorCallback<#first_ty, __machinery_Output>
        {
            ::machinery_core::__private::errback(&super::ENTRY, #tail)
        }
    }
}

/// `TaskOptions { .. }` from the attribute's options.
fn options(task: &Task) -> TokenStream {
    let o = &task.options;
    let some = |value: Option<TokenStream>| match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    };
    let queue = some(o.queue.as_deref().map(|q| quote!(#q)));
    let retries = some(
        o.retries
            .map(|n| Literal::u32_unsuffixed(n).into_token_stream()),
    );
    let retry_timeout = some(
        o.retry_timeout_ms
            .map(|ms| Literal::u64_unsuffixed(ms).into_token_stream()),
    );
    let timeout = some(
        o.timeout_ms
            .map(|ms| Literal::u64_unsuffixed(ms).into_token_stream()),
    );
    let expires = some(
        o.expires_ms
            .map(|ms| Literal::u64_unsuffixed(ms).into_token_stream()),
    );
    let unique = some(
        o.unique_ms
            .map(|ms| Literal::u64_unsuffixed(ms).into_token_stream()),
    );
    let rate_limit = some(o.rate_limit.map(|(count, period_ms)| {
        let count = Literal::u32_unsuffixed(count);
        let period_ms = Literal::u64_unsuffixed(period_ms);
        quote!(::machinery_core::RateLimit::new(#count, #period_ms))
    }));
    let blocking = !task.is_async();
    quote! {
        ::machinery_core::__private::TaskOptions {
            queue: #queue,
            retries: #retries,
            retry_timeout_ms: #retry_timeout,
            timeout_ms: #timeout,
            expires_ms: #expires,
            unique_ms: #unique,
            rate_limit: #rate_limit,
            blocking: #blocking,
        }
    }
}

/// The arguments as one value, encoded as a positional array. Each element is asserted
/// and then encoded or decoded at its type's span (see the module docs).
fn args_struct(task: &Task, tys: &[&syn::Type], asserts: &[TokenStream]) -> TokenStream {
    let count = tys.len();
    let indexes = (0..count).map(syn::Index::from);
    let serialize_elements = tys
        .iter()
        .zip(asserts)
        .zip(indexes)
        .map(|((ty, assert), i)| {
            quote_spanned! {ty.span()=>
                #assert
                ::machinery_core::__private::serde::ser::SerializeTuple::serialize_element::<#ty>(
                    &mut __machinery_seq,
                    &self.#i,
                )?;
            }
        });
    let locals: Vec<_> = (0..count)
        .map(|i| format_ident!("__machinery_{}", i))
        .collect();
    let next_elements = tys.iter().zip(asserts).zip(&locals).enumerate().map(|(i, ((ty, assert), local))| {
        let next = quote_spanned! {ty.span()=>
            ::machinery_core::__private::serde::de::SeqAccess::next_element::<#ty>(&mut __machinery_seq)
        };
        quote! {
            #assert
            let #local = match #next? {
                ::core::option::Option::Some(__machinery_value) => __machinery_value,
                ::core::option::Option::None => {
                    return ::core::result::Result::Err(
                        ::machinery_core::__private::serde::de::Error::invalid_length(#i, &self),
                    );
                }
            };
        }
    });
    let expecting = format!("the {count} arguments of `{}`", task.schema());
    // Zero arguments: also accept `()`, which MessagePack encodes as nil.
    let visit_unit = if count == 0 {
        quote! {
            fn visit_unit<__machinery_E>(self) -> ::core::result::Result<Self::Value, __machinery_E>
            where
                __machinery_E: ::machinery_core::__private::serde::de::Error,
            {
                ::core::result::Result::Ok(__machinery_Args())
            }
        }
    } else {
        TokenStream::new()
    };
    quote! {
        struct __machinery_Args(#(#tys),*);

        impl ::machinery_core::__private::serde::Serialize for __machinery_Args {
            fn serialize<__machinery_S>(
                &self,
                __machinery_serializer: __machinery_S,
            ) -> ::core::result::Result<__machinery_S::Ok, __machinery_S::Error>
            where
                __machinery_S: ::machinery_core::__private::serde::Serializer,
            {
                let mut __machinery_seq = ::machinery_core::__private::serde::Serializer::serialize_tuple(
                    __machinery_serializer,
                    #count,
                )?;
                #(#serialize_elements)*
                ::machinery_core::__private::serde::ser::SerializeTuple::end(__machinery_seq)
            }
        }

        impl<'de> ::machinery_core::__private::serde::Deserialize<'de> for __machinery_Args {
            fn deserialize<__machinery_D>(
                __machinery_deserializer: __machinery_D,
            ) -> ::core::result::Result<Self, __machinery_D::Error>
            where
                __machinery_D: ::machinery_core::__private::serde::Deserializer<'de>,
            {
                struct __machinery_Visitor;

                impl<'de> ::machinery_core::__private::serde::de::Visitor<'de> for __machinery_Visitor {
                    type Value = __machinery_Args;

                    fn expecting(
                        &self,
                        __machinery_f: &mut ::core::fmt::Formatter<'_>,
                    ) -> ::core::fmt::Result {
                        ::core::fmt::Formatter::write_str(__machinery_f, #expecting)
                    }

                    fn visit_seq<__machinery_A>(
                        self,
                        mut __machinery_seq: __machinery_A,
                    ) -> ::core::result::Result<Self::Value, __machinery_A::Error>
                    where
                        __machinery_A: ::machinery_core::__private::serde::de::SeqAccess<'de>,
                    {
                        #(#next_elements)*
                        ::core::result::Result::Ok(__machinery_Args(#(#locals),*))
                    }

                    #visit_unit
                }

                ::machinery_core::__private::serde::Deserializer::deserialize_tuple(
                    __machinery_deserializer,
                    #count,
                    __machinery_Visitor,
                )
            }
        }
    }
}

/// The `Ok` value, encoded as itself after its assertion (see the module docs).
fn output_struct(ok_ty: &TokenStream, ok_span: Span, assert: &TokenStream) -> TokenStream {
    let serialize = quote_spanned! {ok_span=>
        #assert
        <#ok_ty as ::machinery_core::__private::serde::Serialize>::serialize(
            &self.0,
            __machinery_serializer,
        )
    };
    quote! {
        struct __machinery_Ok(__machinery_Output);

        impl ::machinery_core::__private::serde::Serialize for __machinery_Ok {
            fn serialize<__machinery_S>(
                &self,
                __machinery_serializer: __machinery_S,
            ) -> ::core::result::Result<__machinery_S::Ok, __machinery_S::Error>
            where
                __machinery_S: ::machinery_core::__private::serde::Serializer,
            {
                #serialize
            }
        }
    }
}

/// How the error type becomes a `TaskError`: the names, in `__private`, of its
/// assertion, of the trait it must implement and of the function converting the result.
struct Conversion {
    assert: TokenStream,
    bound: TokenStream,
    convert: TokenStream,
}

/// The type-erased entry point: decodes the arguments, calls the function, converts and
/// encodes its result.
fn handler(
    task: &Task,
    ret: &syn::Type,
    err_ty: &TokenStream,
    conversion: &Conversion,
    asserts: &[&TokenStream],
) -> TokenStream {
    let ident = task.ident();
    let idents: Vec<_> = task.args.iter().map(|a| &a.ident).collect();
    let ctx = if task.context.is_some() {
        quote!(__machinery_ctx,)
    } else {
        TokenStream::new()
    };
    let call = quote!(super::super::#ident(#ctx #(#idents),*));
    let Conversion {
        bound,
        convert: into_task_result,
        ..
    } = conversion;
    // Naming the return and error types as explicit generic arguments puts a failure of
    // their bounds at the same spans as `assert_return`'s and `assert_error`'s, where
    // rustc suppresses it.
    let convert = quote!(__machinery_into_result::<#ret, #err_ty>);
    let body = if task.is_async() {
        quote! {
            ::machinery_core::__private::run_async::<__machinery_Args, _, _, _>(
                __machinery_inv,
                super::SCHEMA,
                |__machinery_ctx, __machinery_Args(#(#idents),*)| async move {
                    #convert(#call.await)
                },
            )
        }
    } else {
        quote! {
            ::machinery_core::__private::run_blocking::<__machinery_Args, _, _>(
                __machinery_inv,
                super::SCHEMA,
                |__machinery_ctx, __machinery_Args(#(#idents),*)| {
                    #convert(#call)
                },
            )
        }
    };
    quote! {
        fn __machinery_into_result<__machinery_R, __machinery_E>(
            __machinery_result: __machinery_R,
        ) -> ::core::result::Result<__machinery_Ok, ::machinery_core::__private::TaskError>
        where
            __machinery_R: ::machinery_core::__private::TaskReturn<
                Ok = __machinery_Output,
                Err = __machinery_E,
            >,
            __machinery_E: ::machinery_core::__private::#bound,
        {
            ::core::result::Result::map(
                ::machinery_core::__private::#into_task_result(__machinery_result),
                __machinery_Ok,
            )
        }

        pub(super) fn __machinery_handler(
            __machinery_inv: ::machinery_core::__private::Invocation,
        ) -> ::machinery_core::__private::BoxFuture<::machinery_core::__private::Outcome> {
            #(#asserts)*
            #body
        }
    }
}

fn comma_list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use quote::quote;
    use syn::{Item, ItemConst, ItemMod};

    use super::*;

    fn expand(attr: TokenStream, item: TokenStream) -> syn::File {
        syn::parse2(task(attr, item)).expect("the expansion parses as items")
    }

    fn module<'a>(file: &'a syn::File, name: &str) -> &'a ItemMod {
        file.items
            .iter()
            .find_map(|item| match item {
                Item::Mod(m) if m.ident == name => Some(m),
                _ => None,
            })
            .expect("the generated module")
    }

    fn items(m: &ItemMod) -> &[Item] {
        m.content
            .as_ref()
            .map_or(&[], |(_, items)| items.as_slice())
    }

    fn constant<'a>(m: &'a ItemMod, name: &str) -> &'a ItemConst {
        items(m)
            .iter()
            .find_map(|item| match item {
                Item::Const(c) if c.ident == name => Some(c),
                _ => None,
            })
            .expect("the constant")
    }

    fn text(tokens: impl ToTokens) -> String {
        tokens.to_token_stream().to_string()
    }

    #[test]
    fn keeps_the_function_and_adds_a_module() {
        let file = expand(
            quote!(
                name = "math.add",
                queue = "math",
                retries = 3,
                retry_timeout = "2s",
                timeout = "30s"
            ),
            quote! {
                /// Adds.
                pub async fn add(ctx: TaskContext, a: i64, b: i64) -> Result<i64, MyError> {
                    Ok(a + b)
                }
            },
        );
        let Some(Item::Fn(f)) = file.items.first() else {
            panic!("the function comes first");
        };
        assert_eq!(f.sig.ident, "add");
        let m = module(&file, "add");
        assert!(matches!(m.vis, syn::Visibility::Public(_)));
        assert_eq!(text(&constant(m, "NAME").expr), "\"math.add\"");
        assert_eq!(
            text(&constant(m, "SCHEMA").expr),
            "\"add(i64, i64) -> i64\""
        );
        let fingerprint = crate::model::fnv1a(b"add(i64, i64) -> i64");
        assert_eq!(
            text(&constant(m, "FINGERPRINT").expr),
            format!("0x{fingerprint:016x}")
        );
        let entry = text(&constant(m, "ENTRY").expr);
        for expected in [
            "queue : :: core :: option :: Option :: Some (\"math\")",
            "retries : :: core :: option :: Option :: Some (3)",
            "retry_timeout_ms : :: core :: option :: Option :: Some (2000)",
            "timeout_ms : :: core :: option :: Option :: Some (30000)",
            "blocking : false",
        ] {
            assert!(entry.contains(expected), "{expected} in {entry}");
        }
    }

    #[test]
    fn defaults_and_blocking() {
        let file = expand(
            quote!(),
            quote!(
                pub(crate) fn sub(a: i64) -> Result<i64, TaskError> {
                    Ok(a)
                }
            ),
        );
        let m = module(&file, "sub");
        assert!(matches!(m.vis, syn::Visibility::Restricted(_)));
        assert_eq!(text(&constant(m, "NAME").expr), "\"sub\"");
        let entry = text(&constant(m, "ENTRY").expr);
        assert!(
            entry.contains("queue : :: core :: option :: Option :: None"),
            "{entry}"
        );
        assert!(entry.contains("blocking : true"), "{entry}");
        assert!(text(m).contains("run_blocking"));
    }

    /// Names a user may shadow (`struct Result;`); the expansion must reach them only
    /// through `::core`/`::std`/`::machinery_core` paths.
    fn bare_names(tokens: TokenStream, after_colons: bool, found: &mut Vec<String>) {
        const SHADOWABLE: &[&str] = &[
            "Result",
            "Ok",
            "Err",
            "Option",
            "Some",
            "None",
            "Box",
            "Vec",
            "String",
            "serde",
            "inventory",
            "Send",
            "Sync",
            "Fn",
            "FnOnce",
            "Future",
            "TaskEntry",
            "Signature",
        ];
        let mut after_colons = after_colons;
        let mut tokens = tokens.into_iter().peekable();
        while let Some(tt) = tokens.next() {
            match tt {
                proc_macro2::TokenTree::Ident(ident) => {
                    let name = ident.to_string();
                    // `Trait<Ok = T>` names an associated type, not an item in scope.
                    let binding = matches!(tokens.peek(), Some(proc_macro2::TokenTree::Punct(p)) if p.as_char() == '=');
                    if !after_colons && !binding && SHADOWABLE.contains(&name.as_str()) {
                        found.push(name);
                    }
                    after_colons = false;
                }
                proc_macro2::TokenTree::Punct(p) => after_colons = p.as_char() == ':',
                proc_macro2::TokenTree::Group(g) => {
                    bare_names(g.stream(), false, found);
                    after_colons = false;
                }
                proc_macro2::TokenTree::Literal(_) => after_colons = false,
            }
        }
    }

    #[test]
    fn generated_code_names_only_absolute_paths() {
        for item in [
            quote!(
                async fn f(
                    ctx: TaskContext,
                    a: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<u8, E> {
                    x
                }
            ),
            quote!(
                fn f() -> ::std::io::Result<::std::string::String> {
                    x
                }
            ),
        ] {
            let file = expand(quote!(queue = "q", retries = 1), item);
            let generated = module(&file, "f").to_token_stream();
            let mut found = Vec::new();
            bare_names(generated, false, &mut found);
            assert!(found.is_empty(), "bare names {found:?} in the expansion");
        }
    }

    fn compile_errors(file: &syn::File) -> usize {
        file.items
            .iter()
            .filter(|item| matches!(item, Item::Macro(m) if m.mac.path.segments.last().is_some_and(|s| s.ident == "compile_error")))
            .count()
    }

    #[test]
    fn option_errors_still_generate_the_module_with_defaults() {
        let file = expand(
            quote!(
                name = "",
                queue = "math",
                queue = "fast",
                retry = 3,
                timeout = "soon",
                retries = 2
            ),
            quote!(
                async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
                    Ok(a + b)
                }
            ),
        );
        assert!(matches!(file.items.first(), Some(Item::Fn(_))));
        assert_eq!(compile_errors(&file), 4);
        let m = module(&file, "add");
        assert_eq!(text(&constant(m, "NAME").expr), "\"add\"");
        let entry = text(&constant(m, "ENTRY").expr);
        for expected in [
            "queue : :: core :: option :: Option :: Some (\"math\")",
            "retries : :: core :: option :: Option :: Some (2)",
            "timeout_ms : :: core :: option :: Option :: None",
        ] {
            assert!(entry.contains(expected), "{expected} in {entry}");
        }
    }

    #[test]
    fn malformed_options_still_generate_the_module() {
        let file = expand(
            quote!(queue = "math", timeout),
            quote!(
                fn f() -> Result<(), TaskError> {
                    Ok(())
                }
            ),
        );
        assert_eq!(compile_errors(&file), 1);
        let entry = text(&constant(module(&file, "f"), "ENTRY").expr);
        assert!(entry.contains("Some (\"math\")"), "{entry}");
    }

    #[test]
    fn errors_keep_the_function_and_add_nothing_else() {
        let out = task(
            quote!(bogus = 1),
            quote!(
                async fn f<T>(a: &str) -> Result<T, TaskError> {
                    Err(TaskError::msg(a))
                }
            ),
        );
        let file: syn::File = syn::parse2(out).expect("items");
        assert!(matches!(file.items.first(), Some(Item::Fn(_))));
        assert_eq!(compile_errors(&file), 3);
        assert!(!file.items.iter().any(|item| matches!(item, Item::Mod(_))));
    }

    #[test]
    fn not_a_function() {
        let out = task(
            quote!(),
            quote!(
                struct S;
            ),
        )
        .to_string();
        assert!(out.starts_with("struct S ;"), "{out}");
        assert!(out.contains("can only be applied to functions"), "{out}");
    }
}
