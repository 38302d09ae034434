//! Bench plugin: a realistic `on_request` — reads one request header and sets
//! another, as a tenant tagger or auth shim would.

use weir_sdk::{Plugin, Request, RequestAction};

#[derive(Default)]
struct Realistic {
    tagged: u64,
}

#[weir_sdk::plugin]
impl Plugin for Realistic {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        if let Ok(Some(user)) = req.header_bytes("x-user") {
            self.tagged += 1;
            let tenant = if user.starts_with(b"admin") {
                "ops"
            } else {
                "customers"
            };
            let _ = req.set_header("x-tenant", tenant);
        }
        RequestAction::Continue
    }
}
