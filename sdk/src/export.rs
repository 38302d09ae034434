//! The glue behind [`#[plugin]`](crate::plugin): turns raw ABI calls into trait
//! calls, parses typed config, and keeps per-request state by request id so
//! plugin authors never see ids.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;
use core::time::Duration;

use weir_abi::{self as abi, ErrorClass, Method, RequestDecision, ResponseDecision, status};

use crate::hostcalls;
use crate::types::{Answer, End, Request, RequestAction, Response, ResponseAction};
use crate::{Endpoint, Plugin};

/// The plugin and its per-request state; one per instance.
#[doc(hidden)]
pub struct Runtime<P: Plugin> {
    plugin: P,
    // Keyed by request id; empty when `Ctx` is zero-sized (nothing to keep).
    ctxs: BTreeMap<u64, P::Ctx>,
    endpoints: Vec<Endpoint>,
    tried: Vec<u32>,
}

impl<P: Plugin> Default for Runtime<P> {
    fn default() -> Self {
        Self {
            plugin: P::default(),
            ctxs: BTreeMap::new(),
            endpoints: Vec::new(),
            tried: Vec::new(),
        }
    }
}

const fn stateless<C>() -> bool {
    size_of::<C>() == 0
}

/// Whether `hooks` names `hook`; used by the export at compile time.
#[doc(hidden)]
pub const fn has_hook(hooks: &[&str], hook: &str) -> bool {
    let mut i = 0;
    while i < hooks.len() {
        let (a, b) = (hooks[i].as_bytes(), hook.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

fn send_answer(a: &Answer) -> bool {
    match hostcalls::answer(a.status, &a.headers, &a.body) {
        Ok(()) => true,
        Err(e) => {
            let _ = hostcalls::log(abi::LogLevel::Error, &format!("answer refused: {e}"));
            false
        }
    }
}

fn outcome_parts(status_code: i32, error: i32) -> (Option<u16>, Option<ErrorClass>) {
    let status_code = u16::try_from(status_code).ok().filter(|s| *s != 0);
    let error =
        ErrorClass::from_code(error & abi::ERROR_CLASS_MASK).filter(|e| *e != ErrorClass::None);
    (status_code, error)
}

impl<P: Plugin> Runtime<P> {
    /// The plugin (for the test harness).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn plugin(&self) -> &P {
        &self.plugin
    }

    fn with_ctx<R>(&mut self, id: i64, f: impl FnOnce(&mut P, &mut P::Ctx) -> R) -> R {
        if stateless::<P::Ctx>() {
            return f(&mut self.plugin, &mut P::Ctx::default());
        }
        let ctx = self.ctxs.entry(id as u64).or_default();
        f(&mut self.plugin, ctx)
    }

    pub fn configure(&mut self) -> i32 {
        report_panics();
        let result = hostcalls::input()
            .map_err(|e| format!("cannot read config: {e}"))
            .and_then(|input| {
                crate::rejection::parse_settings::<P::Config>(&input).map_err(|r| r.to_json())
            })
            .and_then(|config| self.plugin.configure(config));
        match result {
            Ok(()) => status::OK,
            Err(msg) => {
                let _ = hostcalls::output(msg.as_bytes());
                status::REJECTED
            }
        }
    }

    pub fn on_request(&mut self, id: i64, method: i32, attempt: i32) -> i32 {
        let method = Method::from_code(method).unwrap_or(Method::Other);
        let mut req = Request {
            method: Some(method),
            attempt: attempt as u32,
        };
        match self.with_ctx(id, |p, ctx| p.on_request(ctx, &mut req)) {
            RequestAction::Continue => RequestDecision::Continue.code(),
            // If the host refused the answer, the host sees an answer without
            // a body and treats it as the plugin's fault; log why.
            RequestAction::Answer(a) => {
                send_answer(&a);
                RequestDecision::Answer.code()
            }
            RequestAction::Serve(s) => match s.send() {
                Ok(()) => RequestDecision::Answer.code(),
                Err(e) => {
                    let _ = hostcalls::log(abi::LogLevel::Warn, &format!("cache serve: {e}"));
                    RequestDecision::Continue.code()
                }
            },
        }
    }

    pub fn select(&mut self, id: i64, attempt: i32, endpoints: i32, tried: i32) -> i64 {
        let (mut eps, mut tr) = (
            core::mem::take(&mut self.endpoints),
            core::mem::take(&mut self.tried),
        );
        let read = hostcalls::endpoints_read(endpoints.max(0) as usize, &mut eps)
            .and_then(|()| hostcalls::tried_read(tried.max(0) as usize, &mut tr));
        let req = Request {
            method: None,
            attempt: attempt as u32,
        };
        let choice = match read {
            Ok(()) => self.with_ctx(id, |p, ctx| p.select(ctx, &req, &eps, &tr)),
            Err(_) => None,
        };
        // Keep the buffers' capacity for the next call.
        (self.endpoints, self.tried) = (eps, tr);
        choice.map_or(abi::SELECT_DEFAULT, i64::from)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_response(
        &mut self,
        id: i64,
        attempt: i32,
        status_code: i32,
        error: i32,
        endpoint: i32,
        latency_us: i64,
    ) -> i64 {
        let (status_code, class) = outcome_parts(status_code, error);
        let mut resp = Response {
            attempt: attempt as u32,
            status: status_code,
            error: class,
            reached_upstream: error & abi::REACHED_UPSTREAM != 0,
            local: error & abi::LOCAL_ANSWER != 0,
            endpoint: u32::try_from(endpoint).ok(),
            latency: Duration::from_micros(latency_us.max(0) as u64),
        };
        let req = Request {
            method: None,
            attempt: attempt as u32,
        };
        let action = self.with_ctx(id, |p, ctx| p.on_response(ctx, &req, &mut resp));
        let decision = match action {
            ResponseAction::Pass => ResponseDecision::Pass,
            ResponseAction::Replace(a) => {
                send_answer(&a);
                ResponseDecision::Replace
            }
            ResponseAction::Retry(d) => ResponseDecision::Retry {
                delay_ms: u32::try_from(d.as_millis()).unwrap_or(u32::MAX),
            },
            ResponseAction::Serve(s) => match s.send() {
                Ok(()) => ResponseDecision::Replace,
                Err(e) => {
                    let _ = hostcalls::log(abi::LogLevel::Warn, &format!("cache serve: {e}"));
                    ResponseDecision::Pass
                }
            },
        };
        decision.encode()
    }

    pub fn on_end(&mut self, id: i64, status_code: i32, error: i32) {
        let (status_code, class) = outcome_parts(status_code, error);
        let end = End {
            status: status_code,
            error: class,
            cancelled: error & abi::CANCELLED != 0,
            timed_out: error & abi::TIMED_OUT != 0,
            client_error: error & abi::CLIENT_ERROR != 0,
        };
        let ctx = if stateless::<P::Ctx>() {
            P::Ctx::default()
        } else {
            self.ctxs.remove(&(id as u64)).unwrap_or_default()
        };
        self.plugin.on_end(ctx, &end);
    }

    pub fn status(&mut self) -> i32 {
        let s = self.plugin.status();
        hostcalls::output(s.as_bytes()).map_or_else(|e| e.0, |()| status::OK)
    }

    pub fn snapshot(&mut self) -> i32 {
        let s = self.plugin.snapshot();
        hostcalls::output(&s).map_or_else(|e| e.0, |()| status::OK)
    }

    pub fn restore(&mut self) -> i32 {
        let result = hostcalls::input()
            .map_err(|e| format!("cannot read snapshot: {e}"))
            .and_then(|bytes| self.plugin.restore(&bytes));
        match result {
            Ok(()) => status::OK,
            Err(msg) => {
                let _ = hostcalls::output(msg.as_bytes());
                status::REJECTED
            }
        }
    }
}

/// The hooks a plugin's build exports, recorded by `#[weir_sdk::plugin]` so
/// that [`testing::Harness`](crate::testing::Harness) calls exactly those,
/// as the host does.
#[doc(hidden)]
pub trait Exported {
    const HOOKS: &'static [&'static str];
}

/// Exports a plugin to the host: the ABI version and `configure` always,
/// plus exactly the hooks listed. Written by `#[weir_sdk::plugin]`, which
/// lists the hooks the impl defines; not meant to be called by hand (a hook
/// left out of the list would be silently dead).
#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($plugin:ty, hooks: [$($hook:ident),* $(,)?], fail_closed) => {
        $crate::__export!($plugin, hooks: [$($hook),*]);
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(no_mangle)]
            extern "C" fn weir_fail_closed() -> i32 {
                1
            }
        };
    };
    ($plugin:ty, hooks: [$($hook:ident),* $(,)?]) => {
        impl $crate::__rt::Exported for $plugin {
            const HOOKS: &'static [&'static str] = &[$(stringify!($hook)),*];
        }
        // Only the wasm build exports functions: natively (unit tests) a
        // crate may hold several plugins, and nothing calls the exports.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static RUNTIME: ::core::cell::RefCell<$crate::__rt::Runtime<$plugin>> =
                    ::core::cell::RefCell::new(::core::default::Default::default());
            }
            // Host calls never re-enter the guest, so the borrow is never contended.
            fn with<R>(f: impl FnOnce(&mut $crate::__rt::Runtime<$plugin>) -> R) -> R {
                RUNTIME.with(|rt| f(&mut rt.borrow_mut()))
            }
            #[unsafe(no_mangle)]
            extern "C" fn weir_abi_version() -> i32 {
                $crate::abi::ABI_VERSION as i32
            }
            #[unsafe(no_mangle)]
            extern "C" fn weir_configure(_len: i32) -> i32 {
                with(|rt| rt.configure())
            }
            $( $crate::__export_hook!($hook, with); )*
        };
        const _: () = assert!(
            ::core::mem::size_of::<<$plugin as $crate::Plugin>::Ctx>() == 0
                || $crate::__rt::has_hook(&[$(stringify!($hook)),*], "on_end"),
            "weir_sdk: this plugin keeps per-request state (Ctx), so it must export `on_end`, where that state is freed"
        );
    };
}

