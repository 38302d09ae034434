//! Bench plugin: two trivial host calls in on_request (host call overhead).
use weir_sdk::{Plugin, Request, RequestAction};
#[derive(Default)]
struct Two {
    sum: u64,
}
#[weir_sdk::plugin]
impl Plugin for Two {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), _: &mut Request) -> RequestAction {
        self.sum = self
            .sum
            .wrapping_add(weir_sdk::host::random())
            .wrapping_add(weir_sdk::host::random());
        RequestAction::Continue
    }
}
