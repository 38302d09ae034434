//! Counts `on_request` (first attempt only, via per-request state) and
//! `on_end` with its flags, and reports them via `status`; also feeds a plugin metric and a
//! shared counter.
use weir_sdk::{End, Metric, Plugin, Request, RequestAction};

#[derive(Default)]
struct Counter {
    requests: u64,
    ends: u64,
    cancelled: u64,
    timed_out: u64,
    client_errors: u64,
    completed: u64,
    metric: Option<Metric>,
}

#[derive(Default)]
struct Ctx {
    counted: bool,
}

#[weir_sdk::plugin]
impl Plugin for Counter {
    type Config = ();
    type Ctx = Ctx;

    fn configure(&mut self, _: ()) -> Result<(), String> {
        self.metric = Metric::counter("requests_total").ok();
        Ok(())
    }

    fn on_request(&mut self, ctx: &mut Ctx, _: &mut Request) -> RequestAction {
        if !ctx.counted {
            ctx.counted = true;
            self.requests += 1;
            if let Some(m) = &self.metric {
                let _ = m.record(1.0);
            }
            let _ = weir_sdk::host::counter_add("counter.requests", 1);
        }
        RequestAction::Continue
    }

    fn on_end(&mut self, ctx: Ctx, end: &End) {
        // A request ending without our on_request is a host bug the test catches.
        if ctx.counted {
            self.ends += 1;
        }
        if end.cancelled {
            self.cancelled += 1;
        }
        if end.timed_out {
            self.timed_out += 1;
        }
        if end.client_error {
            self.client_errors += 1;
        }
        if !end.cancelled && !end.timed_out && !end.client_error {
            self.completed += 1;
        }
    }

    fn status(&self) -> String {
        format!(
            r#"{{"requests":{},"ends":{},"cancelled":{},"timed_out":{},"client_errors":{},"completed":{}}}"#,
            self.requests,
            self.ends,
            self.cancelled,
            self.timed_out,
            self.client_errors,
            self.completed
        )
    }
}