/// One hook's export; the function names are the ABI's export names.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    (configure, $with:ident) => {};
    (on_request, $with:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn weir_on_request(id: i64, method: i32, attempt: i32) -> i32 {
            $with(|rt| rt.on_request(id, method, attempt))
        }
    };
    (select, $with:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn weir_select(id: i64, attempt: i32, endpoints: i32, tried: i32) -> i64 {
            $with(|rt| rt.select(id, attempt, endpoints, tried))
        }
    };
    (on_response, $with:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn weir_on_response(
            id: i64,
            attempt: i32,
            status: i32,
            error: i32,
            endpoint: i32,
            latency_us: i64,
        ) -> i64 {
            $with(|rt| rt.on_response(id, attempt, status, error, endpoint, latency_us))
        }
    };
    (on_end, $with:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn weir_on_end(id: i64, status: i32, error: i32) {
            $with(|rt| rt.on_end(id, status, error))
        }
    };
    (status, $with:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn weir_status() -> i32 {
            $with(|rt| rt.status())
        }
    };
    (snapshot, $with:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn weir_snapshot() -> i32 {
            $with(|rt| rt.snapshot())
        }
    };
    (restore, $with:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn weir_restore(_len: i32) -> i32 {
            $with(|rt| rt.restore())
        }
    };
    ($other:ident, $with:ident) => {
        ::core::compile_error!(::core::concat!(
            "weir_sdk: unknown hook `",
            ::core::stringify!($other),
            "`; expected on_request, select, on_response, on_end, status, snapshot or restore"
        ));
    };
}

/// Sends a panic's message and location to the proxy's log (error level)
/// before the panic traps, which alone says only "unreachable executed".
/// Set once per instance, at `configure`; only in the wasm build, so that a
/// native test run keeps its own panic output.
fn report_panics() {
    #[cfg(target_arch = "wasm32")]
    {
        static SET: std::sync::Once = std::sync::Once::new();
        SET.call_once(|| {
            std::panic::set_hook(alloc::boxed::Box::new(|info| {
                let message = alloc::format!("plugin panicked: {info}");
                let _ = hostcalls::log(weir_abi::LogLevel::Error, &message);
            }));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_hook_matches_exactly() {
        assert!(has_hook(&["on_request", "on_end"], "on_end"));
        assert!(!has_hook(&["on_request"], "on_end"));
        assert!(!has_hook(&["on_end_x"], "on_end"));
    }
}
