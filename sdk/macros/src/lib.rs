//! `#[weir_sdk::plugin]`: put it on `impl Plugin for YourType` and the build
//! exports exactly the hooks that impl defines, so a hook cannot be written
//! and then forgotten (the host never calls a hook the module does not
//! export). Used through the SDK's re-export, `weir_sdk::plugin`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{ToTokens, quote};
use syn::spanned::Spanned;
use syn::{ImplItem, ItemImpl, Type, parse_quote};

/// The trait's hooks the host can call, in ABI order. `configure` is always
/// exported (the host calls it before anything else).
const HOOKS: [&str; 7] = [
    "on_request",
    "select",
    "on_response",
    "on_end",
    "status",
    "snapshot",
    "restore",
];

/// Exports the hooks this `impl Plugin for X` defines (and `on_end` when
/// `Ctx` is not `()`, so per-request state is freed). Missing `type Config`
/// and `type Ctx` default to `()`. `#[weir_sdk::plugin(fail_closed)]` also
/// declares that the plugin guards access: its failures then answer 503 on
/// every route, never letting a request through unchecked.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let fail_closed = match syn::parse2::<Option<syn::Ident>>(attr.clone()) {
        Ok(None) => false,
        Ok(Some(flag)) if flag == "fail_closed" => true,
        _ => {
            return Err(syn::Error::new(
                attr.span(),
                "#[weir_sdk::plugin] takes one optional argument, `fail_closed` \
                 (for plugins that guard access); the hooks exported are the ones the impl defines",
            ));
        }
    };
    let mut imp: ItemImpl = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[weir_sdk::plugin] goes on `impl Plugin for YourType { … }`",
        )
    })?;
    check_trait(&imp)?;
    if !imp.generics.params.is_empty() || imp.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            imp.generics.span(),
            "#[weir_sdk::plugin]: a plugin type cannot be generic; a build exports one concrete plugin",
        ));
    }

    let mut hooks = Vec::new();
    let mut ctx_is_unit = true;
    let (mut has_config, mut has_ctx) = (false, false);
    for item in &imp.items {
        match item {
            ImplItem::Fn(f) => {
                let name = f.sig.ident.to_string();
                if HOOKS.contains(&name.as_str()) {
                    hooks.push(f.sig.ident.clone());
                }
            }
            ImplItem::Type(t) if t.ident == "Ctx" => {
                has_ctx = true;
                ctx_is_unit = is_unit(&t.ty);
            }
            ImplItem::Type(t) if t.ident == "Config" => has_config = true,
            _ => {}
        }
    }
    if !has_config {
        imp.items.push(parse_quote!(
            type Config = ();
        ));
    }
    if !has_ctx {
        imp.items.push(parse_quote!(
            type Ctx = ();
        ));
    }
    if !ctx_is_unit && !hooks.iter().any(|h| h == "on_end") {
        hooks.push(syn::Ident::new("on_end", Span::call_site()));
    }
    // ABI order, so the export list reads the same whatever the impl's order.
    hooks.sort_by_key(|h| HOOKS.iter().position(|k| h == k));

    let self_ty = &imp.self_ty;
    let flags = fail_closed.then(|| quote!(, fail_closed));
    Ok(quote! {
        #imp
        ::weir_sdk::__export!(#self_ty, hooks: [#(#hooks),*] #flags);
    })
}

/// The impl must be of the SDK's `Plugin` trait (by any path ending in it).
fn check_trait(imp: &ItemImpl) -> syn::Result<()> {
    let Some((bang, path, _)) = &imp.trait_ else {
        return Err(syn::Error::new(
            imp.self_ty.span(),
            format!(
                "#[weir_sdk::plugin] goes on the trait impl: `impl Plugin for {}`",
                imp.self_ty.to_token_stream()
            ),
        ));
    };
    if let Some(bang) = bang {
        return Err(syn::Error::new(
            bang.span(),
            "#[weir_sdk::plugin] cannot go on a negative impl",
        ));
    }
    if path.segments.last().is_none_or(|s| s.ident != "Plugin") {
        return Err(syn::Error::new(
            path.span(),
            "#[weir_sdk::plugin] goes on `impl Plugin for YourType`, not on another trait's impl",
        ));
    }
    Ok(())
}

fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(t) => t.elems.is_empty(),
        Type::Paren(p) => is_unit(&p.elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(item: proc_macro2::TokenStream) -> String {
        match expand(proc_macro2::TokenStream::new(), item) {
            Ok(t) => t.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn exports_exactly_the_defined_hooks_in_abi_order() {
        let out = expanded(quote! {
            impl Plugin for Auth {
                type Config = ();
                type Ctx = ();
                fn status(&self) -> String { String::new() }
                fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction { todo!() }
            }
        });
        assert!(
            out.contains("hooks : [on_request , status]"),
            "expansion: {out}"
        );
    }

    #[test]
    fn adds_on_end_when_ctx_holds_state_and_defaults_missing_types() {
        let out = expanded(quote! {
            impl Plugin for Timer {
                type Ctx = u64;
                fn on_request(&mut self, _: &mut u64, _: &mut Request) -> RequestAction { todo!() }
            }
        });
        assert!(out.contains("hooks : [on_request , on_end]"), "{out}");
        assert!(out.contains("type Config = ()"), "{out}");
        let unit = expanded(quote! {
            impl weir_sdk::Plugin for Hello {
                fn on_response(&mut self) {}
            }
        });
        assert!(unit.contains("type Ctx = ()"), "{unit}");
        assert!(unit.contains("hooks : [on_response]"), "{unit}");
    }

    #[test]
    fn misuse_is_a_compile_error_that_says_where_the_attribute_goes() {
        for (item, expected) in [
            (quote! { impl Hello {} }, "goes on the trait impl"),
            (quote! { impl Default for Hello {} }, "not on another trait"),
            (quote! { struct Hello; }, "goes on `impl Plugin"),
            (
                quote! { impl<T> Plugin for Hello<T> {} },
                "cannot be generic",
            ),
        ] {
            let out = expanded(item);
            assert!(out.starts_with("error:") && out.contains(expected), "{out}");
        }
        let with_args = expand(quote!(hooks), quote! { impl Plugin for X {} });
        assert!(with_args.is_err());
        let two = expand(quote!(fail_closed, x), quote! { impl Plugin for X {} });
        assert!(two.is_err());
    }

    #[test]
    fn fail_closed_is_declared_in_the_export() {
        let out = expand(
            quote!(fail_closed),
            quote! { impl Plugin for Auth { fn on_request(&mut self) {} } },
        )
        .map(|t| t.to_string())
        .unwrap_or_default();
        assert!(out.contains("hooks : [on_request] , fail_closed"), "{out}");
    }
}
