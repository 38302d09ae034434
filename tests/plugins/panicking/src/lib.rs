//! Panics in `on_request` when the request carries `x-panic` (a panic aborts,
//! which traps); otherwise counts requests, reported by `status` — a fresh
//! instance starts from zero.
use weir_sdk::{Plugin, Request, RequestAction};

#[derive(Default)]
struct Panicking {
    served: u64,
}

#[weir_sdk::plugin]
impl Plugin for Panicking {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        self.served += 1;
        if let Ok(Some(_)) = req.header("x-panic") {
            panic!("asked to panic");
        }
        RequestAction::Continue
    }
    fn status(&self) -> String {
        format!(r#"{{"served":{}}}"#, self.served)
    }
}
