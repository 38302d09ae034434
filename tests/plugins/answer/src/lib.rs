//! Answers 403 locally when the request carries `x-deny`.
use weir_sdk::{Answer, Plugin, Request, RequestAction};

#[derive(Default)]
struct Deny;

#[weir_sdk::plugin]
impl Plugin for Deny {
    type Config = ();
    type Ctx = ();
    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        match req.header("x-deny") {
            Ok(Some(_)) => RequestAction::Answer(
                Answer::new(403)
                    .header("x-denied-by", "answer")
                    .body("denied"),
            ),
            _ => RequestAction::Continue,
        }
    }
}
