//! Retries once, after 1 ms, when the first attempt failed (error or 5xx);
//! tags the final response with the number of attempts it saw.
use std::time::Duration;

use weir_sdk::{End, Plugin, Request, Response, ResponseAction};

#[derive(Default)]
struct RetryOnce;

#[derive(Default)]
struct Ctx {
    retried: bool,
}

#[weir_sdk::plugin]
impl Plugin for RetryOnce {
    type Config = ();
    type Ctx = Ctx;
    fn on_response(&mut self, ctx: &mut Ctx, _: &Request, resp: &mut Response) -> ResponseAction {
        if resp.is_failure() && !ctx.retried {
            ctx.retried = true;
            return ResponseAction::Retry(Duration::from_millis(1));
        }
        let _ = resp.set_header("x-retried", if ctx.retried { "yes" } else { "no" });
        ResponseAction::Pass
    }
    fn on_end(&mut self, _: Ctx, _: &End) {}
}
