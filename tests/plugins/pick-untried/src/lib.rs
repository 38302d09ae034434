//! A balancer that picks the first endpoint this request has not tried.
use weir_sdk::{Endpoint, Plugin, Request};

#[derive(Default)]
struct PickUntried;

#[weir_sdk::plugin]
impl Plugin for PickUntried {
    type Config = ();
    type Ctx = ();
    fn select(&mut self, _: &mut (), _: &Request, eps: &[Endpoint], tried: &[u32]) -> Option<u32> {
        eps.iter().map(|e| e.id).find(|id| !tried.contains(id))
    }
}
